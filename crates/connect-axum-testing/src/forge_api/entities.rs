//! The fake's custom entities: keys, writes and the queries of a declared index.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::kvs::{Refusal, Stored, bad, key, limit, stored_value};

pub(super) struct Index {
    pub(super) partition: Vec<String>,
    pub(super) range: String,
}

pub(super) fn entity_key(body: &Value) -> Result<(String, String), Refusal> {
    let Some(entity) = body["entityName"].as_str().filter(|e| !e.is_empty()) else {
        return Err(bad("INVALID_ENTITY_NAME", "entityName is required"));
    };
    Ok((entity.to_owned(), key(body)?))
}

pub(super) fn entity_set(
    entities: &mut BTreeMap<(String, String), Stored>,
    body: &Value,
) -> Result<Option<Value>, Refusal> {
    let at = entity_key(body)?;
    if !body["value"].is_object() {
        return Err(bad("INVALID_VALUE", "an entity value is an object"));
    }
    let exists = entities.get(&at).is_some_and(Stored::live);
    let stored = stored_value(body, exists)?;
    entities.insert(at, stored);
    Ok(None)
}

/// Orders JSON numbers and strings; anything else is unordered.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// Whether `actual` (absent: `None`) meets `condition` with `values`.
fn meets(actual: Option<&Value>, condition: &Value, values: &Value) -> Result<bool, Refusal> {
    let values = values.as_array().map(Vec::as_slice).unwrap_or_default();
    let first = || {
        values
            .first()
            .ok_or_else(|| bad("INVALID_CONDITION", "the condition needs a value"))
    };
    let ordered = |want: &[Ordering]| -> Result<bool, Refusal> {
        let v = first()?;
        Ok(actual
            .and_then(|a| compare(a, v))
            .is_some_and(|o| want.contains(&o)))
    };
    let contains = |a: &Value, v: &Value| match (a, v) {
        (Value::String(a), Value::String(v)) => a.contains(v.as_str()),
        (Value::Array(a), v) => a.contains(v),
        _ => false,
    };
    use Ordering::{Equal, Greater, Less};
    Ok(match condition.as_str().unwrap_or_default() {
        "EXISTS" => actual.is_some(),
        "NOT_EXISTS" => actual.is_none(),
        "EQUAL_TO" => actual == Some(first()?),
        "NOT_EQUAL_TO" => actual != Some(first()?),
        "BEGINS_WITH" => {
            let v = first()?;
            matches!((actual, v), (Some(Value::String(a)), Value::String(v)) if a.starts_with(v.as_str()))
        }
        "CONTAINS" => {
            let v = first()?;
            actual.is_some_and(|a| contains(a, v))
        }
        "NOT_CONTAINS" => {
            let v = first()?;
            !actual.is_some_and(|a| contains(a, v))
        }
        "GREATER_THAN" => ordered(&[Greater])?,
        "GREATER_THAN_EQUAL_TO" => ordered(&[Greater, Equal])?,
        "LESS_THAN" => ordered(&[Less])?,
        "LESS_THAN_EQUAL_TO" => ordered(&[Less, Equal])?,
        "BETWEEN" => {
            let [low, high] = values else {
                return Err(bad("INVALID_CONDITION", "BETWEEN needs two values"));
            };
            actual.is_some_and(|a| {
                compare(a, low).is_some_and(|o| o != Less)
                    && compare(a, high).is_some_and(|o| o != Greater)
            })
        }
        other => {
            return Err(bad(
                "INVALID_CONDITION",
                format!("unknown condition {other}"),
            ));
        }
    })
}

/// Entities of a declared index's partition, by its range and filters, sorted by the range
/// attribute (then key); the cursor is the offset of the next page.
pub(super) fn entity_query(
    entities: &BTreeMap<(String, String), Stored>,
    indexes: &HashMap<(String, String), Index>,
    body: &Value,
) -> Result<Option<Value>, Refusal> {
    let entity = body["entityName"].as_str().unwrap_or_default().to_owned();
    let index_name = body["indexName"].as_str().unwrap_or_default().to_owned();
    let Some(index) = indexes.get(&(entity.clone(), index_name)) else {
        return Err(bad("INDEX_NOT_DEFINED", "no such index on the entity"));
    };
    let partition = body["partition"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if partition.len() != index.partition.len() {
        return Err(bad(
            "INVALID_PARTITION",
            "the partition must give each partition attribute",
        ));
    }
    let limit = limit(body)?;
    let offset = match body.get("cursor") {
        None => 0,
        Some(cursor) => match cursor
            .as_str()
            .and_then(|c| c.strip_prefix("offset:"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return Err(bad("INVALID_CURSOR", "not a cursor of this store")),
        },
    };
    let filters: Vec<&Value>;
    let any = match &body.get("filters") {
        None => {
            filters = Vec::new();
            false
        }
        Some(f) => match (f["and"].as_array(), f["or"].as_array()) {
            (Some(and), None) => {
                filters = and.iter().collect();
                false
            }
            (None, Some(or)) => {
                filters = or.iter().collect();
                true
            }
            _ => {
                return Err(bad(
                    "INVALID_FILTERS",
                    "filters are {and: […]} or {or: […]}",
                ));
            }
        },
    };
    let mut rows = Vec::new();
    for ((e, key), stored) in entities {
        if *e != entity || !stored.live() {
            continue;
        }
        let value = &stored.value;
        if !index
            .partition
            .iter()
            .zip(partition)
            .all(|(attribute, want)| value.get(attribute) == Some(want))
        {
            continue;
        }
        if let Some(range) = body.get("range")
            && !meets(
                value.get(&index.range),
                &range["condition"],
                &range["values"],
            )?
        {
            continue;
        }
        if !filters.is_empty() {
            let mut passed = Vec::new();
            for f in &filters {
                let property = f["property"].as_str().unwrap_or_default();
                passed.push(meets(value.get(property), &f["condition"], &f["values"])?);
            }
            let pass = if any {
                passed.contains(&true)
            } else {
                !passed.contains(&false)
            };
            if !pass {
                continue;
            }
        }
        rows.push((key, value));
    }
    rows.sort_by(|(ka, a), (kb, b)| {
        let by_range = match (a.get(&index.range), b.get(&index.range)) {
            (Some(a), Some(b)) => compare(a, b).unwrap_or(Ordering::Equal),
            (a, b) => a.is_some().cmp(&b.is_some()),
        };
        by_range.then_with(|| ka.cmp(kb))
    });
    match body["sort"].as_str() {
        None | Some("ASC") => {}
        Some("DESC") => rows.reverse(),
        Some(_) => return Err(bad("INVALID_SORT", "sort is ASC or DESC")),
    }
    let page: Vec<_> = rows.iter().skip(offset).take(limit).collect();
    let mut answer = json!({
        "data": page.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>(),
    });
    if offset + page.len() < rows.len() {
        answer["cursor"] = format!("offset:{}", offset + page.len()).into();
    }
    Ok(Some(answer))
}
