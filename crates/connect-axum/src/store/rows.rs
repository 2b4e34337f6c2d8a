//! Rows of either backend read into an app's types through serde: a struct by its fields' names
//! (the columns'), a tuple by position, a single column as itself.

use std::fmt;

use super::StoreError;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Column as _, Row as _, TypeInfo as _, ValueRef as _};
use tokio_postgres::types::Type;

/// One value of a row, as the types both backends store.
enum Cell<'r> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'r str),
    Text(String),
    Bytes(&'r [u8]),
    Json(serde_json::Value),
}

/// A row's columns, by position.
trait Cells {
    fn len(&self) -> usize;
    fn name(&self, i: usize) -> &str;
    fn cell(&self, i: usize) -> Result<Cell<'_>, RowError>;
}

impl Cells for tokio_postgres::Row {
    fn len(&self) -> usize {
        tokio_postgres::Row::len(self)
    }

    fn name(&self, i: usize) -> &str {
        self.columns()[i].name()
    }

    fn cell(&self, i: usize) -> Result<Cell<'_>, RowError> {
        fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
            row: &'r tokio_postgres::Row,
            i: usize,
            cell: impl FnOnce(T) -> Cell<'r>,
        ) -> Result<Cell<'r>, RowError> {
            row.try_get::<_, Option<T>>(i)
                .map(|v| v.map_or(Cell::Null, cell))
                .map_err(|e| RowError(e.to_string()))
        }
        let ty = self.columns()[i].type_();
        match *ty {
            Type::BOOL => get(self, i, Cell::Bool),
            Type::INT2 => get(self, i, |v: i16| Cell::Int(v.into())),
            Type::INT4 => get(self, i, |v: i32| Cell::Int(v.into())),
            Type::INT8 => get(self, i, Cell::Int),
            Type::OID => get(self, i, |v: u32| Cell::Int(v.into())),
            Type::FLOAT4 => get(self, i, |v: f32| Cell::Float(v.into())),
            Type::FLOAT8 => get(self, i, Cell::Float),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                get(self, i, Cell::Str)
            }
            Type::BYTEA => get(self, i, Cell::Bytes),
            Type::TIMESTAMPTZ => get(self, i, |v: DateTime<Utc>| {
                Cell::Text(v.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }),
            Type::TIMESTAMP => get(self, i, |v: NaiveDateTime| {
                Cell::Text(v.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
            }),
            Type::DATE => get(self, i, |v: NaiveDate| Cell::Text(v.to_string())),
            Type::JSON | Type::JSONB => get(self, i, Cell::Json),
            _ => Err(RowError(format!(
                "column {} is of type {ty}, which rows do not read (cast it in the SQL)",
                self.name(i)
            ))),
        }
    }
}

impl Cells for SqliteRow {
    fn len(&self) -> usize {
        sqlx::Row::len(self)
    }

    fn name(&self, i: usize) -> &str {
        self.columns()[i].name()
    }

    fn cell(&self, i: usize) -> Result<Cell<'_>, RowError> {
        let raw = self.try_get_raw(i).map_err(|e| RowError(e.to_string()))?;
        if raw.is_null() {
            return Ok(Cell::Null);
        }
        let storage = raw.type_info().name().to_owned();
        let value = match storage.as_str() {
            "INTEGER" => self.try_get(i).map(Cell::Int),
            "REAL" => self.try_get(i).map(Cell::Float),
            "BLOB" => self.try_get(i).map(Cell::Bytes),
            _ => self.try_get(i).map(Cell::Str),
        };
        value.map_err(|e| RowError(e.to_string()))
    }
}

/// Reads a Postgres row into `R`.
pub(super) fn from_postgres<R: DeserializeOwned>(
    row: &tokio_postgres::Row,
) -> Result<R, StoreError> {
    R::deserialize(RowDeserializer { row }).map_err(|e| StoreError::Decode(Box::new(e)))
}

/// Reads a SQLite row into `R`.
pub(super) fn from_sqlite<R: DeserializeOwned>(row: &SqliteRow) -> Result<R, StoreError> {
    R::deserialize(RowDeserializer { row }).map_err(|e| StoreError::Decode(Box::new(e)))
}

/// Why a row did not read into the asked type.
#[derive(Debug)]
pub(super) struct RowError(String);

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RowError {}

impl de::Error for RowError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        RowError(msg.to_string())
    }
}

struct RowDeserializer<'r, C> {
    row: &'r C,
}

impl<'de, C: Cells> Deserializer<'de> for RowDeserializer<'_, C> {
    type Error = RowError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        if self.row.len() == 1 {
            return CellDeserializer(self.row.cell(0)?).deserialize_any(visitor);
        }
        self.deserialize_map(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        if self.row.len() == 1 {
            return CellDeserializer(self.row.cell(0)?).deserialize_option(visitor);
        }
        visitor.visit_some(self)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_map(Columns {
            row: self.row,
            next: 0,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RowError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_seq(Columns {
            row: self.row,
            next: 0,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct enum identifier ignored_any
    }
}

/// A row's columns, read in order: as a map (name, value) or as a sequence of values.
struct Columns<'r, C> {
    row: &'r C,
    next: usize,
}

impl<'de, C: Cells> MapAccess<'de> for Columns<'_, C> {
    type Error = RowError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, RowError> {
        if self.next >= self.row.len() {
            return Ok(None);
        }
        let name: &str = self.row.name(self.next);
        seed.deserialize(name.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, RowError> {
        let cell = self.row.cell(self.next)?;
        self.next += 1;
        seed.deserialize(CellDeserializer(cell))
    }
}

impl<'de, C: Cells> SeqAccess<'de> for Columns<'_, C> {
    type Error = RowError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, RowError> {
        if self.next >= self.row.len() {
            return Ok(None);
        }
        let cell = self.row.cell(self.next)?;
        self.next += 1;
        seed.deserialize(CellDeserializer(cell)).map(Some)
    }
}

struct CellDeserializer<'r>(Cell<'r>);

impl<'de> Deserializer<'de> for CellDeserializer<'_> {
    type Error = RowError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.0 {
            Cell::Null => visitor.visit_none(),
            Cell::Bool(v) => visitor.visit_bool(v),
            Cell::Int(v) => visitor.visit_i64(v),
            Cell::Float(v) => visitor.visit_f64(v),
            Cell::Str(v) => visitor.visit_str(v),
            Cell::Text(v) => visitor.visit_string(v),
            Cell::Bytes(v) => visitor.visit_bytes(v),
            Cell::Json(v) => v.deserialize_any(visitor).map_err(de::Error::custom),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.0 {
            Cell::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    /// SQLite keeps booleans as integers.
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.0 {
            Cell::Int(v) => visitor.visit_bool(v != 0),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RowError> {
        match self.0 {
            Cell::Str(v) => visitor.visit_enum(v.into_deserializer()),
            Cell::Text(v) => visitor.visit_enum(v.into_deserializer()),
            Cell::Json(v) => v
                .deserialize_enum(name, variants, visitor)
                .map_err(de::Error::custom),
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}
