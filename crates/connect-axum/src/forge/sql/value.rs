//! The values bound to a statement's `?` placeholders, as Forge SQL reads them in the request's
//! JSON `params`.

use serde::{Serialize, Serializer};

/// One value bound to a `?` placeholder.
///
/// There is no binary variant: Forge does not say how a binary parameter is encoded in JSON. Bind
/// binary data as hex text and convert it in SQL (`UNHEX(?)`).
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// `NULL`.
    Null,
    /// A boolean, `TRUE` or `FALSE`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A floating-point number; a non-finite one is sent as `NULL`, as JSON has none.
    Float(f64),
    /// Text; also the form for DECIMAL, dates and times (`"2026-01-31 12:00:00"`).
    Text(String),
}

impl Serialize for SqlValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SqlValue::Null => serializer.serialize_none(),
            SqlValue::Bool(b) => serializer.serialize_bool(*b),
            SqlValue::Int(n) => serializer.serialize_i64(*n),
            SqlValue::UInt(n) => serializer.serialize_u64(*n),
            SqlValue::Float(x) if x.is_finite() => serializer.serialize_f64(*x),
            SqlValue::Float(_) => serializer.serialize_none(),
            SqlValue::Text(s) => serializer.serialize_str(s),
        }
    }
}

macro_rules! from_as {
    ($variant:ident($inner:ty): $($t:ty),*) => {
        $(impl From<$t> for SqlValue {
            fn from(v: $t) -> Self {
                SqlValue::$variant(<$inner>::from(v))
            }
        })*
    };
}

from_as!(Int(i64): i8, i16, i32, i64);
from_as!(UInt(u64): u8, u16, u32, u64);
from_as!(Float(f64): f32, f64);
from_as!(Text(String): String, &str, &String, Box<str>);

impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        SqlValue::Bool(v)
    }
}

impl From<usize> for SqlValue {
    fn from(v: usize) -> Self {
        SqlValue::UInt(v as u64)
    }
}

impl From<isize> for SqlValue {
    fn from(v: isize) -> Self {
        SqlValue::Int(v as i64)
    }
}

impl From<chrono::NaiveDate> for SqlValue {
    /// `YYYY-MM-DD`, as a DATE column reads it.
    fn from(v: chrono::NaiveDate) -> Self {
        SqlValue::Text(v.format("%Y-%m-%d").to_string())
    }
}

impl From<chrono::NaiveDateTime> for SqlValue {
    /// `YYYY-MM-DD HH:MM:SS[.ffffff]`, as a DATETIME column reads it.
    fn from(v: chrono::NaiveDateTime) -> Self {
        SqlValue::Text(v.format("%Y-%m-%d %H:%M:%S%.f").to_string())
    }
}

impl From<chrono::DateTime<chrono::Utc>> for SqlValue {
    /// The UTC date and time, as [`NaiveDateTime`](chrono::NaiveDateTime) writes it.
    fn from(v: chrono::DateTime<chrono::Utc>) -> Self {
        v.naive_utc().into()
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

impl<T: Into<SqlValue> + Clone> From<&Option<T>> for SqlValue {
    fn from(v: &Option<T>) -> Self {
        v.clone().into()
    }
}

/// The parameters of a statement, each turned into a [`SqlValue`]:
/// `sql_params![note.id, "text", None::<i64>]`.
///
/// ```
/// use connect_axum::forge::sql::{SqlValue, sql_params};
///
/// let params = sql_params![7_i64, "hello", None::<String>, true];
/// assert_eq!(params[1], SqlValue::Text("hello".into()));
/// assert_eq!(params[2], SqlValue::Null);
/// ```
#[macro_export]
macro_rules! sql_params {
    () => { ::std::vec::Vec::<$crate::forge::sql::SqlValue>::new() };
    ($($value:expr),+ $(,)?) => {
        ::std::vec![$($crate::forge::sql::SqlValue::from($value)),+]
    };
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn values_serialize_as_the_params_json_forge_reads() {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 1, 31).unwrap();
        let params = crate::sql_params![
            1_i32,
            u64::MAX,
            -2_i64,
            1.5_f64,
            f64::NAN,
            "a'b",
            String::from("c"),
            None::<i64>,
            Some(3_u8),
            false,
            date,
            date.and_hms_opt(12, 0, 5).unwrap(),
        ];
        assert_eq!(
            serde_json::to_value(&params).unwrap(),
            json!([
                1,
                u64::MAX,
                -2,
                1.5,
                null,
                "a'b",
                "c",
                null,
                3,
                false,
                "2026-01-31",
                "2026-01-31 12:00:05"
            ])
        );
        assert!(crate::sql_params![].is_empty());
    }
}
