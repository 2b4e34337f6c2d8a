//! A typed client of Forge hosted storage: the key-value store, secrets and custom entities of
//! one installation, reached through the REST API with the app's system token from a remote, or
//! through Forge's egress proxy from a container ([`ForgeStorage::through_proxy`]).
//!
//! Every operation is `POST {api base}/forge/storage/kvs/v1/{op}` with a JSON body; keys are
//! checked here before any call, and a 429 is waited out a few times before it becomes
//! [`StorageError::RateLimited`].
//!
//! ```no_run
//! # async fn example(token: connect_axum::auth::ForgeToken) -> Result<(), connect_axum::forge::storage::StorageError> {
//! use std::time::Duration;
//! use connect_axum::forge::storage::{DEFAULT_API_BASE, ForgeStorage, SetOptions};
//!
//! let storage = ForgeStorage::new(&DEFAULT_API_BASE.parse().unwrap(), Duration::from_secs(10));
//! let kvs = storage.for_installation(&token);
//! kvs.set("settings:theme", "dark", SetOptions::default()).await?;
//! let theme: Option<String> = kvs.get("settings:theme").await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::outbound::{self, Policy, Transport};
use crate::protocol::ForgeToken;
use crate::protocol::egress::{PROXY_AUTHORIZATION_HEADER, ProxyAuthorization};

mod options;
mod query;

pub use options::{Entry, KeyPolicy, Page, SetOptions, Ttl};
pub use query::{Condition, EntityQuery, Filter, Filters, Sort};

/// Where Atlassian serves Forge hosted storage (and its other platform APIs).
pub const DEFAULT_API_BASE: &str = "https://api.atlassian.com";

/// The longest key Forge accepts, in characters.
pub const MAX_KEY_CHARS: usize = 500;

/// The most entries one query may ask for.
pub const MAX_QUERY_LIMIT: u32 = 100;

