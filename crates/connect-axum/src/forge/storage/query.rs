//! Queries of custom entities by index: conditions, filters, sort and paging.

use serde::Serialize;
use serde_json::Value;

/// A condition of an entity query's range or filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Condition {
    /// `BEGINS_WITH`: the attribute starts with the one value.
    BeginsWith,
    /// `BETWEEN`: the attribute lies between the two values.
    Between,
    /// `EQUAL_TO`: the attribute is the one value.
    EqualTo,
    /// `NOT_EQUAL_TO`: the attribute is not the one value.
    NotEqualTo,
    /// `GREATER_THAN`: the attribute is above the one value.
    GreaterThan,
    /// `GREATER_THAN_EQUAL_TO`: the attribute is the one value or above.
    GreaterThanEqualTo,
    /// `LESS_THAN`: the attribute is below the one value.
    LessThan,
    /// `LESS_THAN_EQUAL_TO`: the attribute is the one value or below.
    LessThanEqualTo,
    /// `CONTAINS`: the attribute (a string or list) contains the one value.
    Contains,
    /// `NOT_CONTAINS`: the attribute (a string or list) does not contain the one value.
    NotContains,
    /// `EXISTS`: the entity has the attribute; no values.
    Exists,
    /// `NOT_EXISTS`: the entity lacks the attribute; no values.
    NotExists,
}

/// The order of an entity query's results, by the index's range attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Sort {
    /// `ASC`: lowest range value first.
    Asc,
    /// `DESC`: highest range value first.
    Desc,
}

/// A filter on one attribute of an entity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Filter {
    /// The entity attribute tested, as named in the manifest.
    pub property: String,
    /// How the attribute is compared with `values`.
    pub condition: Condition,
    /// The operands: none for `EXISTS`/`NOT_EXISTS`, two for `BETWEEN`, else one.
    pub values: Vec<Value>,
}

impl Filter {
    /// `property` meets `condition` with `values` (none for `EXISTS`, two for `BETWEEN`).
    pub fn new(property: &str, condition: Condition, values: Vec<Value>) -> Self {
        Self {
            property: property.to_owned(),
            condition,
            values,
        }
    }
}

/// Filters an entity query's results must pass: all of them, or any.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filters {
    /// `{"and": [...]}`: every filter must pass.
    And(Vec<Filter>),
    /// `{"or": [...]}`: at least one filter must pass.
    Or(Vec<Filter>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Range {
    condition: Condition,
    values: Vec<Value>,
}

/// A query of a custom entity by one of its manifest indexes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityQuery {
    index_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partition: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<Range>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filters: Option<Filters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sort: Option<Sort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) limit: Option<u32>,
}

impl EntityQuery {
    /// A query of the index `index_name`, over all its partitions, in Forge's order.
    pub fn index(index_name: &str) -> Self {
        Self {
            index_name: index_name.to_owned(),
            partition: Vec::new(),
            range: None,
            filters: None,
            sort: None,
            cursor: None,
            limit: None,
        }
    }

    /// Only the partition with these values of the index's partition attributes.
    pub fn partition(mut self, values: Vec<Value>) -> Self {
        self.partition = values;
        self
    }

    /// Only entities whose range attribute meets `condition` with `values`.
    pub fn range(mut self, condition: Condition, values: Vec<Value>) -> Self {
        self.range = Some(Range { condition, values });
        self
    }

    /// Only entities that pass `filters`.
    pub fn filters(mut self, filters: Filters) -> Self {
        self.filters = Some(filters);
        self
    }

    /// Results in `sort` order of the range attribute.
    pub fn sort(mut self, sort: Sort) -> Self {
        self.sort = Some(sort);
        self
    }

    /// The page after the one that returned `cursor`.
    pub fn cursor(mut self, cursor: &str) -> Self {
        self.cursor = Some(cursor.to_owned());
        self
    }

    /// At most `limit` results (`1..=100`).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}
