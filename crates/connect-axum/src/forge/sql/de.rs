//! `deserialize_with` helpers for the columns Forge SQL answers as JSON strings: `BIGINT` (signed
//! or not, `COUNT(*)` and `SUM` of integers too), `DECIMAL`, and `DATE`, `DATETIME`, `TIMESTAMP`
//! and `TIME`, each as text (`"42"`, `"12.50"`, `"2026-01-31 12:00:05"`). The smaller integer
//! types (`INT`, `SMALLINT`, `TINYINT`, booleans) arrive as JSON numbers, and `VARCHAR`/`TEXT` as
//! strings. Each helper takes the number as well as the string, so a column's type may change.
//!
//! ```
//! use connect_axum::forge::sql::de;
//!
//! #[derive(serde::Deserialize)]
//! struct Note {
//!     #[serde(deserialize_with = "de::int")]
//!     id: i64,
//!     #[serde(deserialize_with = "de::opt_int")]
//!     parent: Option<i64>,
//!     #[serde(deserialize_with = "de::datetime")]
//!     created_at: chrono::NaiveDateTime,
//! }
//! let note: Note = serde_json::from_str(
//!     r#"{"id": "9007199254740993", "parent": null, "created_at": "2026-01-31 12:00:05"}"#,
//! ).unwrap();
//! assert_eq!(note.id, 9_007_199_254_740_993);
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};

/// An integer from a JSON number or a string of one.
struct Integer<T>(PhantomData<T>);

impl<'de, T> Visitor<'de> for Integer<T>
where
    T: TryFrom<i64> + TryFrom<u64> + FromStr,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer, or a string of one")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.trim()
            .parse()
            .map_err(|_| E::custom(format!("{v:?} is not an integer in range")))
    }
}

/// An `i64` from a JSON number or string (a `BIGINT` column).
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(Integer(PhantomData))
}

/// A `u64` from a JSON number or string (a `BIGINT UNSIGNED` column).
pub fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Integer(PhantomData))
}

/// An optional `i64`: `null` is `None` (a nullable `BIGINT` column).
pub fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    optional(d, int)
}

/// An optional `u64`: `null` is `None` (a nullable `BIGINT UNSIGNED` column).
pub fn opt_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    optional(d, uint)
}

/// A `DECIMAL` as its exact text (`"12.50"`), from a string or a JSON number; parse it with a
/// decimal type of the app's choosing, never through `f64` for money.
pub fn decimal_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a decimal number, or a string of one")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
            let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
            let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
            if !(whole.is_empty() && fraction.is_empty())
                && all_digits(whole)
                && all_digits(fraction)
            {
                Ok(v.to_owned())
            } else {
                Err(E::custom(format!("{v:?} is not a decimal number")))
            }
        }
    }
    d.deserialize_any(Text)
}

/// A `DATETIME` or `TIMESTAMP` (`"2026-01-31 12:00:05"`, with or without a fraction of a second;
/// an ISO `T` between date and time is read too).
pub fn datetime<'de, D: Deserializer<'de>>(d: D) -> Result<chrono::NaiveDateTime, D::Error> {
    let text: std::borrow::Cow<'de, str> = de::Deserialize::deserialize(d)?;
    let text = text.trim_end_matches('Z');
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .ok_or_else(|| de::Error::custom(format!("{text:?} is not a date and time")))
}

/// An optional [`datetime`]: `null` is `None`.
pub fn opt_datetime<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<chrono::NaiveDateTime>, D::Error> {
    optional(d, datetime)
}

/// A `DATE` (`"2026-01-31"`).
pub fn date<'de, D: Deserializer<'de>>(d: D) -> Result<chrono::NaiveDate, D::Error> {
    let text: std::borrow::Cow<'de, str> = de::Deserialize::deserialize(d)?;
    chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map_err(|_| de::Error::custom(format!("{text:?} is not a date")))
}

/// A `null` as `None`, anything else through `inner`.
fn optional<'de, D, T>(
    d: D,
    inner: fn(serde_json::Value) -> Result<T, serde_json::Error>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    match <Option<serde_json::Value> as de::Deserialize>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => inner(value).map(Some).map_err(de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Row {
        #[serde(deserialize_with = "int")]
        a: i64,
        #[serde(deserialize_with = "uint")]
        b: u64,
        #[serde(default, deserialize_with = "opt_int")]
        c: Option<i64>,
        #[serde(deserialize_with = "decimal_string")]
        d: String,
        #[serde(deserialize_with = "datetime")]
        e: chrono::NaiveDateTime,
        #[serde(deserialize_with = "date")]
        f: chrono::NaiveDate,
    }

    fn row(value: serde_json::Value) -> Result<Row, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn strings_and_numbers_are_both_read() {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 1, 31).unwrap();
        let expected = Row {
            a: -9_007_199_254_740_993,
            b: u64::MAX,
            c: Some(4),
            d: "12.50".into(),
            e: date.and_hms_micro_opt(12, 0, 5, 250_000).unwrap(),
            f: date,
        };
        let as_strings = json!({
            "a": "-9007199254740993", "b": "18446744073709551615", "c": "4", "d": "12.50",
            "e": "2026-01-31 12:00:05.25", "f": "2026-01-31",
        });
        assert_eq!(row(as_strings).unwrap(), expected);
        let as_numbers = json!({
            "a": -9_007_199_254_740_993_i64, "b": u64::MAX, "c": 4, "d": "12.50",
            "e": "2026-01-31T12:00:05.25Z", "f": "2026-01-31",
        });
        assert_eq!(row(as_numbers).unwrap(), expected);
        let nulls = json!({ "a": 1, "b": 2, "c": null, "d": 3, "e": "2026-01-31 00:00:00", "f": "2026-01-31" });
        let read = row(nulls).unwrap();
        assert_eq!((read.c, read.d.as_str()), (None, "3"));
    }

    #[test]
    fn values_out_of_range_or_not_numbers_are_refused() {
        let base = |a: serde_json::Value, b: serde_json::Value, d: &str| json!({ "a": a, "b": b, "d": d, "e": "2026-01-31 00:00:00", "f": "2026-01-31" });
        assert!(row(base(json!("x"), json!(1), "1")).is_err());
        assert!(row(base(json!("9223372036854775808"), json!(1), "1")).is_err());
        assert!(row(base(json!(1), json!(-1), "1")).is_err());
        assert!(row(base(json!(1), json!(1.5), "1")).is_err());
        assert!(row(base(json!(1), json!(1), "1e5")).is_err());
        assert!(row(base(json!(1), json!(1), ".")).is_err());
        assert!(row(base(json!(1), json!(1), "-0.5")).is_ok());
    }
}