/// Three 429s are waited out, each for its `Retry-After` of at most 5 s, or 200 ms doubling
/// without one; 4 KiB of an error body is read.
const CALLS: Policy = Policy {
    retries: 3,
    longest_wait: Duration::from_secs(5),
    backoff: Some(Duration::from_millis(200)),
    error_body: 4 * 1024,
};

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The key is not one Forge accepts (checked before any call).
    #[error("invalid storage key: {0}")]
    InvalidKey(&'static str),
    /// A query's limit is outside `1..=100` (checked before any call).
    #[error("a query limit must be between 1 and {MAX_QUERY_LIMIT}, not {0}")]
    InvalidLimit(u32),
    /// Forge answered with an error status; `code` and `message` are its `{"code", "message"}`
    /// (the message is the start of the body when the body is not that JSON).
    #[error("Forge storage answered {status} {}: {message}", code.as_deref().unwrap_or("without a code"))]
    Api {
        /// The status Forge answered, not a 2xx.
        status: StatusCode,
        /// Forge's error code, `KEY_NOT_FOUND`, …; `None` when the body has none.
        code: Option<String>,
        /// Forge's error message, or the start of its body.
        message: String,
    },
    /// Forge kept answering 429 (or asked to wait longer than the client does).
    #[error("Forge storage is rate limiting; retry after {retry_after:?}")]
    RateLimited {
        /// Forge's last `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// No answer within the client's timeout.
    #[error("Forge storage did not answer in time")]
    Timeout,
    /// Forge storage could not be reached.
    #[error("Forge storage could not be reached: {0}")]
    Transport(String),
    /// A value could not be encoded, or an answer was not the JSON expected.
    #[error("a Forge storage value could not be encoded or decoded: {0}")]
    Decode(String),
    /// In a Forge Container, the call's host is not among the app's egress hosts (refused
    /// before anything was sent).
    #[error("{host} is not among the app's egress hosts")]
    EgressRefused {
        /// The host refused.
        host: String,
    },
}

impl StorageError {
    /// Whether Forge said the key does not exist (404, or 400 with a not-found code).
    fn is_not_found(&self) -> bool {
        match self {
            StorageError::Api { status, code, .. } => {
                *status == StatusCode::NOT_FOUND
                    || (*status == StatusCode::BAD_REQUEST
                        && matches!(code.as_deref(), Some("NOT_FOUND" | "KEY_NOT_FOUND")))
            }
            _ => false,
        }
    }
}

outbound::from_failure!(StorageError, |status, body| api_error(status, &body));

impl From<StorageError> for crate::error::Error {
    fn from(e: StorageError) -> Self {
        use axum::http::StatusCode as Http;
        let (status, reason) = match e {
            StorageError::InvalidKey(_) => {
                return crate::error::Error::bad_request("invalid_storage_key", e.to_string());
            }
            StorageError::InvalidLimit(_) => {
                return crate::error::Error::bad_request("invalid_limit", e.to_string());
            }
            StorageError::Timeout => (Http::GATEWAY_TIMEOUT, "storage_timeout"),
            StorageError::EgressRefused { .. } => (Http::BAD_GATEWAY, "egress_refused"),
            _ => (Http::BAD_GATEWAY, "storage_error"),
        };
        crate::error::Error::Upstream {
            status,
            reason,
            message: e.to_string(),
        }
    }
}

/// The client of Forge hosted storage; shares connections across calls and installations.
#[derive(Clone)]
pub struct ForgeStorage {
    transport: Transport,
    endpoint: Arc<str>,
}

impl ForgeStorage {
    /// A client of the storage API under `api_base` (normally [`DEFAULT_API_BASE`]), with a
    /// `timeout` on every call.
    pub fn new(api_base: &Url, timeout: Duration) -> Self {
        Self::with_transport(Transport::new(timeout), api_base)
    }

    /// [`new`](Self::new) with calls that leave through `transport`.
    pub(crate) fn with_transport(transport: Transport, api_base: &Url) -> Self {
        Self {
            transport,
            endpoint: format!(
                "{}/forge/storage/kvs/v1",
                api_base.as_str().trim_end_matches('/')
            )
            .into(),
        }
    }

    /// The storage of the installation whose system token is `token`: Forge keeps data per
    /// installation and tells them apart by the token alone.
    pub fn for_installation<'a>(&'a self, token: &'a ForgeToken) -> Storage<'a> {
        Storage {
            client: self,
            credential: Credential::Token(token),
        }
    }

    /// The storage of the installation `authorization` names (its invocation's, or one named
    /// outside any invocation), in a Forge Container: calls go through Forge's egress proxy, the
    /// client's API base.
    pub fn through_proxy<'a>(&'a self, authorization: &'a ProxyAuthorization) -> Storage<'a> {
        Storage {
            client: self,
            credential: Credential::Proxy(authorization),
        }
    }
}

/// The storage of one installation.
#[derive(Clone, Copy)]
pub struct Storage<'a> {
    client: &'a ForgeStorage,
    credential: Credential<'a>,
}

/// What tells Forge whose storage a call reaches.
#[derive(Clone, Copy)]
enum Credential<'a> {
    /// The installation's system token, from a remote.
    Token(&'a ForgeToken),
    /// The egress proxy's header, from a container.
    Proxy(&'a ProxyAuthorization),
}

#[derive(Serialize)]
struct KeyBody<'a> {
    key: &'a str,
}

#[derive(Serialize)]
struct SetBody<'a, T: ?Sized> {
    key: &'a str,
    value: &'a T,
    #[serde(skip_serializing_if = "SetOptions::is_empty")]
    options: SetOptions,
}

#[derive(Serialize)]
struct EntityKeyBody<'a> {
    #[serde(rename = "entityName")]
    entity_name: &'a str,
    key: &'a str,
}

#[derive(Serialize)]
struct EntitySetBody<'a, T: ?Sized> {
    #[serde(rename = "entityName")]
    entity_name: &'a str,
    key: &'a str,
    value: &'a T,
    #[serde(skip_serializing_if = "SetOptions::is_empty")]
    options: SetOptions,
}

#[derive(Deserialize)]
struct Got<T> {
    value: T,
}

