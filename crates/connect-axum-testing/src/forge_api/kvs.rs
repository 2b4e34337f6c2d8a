//! The fake's key-value store and secrets: what it keeps per key, and each operation on it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

/// The code the fake answers a `set` with `keyPolicy: FAIL_IF_EXISTS` on an existing key (with
/// 409): Atlassian documents none.
pub const KEY_EXISTS_CODE: &str = "KEY_ALREADY_EXISTS";

/// The entries of a query page when the query names no `limit`.
pub const DEFAULT_QUERY_LIMIT: usize = 10;

#[derive(Clone)]
pub(super) struct Stored {
    pub(super) value: Value,
    pub(super) expires: Option<Instant>,
}

impl Stored {
    pub(super) fn live(&self) -> bool {
        self.expires.is_none_or(|at| at > Instant::now())
    }
}

/// Why the fake refuses an operation: status, code, message.
pub(super) type Refusal = (StatusCode, String, String);

pub(super) fn bad(code: &str, message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, code.to_owned(), message.into())
}

/// `body.key`, checked as Forge checks keys.
pub(super) fn key(body: &Value) -> Result<String, Refusal> {
    let Some(key) = body["key"].as_str() else {
        return Err(bad("INVALID_KEY", "key is required"));
    };
    let chars = key.chars().count();
    if chars == 0 {
        return Err(bad("KEY_TOO_SHORT", "the key is empty"));
    }
    if chars > 500 {
        return Err(bad("KEY_TOO_LONG", "the key is over 500 characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":._-#".contains(c) || c.is_whitespace();
    if !key.chars().all(allowed) || key.chars().all(char::is_whitespace) {
        return Err(bad("INVALID_KEY", "the key has characters Forge refuses"));
    }
    Ok(key.to_owned())
}

/// `{key, value}` of a live key.
pub(super) fn get(
    store: &BTreeMap<String, Stored>,
    body: &Value,
) -> Option<Result<Option<Value>, Refusal>> {
    let key = match key(body) {
        Ok(key) => key,
        Err(refusal) => return Some(Err(refusal)),
    };
    let stored = store.get(&key).filter(|s| s.live())?;
    Some(Ok(Some(json!({ "key": key, "value": stored.value }))))
}

/// `body.options` as stored: the expiry of its `ttl`, after checking its `keyPolicy`.
pub(super) fn stored_value(body: &Value, exists: bool) -> Result<Stored, Refusal> {
    let Some(value) = body.get("value").filter(|v| !v.is_null()) else {
        return Err(bad("INVALID_VALUE", "value is required"));
    };
    let options = &body["options"];
    match options["keyPolicy"].as_str() {
        None | Some("OVERRIDE") => {}
        Some("FAIL_IF_EXISTS") if exists => {
            return Err((
                StatusCode::CONFLICT,
                KEY_EXISTS_CODE.to_owned(),
                "the key exists".to_owned(),
            ));
        }
        Some("FAIL_IF_EXISTS") => {}
        Some(_) => return Err(bad("INVALID_KEY_POLICY", "unknown keyPolicy")),
    }
    let expires = match options.get("ttl") {
        None => None,
        Some(ttl) => {
            let unit = match ttl["unit"].as_str() {
                Some("SECONDS") => 1,
                Some("MINUTES") => 60,
                Some("HOURS") => 3600,
                Some("DAYS") => 86_400,
                _ => return Err(bad("INVALID_TTL", "unknown ttl unit")),
            };
            let Some(n) = ttl["value"].as_u64().filter(|n| *n > 0) else {
                return Err(bad("INVALID_TTL", "ttl value must be a positive integer"));
            };
            Some(Instant::now() + Duration::from_secs(n * unit))
        }
    };
    Ok(Stored {
        value: value.clone(),
        expires,
    })
}

pub(super) fn set(
    store: &mut BTreeMap<String, Stored>,
    body: &Value,
) -> Result<Option<Value>, Refusal> {
    let key = key(body)?;
    let exists = store.get(&key).is_some_and(Stored::live);
    let stored = stored_value(body, exists)?;
    store.insert(key, stored);
    Ok(None)
}

pub(super) fn delete(
    store: &mut BTreeMap<String, Stored>,
    body: &Value,
) -> Result<Option<Value>, Refusal> {
    store.remove(&key(body)?);
    Ok(None)
}

/// The `limit` of a query, 1 to 100.
pub(super) fn limit(body: &Value) -> Result<usize, Refusal> {
    match body.get("limit") {
        None => Ok(DEFAULT_QUERY_LIMIT),
        Some(limit) => match limit.as_u64() {
            Some(n @ 1..=100) => Ok(n as usize),
            _ => Err(bad(
                "LIST_QUERY_LIMIT_EXCEEDED",
                "limit must be between 1 and 100",
            )),
        },
    }
}

/// A page of keys in order, by `BEGINS_WITH` on the key; the cursor is the last key returned.
pub(super) fn query(
    store: &BTreeMap<String, Stored>,
    body: &Value,
) -> Result<Option<Value>, Refusal> {
    let prefix = match body.get("where") {
        None => "",
        Some(Value::Array(conditions)) => match conditions.as_slice() {
            [c] if c["property"] == "key" && c["condition"] == "BEGINS_WITH" => {
                match c["values"].as_array().map(Vec::as_slice) {
                    Some([Value::String(prefix)]) => prefix.as_str(),
                    _ => return Err(bad("QUERY_WHERE_INVALID", "one prefix is required")),
                }
            }
            _ => return Err(bad("QUERY_WHERE_INVALID", "one BEGINS_WITH on key only")),
        },
        Some(_) => return Err(bad("QUERY_WHERE_INVALID", "where must be a list")),
    };
    let limit = limit(body)?;
    let after = match body.get("after") {
        None => None,
        Some(cursor) => match cursor.as_str().and_then(|c| c.strip_prefix("after:")) {
            Some(key) => Some(key.to_owned()),
            None => return Err(bad("INVALID_CURSOR", "not a cursor of this store")),
        },
    };
    let mut matching = store
        .iter()
        .filter(|(k, s)| k.starts_with(prefix) && s.live())
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k.as_str() > a.as_str()));
    let page: Vec<_> = matching.by_ref().take(limit).collect();
    let more = matching.next().is_some();
    let mut answer = json!({
        "data": page.iter().map(|(k, s)| json!({ "key": k, "value": s.value })).collect::<Vec<_>>(),
    });
    if let (true, Some((last, _))) = (more, page.last()) {
        answer["cursor"] = format!("after:{last}").into();
    }
    Ok(Some(answer))
}