impl Storage<'_> {
    /// The value under `key`, `None` when there is none.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        check_key(key)?;
        self.get_at("get", &KeyBody { key }).await
    }

    /// Stores `value` under `key`.
    ///
    /// # Errors
    /// With [`SetOptions::if_absent`], an existing key is a [`StorageError::Api`].
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: SetOptions,
    ) -> Result<(), StorageError> {
        check_key(key)?;
        self.set_at("set", key, value, options).await
    }

    /// Deletes `key`; deleting a key that does not exist succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        self.delete_at("delete", &KeyBody { key }).await
    }

    /// Up to `limit` (`1..=100`) entries whose keys begin with `prefix` (every entry when it is
    /// empty), after the page that returned the cursor `after`. Secrets are never listed.
    pub async fn query<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<T>, StorageError> {
        #[derive(Serialize)]
        struct Where<'a> {
            property: &'static str,
            condition: Condition,
            values: [&'a str; 1],
        }
        #[derive(Serialize)]
        struct QueryBody<'a> {
            #[serde(rename = "where", skip_serializing_if = "Vec::is_empty")]
            conditions: Vec<Where<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            after: Option<&'a str>,
            limit: u32,
        }
        check_limit(limit)?;
        let conditions = if prefix.is_empty() {
            Vec::new()
        } else {
            check_chars(prefix)?;
            vec![Where {
                property: "key",
                condition: Condition::BeginsWith,
                values: [prefix],
            }]
        };
        let body = QueryBody {
            conditions,
            after,
            limit,
        };
        Ok(outbound::json(self.call("query", &body).await?).await?)
    }

    /// The secret under `key`, `None` when there is none.
    pub async fn get_secret<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        check_key(key)?;
        self.get_at("secret/get", &KeyBody { key }).await
    }

    /// Stores `value` encrypted under `key`, apart from the plain values.
    pub async fn set_secret<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: SetOptions,
    ) -> Result<(), StorageError> {
        check_key(key)?;
        self.set_at("secret/set", key, value, options).await
    }

    /// Deletes the secret `key`; deleting one that does not exist succeeds.
    pub async fn delete_secret(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        self.delete_at("secret/delete", &KeyBody { key }).await
    }

    /// The custom entity `name` (as declared in the manifest).
    pub fn entity<'b>(&'b self, name: &'b str) -> Entity<'b> {
        Entity {
            storage: self,
            name,
        }
    }

    async fn set_at<T: Serialize + ?Sized>(
        &self,
        op: &str,
        key: &str,
        value: &T,
        options: SetOptions,
    ) -> Result<(), StorageError> {
        let body = SetBody {
            key,
            value,
            options,
        };
        self.call(op, &body).await.map(drop)
    }

    async fn get_at<T: DeserializeOwned>(
        &self,
        op: &str,
        body: &impl Serialize,
    ) -> Result<Option<T>, StorageError> {
        match self.call(op, body).await {
            Ok(response) => Ok(Some(outbound::json::<Got<T>>(response).await?.value)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete_at(&self, op: &str, body: &impl Serialize) -> Result<(), StorageError> {
        match self.call(op, body).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `POST {endpoint}/{op}` with `body`, waiting out a few 429s; the successful response.
    async fn call(
        &self,
        op: &str,
        body: &impl Serialize,
    ) -> Result<reqwest::Response, StorageError> {
        let body = serde_json::to_vec(body).map_err(|e| StorageError::Decode(e.to_string()))?;
        let url = format!("{}/{op}", self.client.endpoint);
        let (name, value) = match self.credential {
            Credential::Token(token) => {
                (AUTHORIZATION.as_str(), format!("Bearer {}", token.expose()))
            }
            Credential::Proxy(authorization) => {
                (PROXY_AUTHORIZATION_HEADER, authorization.to_string())
            }
        };
        let request = |http: &reqwest::Client| {
            http.post(&url)
                .header(name, &value)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        };
        Ok(self.client.transport.send(&CALLS, request).await?)
    }
}

/// A custom entity of one installation's storage.
#[derive(Clone, Copy)]
pub struct Entity<'a> {
    storage: &'a Storage<'a>,
    name: &'a str,
}

impl Entity<'_> {
    /// The entity under `key`, `None` when there is none.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        check_key(key)?;
        let body = EntityKeyBody {
            entity_name: self.name,
            key,
        };
        self.storage.get_at("entity/get", &body).await
    }

    /// Stores `value`, whose attributes the manifest declares, under `key`.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: SetOptions,
    ) -> Result<(), StorageError> {
        check_key(key)?;
        let body = EntitySetBody {
            entity_name: self.name,
            key,
            value,
            options,
        };
        self.storage.call("entity/set", &body).await.map(drop)
    }

    /// Deletes the entity under `key`; deleting one that does not exist succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        let body = EntityKeyBody {
            entity_name: self.name,
            key,
        };
        self.storage.delete_at("entity/delete", &body).await
    }

    /// One page of the entities `query` selects.
    pub async fn query<T: DeserializeOwned>(
        &self,
        query: &EntityQuery,
    ) -> Result<Page<T>, StorageError> {
        #[derive(Serialize)]
        struct QueryBody<'a> {
            #[serde(rename = "entityName")]
            entity_name: &'a str,
            #[serde(flatten)]
            query: &'a EntityQuery,
        }
        if let Some(limit) = query.limit {
            check_limit(limit)?;
        }
        let body = QueryBody {
            entity_name: self.name,
            query,
        };
        Ok(outbound::json(self.storage.call("entity/query", &body).await?).await?)
    }
}

/// A key as Forge accepts it: 1 to 500 characters of `^(?!\s+$)[a-zA-Z0-9:._\s-#]+$`.
fn check_key(key: &str) -> Result<(), StorageError> {
    if key.is_empty() {
        return Err(StorageError::InvalidKey("a key cannot be empty"));
    }
    check_chars(key)?;
    if key.chars().all(is_js_whitespace) {
        return Err(StorageError::InvalidKey("a key cannot be only whitespace"));
    }
    Ok(())
}

fn check_chars(key: &str) -> Result<(), StorageError> {
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(StorageError::InvalidKey("a key is at most 500 characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ":._-#".contains(c) || is_js_whitespace(c);
    if !key.chars().all(allowed) {
        return Err(StorageError::InvalidKey(
            "a key has only letters, digits, whitespace and : . _ - #",
        ));
    }
    Ok(())
}

/// `\s` of the JavaScript regular expression Forge checks keys with (which differs from
/// [`char::is_whitespace`] on U+0085 and U+FEFF).
fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202F}'
                | '\u{205F}'
                | '\u{3000}'
                | '\u{FEFF}'
    )
}

fn check_limit(limit: u32) -> Result<(), StorageError> {
    if (1..=MAX_QUERY_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(StorageError::InvalidLimit(limit))
    }
}

/// The error of a non-2xx answer from (the start of) its body.
fn api_error(status: StatusCode, body: &[u8]) -> StorageError {
    #[derive(Deserialize)]
    struct ErrorBody {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => StorageError::Api {
            status,
            code: e.code,
            message: e.message.unwrap_or_default(),
        },
        Err(_) => StorageError::Api {
            status,
            code: None,
            message: String::from_utf8_lossy(body).into_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_as_forge_checks_them() {
        for key in [
            "a",
            "settings:theme",
            "job #1.2_x-y",
            " a ",
            &"k".repeat(500),
        ] {
            assert!(check_key(key).is_ok(), "{key:?}");
        }
        for key in ["", " ", "\t\n", "a/b", "é", "a?", &"k".repeat(501)] {
            assert!(check_key(key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn options_serialize_as_forge_reads_them() {
        let options = SetOptions::default().ttl(Ttl::Minutes(5)).if_absent();
        assert_eq!(
            serde_json::to_value(options).unwrap(),
            serde_json::json!({
                "ttl": { "unit": "MINUTES", "value": 5 },
                "keyPolicy": "FAIL_IF_EXISTS",
            })
        );
    }
}
