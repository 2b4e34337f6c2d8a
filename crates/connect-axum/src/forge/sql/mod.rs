//! A typed client of Forge SQL, the MySQL-compatible database Forge keeps for each installation,
//! reached from a Forge Container through the egress proxy: `POST {proxy}/forge/storage/sql/v1/execute`
//! for `SELECT`, `INSERT`, `UPDATE` and `DELETE`, and `…/execute/ddl` for schema changes, each with
//! the call's `forge-proxy-authorization` header naming the invocation or installation.
//!
//! **Atomicity.** Forge SQL has no transactions. Each call is one statement (more are refused
//! here, [`SqlError::MultipleStatements`]) and that statement is atomic on its own: a multi-row
//! `UPDATE` changes every row or none. A sequence of calls is not: another request can run
//! between two of them, and a failure can leave the first done and the second not. Write each
//! change as one idempotent statement (`INSERT … ON DUPLICATE KEY UPDATE`, `INSERT IGNORE`, an
//! `UPDATE … WHERE version = ?` that checks what it read) so that a retry finishes the work;
//! this client does not pretend otherwise.
//!
//! Values are bound to `?` placeholders ([`SqlValue`], [`sql_params!`](crate::sql_params)); a
//! row count cannot be one (`LIMIT ?` is refused, [`SqlError::LimitPlaceholder`]): write it
//! with [`limit`]. `BIGINT`, `DECIMAL` and dates come back as JSON strings: read them with
//! [`de`]'s helpers. Forge stops a `SELECT` after 5 s, an `INSERT`/`UPDATE`/`DELETE` after 10 s
//! and DDL after 20 s ([`SqlError::TimedOut`]). Atlassian marks the DML route experimental.
//!
//! ```no_run
//! # async fn example(auth: connect_axum::protocol::egress::ProxyAuthorization) -> Result<(), connect_axum::forge::sql::SqlError> {
//! use std::time::Duration;
//! use connect_axum::forge::sql::{ForgeSql, de, limit};
//! use connect_axum::sql_params;
//!
//! #[derive(serde::Deserialize)]
//! struct Note {
//!     #[serde(deserialize_with = "de::int")]
//!     id: i64,
//!     body: String,
//! }
//!
//! let forge_sql = ForgeSql::new(&"http://proxy-sidecar:7072".parse().unwrap(), Duration::from_secs(30));
//! let sql = forge_sql.at(&auth);
//! sql.execute("INSERT INTO note (issue, body) VALUES (?, ?)", &sql_params!["PROJ-1", "hi"]).await?;
//! let notes: Vec<Note> = sql
//!     .query(&format!("SELECT id, body FROM note WHERE issue = ? ORDER BY id {}", limit(20, 100)), &sql_params!["PROJ-1"])
//!     .await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::outbound::{self, Policy, Transport};
use crate::protocol::egress::{PROXY_AUTHORIZATION_HEADER, ProxyAuthorization};

pub mod de;
mod migrations;
mod scan;
mod value;

/// The macro building a statement's parameters, here beside [`SqlValue`].
pub use crate::sql_params;
pub use migrations::{LEDGER_TABLE, SqlMigrations, list_installations};
pub use scan::{Limit, limit};
pub use value::SqlValue;

/// The path of the DML route under the proxy.
pub const EXECUTE_PATH: &str = "/forge/storage/sql/v1/execute";

/// The path of the DDL route under the proxy.
pub const EXECUTE_DDL_PATH: &str = "/forge/storage/sql/v1/execute/ddl";

/// The largest answer read: Forge caps one at 4 MiB, and its JSON at a little more.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Three 429s (Forge's 150 DML/s and 25 DDL/min per installation) are waited out, each for its
/// `Retry-After` of at most 5 s, or 500 ms doubling without one: a 429 means the statement did not
/// run, so sending it again is safe. 4 KiB of an error body is read.
const CALLS: Policy = Policy {
    retries: 3,
    longest_wait: Duration::from_secs(5),
    backoff: Some(Duration::from_millis(500)),
    error_body: 4 * 1024,
};

/// Why a Forge SQL call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SqlError {
    /// The database refused or failed the statement (`SQL_EXECUTION_ERROR`): a syntax error, an
    /// unknown table, a duplicate key ([`is_duplicate_key`](Self::is_duplicate_key)), ….
    #[error("Forge SQL could not execute the statement: {message}")]
    Execution {
        /// The database's message.
        message: String,
    },
    /// Forge refused the statement before running it (`INVALID_SQL_QUERY`): DDL on the DML
    /// route or the reverse, a statement it does not take.
    #[error("Forge SQL refused the query: {message}")]
    InvalidQuery {
        /// Forge's message.
        message: String,
    },
    /// Forge stopped the statement at its time limit (`QUERY_TIMED_OUT`): 5 s for a `SELECT`,
    /// 10 s for `INSERT`/`UPDATE`/`DELETE`, 20 s for DDL.
    #[error("the Forge SQL statement ran past its time limit")]
    TimedOut,
    /// The app has no Forge SQL for this installation (`APP_NOT_ENABLED`): the manifest lacks
    /// `sql`, or the installation predates it.
    #[error("Forge SQL is not enabled for this app or installation")]
    AppNotEnabled,
    /// The statement breaks Forge SQL's query policy (`SQL_POLICY_VIOLATION`: `SET`, `USE`,
    /// `PREPARE`, names of another installation, …).
    #[error("Forge SQL's query policy refused the statement: {message}")]
    PolicyViolation {
        /// Forge's message.
        message: String,
    },
    /// Any other error answer: `UNKNOWN_ERROR`, a code this client does not know, or a body that
    /// is not Forge's `{code, message}`.
    #[error("Forge SQL answered {status} {code}: {message}")]
    Other {
        /// The status answered.
        status: StatusCode,
        /// Forge's code, or `UNKNOWN_ERROR` when the body has none.
        code: String,
        /// Forge's message, or the start of the body.
        message: String,
    },
    /// The text holds more than one statement (checked before any call; Forge takes one a call).
    #[error("a Forge SQL call takes one statement; this text holds more")]
    MultipleStatements,
    /// A `?` stands in a `LIMIT` (checked before any call; Forge SQL refuses it with "Incorrect
    /// arguments to LIMIT"): write the count with [`limit`].
    #[error("Forge SQL refuses `LIMIT ?`: write the count as a literal with forge::sql::limit()")]
    LimitPlaceholder,
    /// Forge kept answering 429 (or asked to wait longer than the client does).
    #[error("Forge SQL is rate limiting; retry after {retry_after:?}")]
    RateLimited {
        /// Forge's last `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// No answer within the client's own timeout.
    #[error("Forge SQL did not answer in time")]
    Timeout,
    /// The proxy could not be reached.
    #[error("Forge SQL could not be reached: {0}")]
    Transport(String),
    /// The parameters could not be encoded, or the answer (or a row) was not the JSON expected.
    #[error("a Forge SQL answer could not be decoded: {0}")]
    Decode(String),
    /// An installation id that a `forge-proxy-authorization` header cannot carry (checked before
    /// any call).
    #[error("{id:?} is not an installation id the egress header can carry")]
    InvalidInstallation {
        /// The id refused.
        id: String,
    },
    /// The call's host is not among the app's egress hosts (refused before anything was sent).
    #[error("{host} is not among the app's egress hosts")]
    EgressRefused {
        /// The host refused.
        host: String,
    },
}

impl SqlError {
    /// Whether the statement failed on a duplicate primary or unique key (MySQL's error 1062,
    /// `ER_DUP_ENTRY`: "Duplicate entry … for key …").
    pub fn is_duplicate_key(&self) -> bool {
        match self {
            SqlError::Execution { message } => {
                message.contains("Duplicate entry") || message.contains("ER_DUP_ENTRY")
            }
            _ => false,
        }
    }
}

outbound::from_failure!(SqlError, |status, body| api_error(status, &body));

impl From<SqlError> for crate::error::Error {
    /// A duplicate key is a 409 `duplicate_key`; a time limit a 504 `sql_timeout`; Forge SQL not
    /// enabled or rate limiting a 503; a statement Forge or this client refuses, or an answer
    /// that does not decode, the app's own fault: a 500 whose cause is logged, not shown.
    fn from(e: SqlError) -> Self {
        use axum::http::StatusCode as Http;
        let (status, reason) = match e {
            _ if e.is_duplicate_key() => {
                return crate::error::Error::Conflict {
                    reason: "duplicate_key",
                    message: "a row with this key exists already".to_owned(),
                };
            }
            SqlError::Execution { .. }
            | SqlError::InvalidQuery { .. }
            | SqlError::PolicyViolation { .. }
            | SqlError::MultipleStatements
            | SqlError::LimitPlaceholder
            | SqlError::InvalidInstallation { .. }
            | SqlError::Decode(_) => return crate::error::Error::Database(Box::new(e)),
            SqlError::TimedOut | SqlError::Timeout => (Http::GATEWAY_TIMEOUT, "sql_timeout"),
            SqlError::AppNotEnabled => (Http::SERVICE_UNAVAILABLE, "sql_not_enabled"),
            SqlError::RateLimited { .. } => (Http::SERVICE_UNAVAILABLE, "sql_rate_limited"),
            SqlError::EgressRefused { .. } => (Http::BAD_GATEWAY, "egress_refused"),
            SqlError::Other { .. } | SqlError::Transport(_) => (Http::BAD_GATEWAY, "sql_error"),
        };
        crate::error::Error::Upstream {
            status,
            reason,
            message: e.to_string(),
        }
    }
}

/// What an `INSERT`, `UPDATE` or `DELETE` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changed {
    /// The rows the statement changed (for `ON DUPLICATE KEY UPDATE`, MySQL's count: 1 for an
    /// insert, 2 for an update).
    pub rows_affected: u64,
    /// The `AUTO_INCREMENT` (or `AUTO_RANDOM`) id the statement generated, `None` when it made none.
    pub last_insert_id: Option<u64>,
}

/// The client of Forge SQL; shares connections across calls and installations.
#[derive(Clone)]
pub struct ForgeSql {
    transport: Transport,
    execute: Arc<str>,
    execute_ddl: Arc<str>,
}

impl ForgeSql {
    /// A client of Forge SQL behind the egress proxy at `proxy` (`FORGE_EGRESS_PROXY_URL`), with
    /// a `timeout` on every call: keep it above Forge's own limits (20 s for DDL).
    pub fn new(proxy: &Url, timeout: Duration) -> Self {
        Self::with_transport(Transport::new(timeout), proxy)
    }

    /// [`new`](Self::new) with calls that leave through `transport`.
    pub(crate) fn with_transport(transport: Transport, proxy: &Url) -> Self {
        let base = proxy.as_str().trim_end_matches('/');
        Self {
            transport,
            execute: format!("{base}{EXECUTE_PATH}").into(),
            execute_ddl: format!("{base}{EXECUTE_DDL_PATH}").into(),
        }
    }

    /// The database of the installation `authorization` names (its invocation's, or one named
    /// outside any invocation): Forge tells installations apart by the header alone.
    pub fn at(&self, authorization: &ProxyAuthorization) -> Sql<'_> {
        Sql {
            client: self,
            header: authorization.to_string(),
        }
    }
}

/// The database of one installation, as one call's header names it.
#[derive(Clone)]
pub struct Sql<'a> {
    client: &'a ForgeSql,
    header: String,
}

impl std::fmt::Debug for Sql<'_> {
    // The header names an invocation; it stays out of logs all the same.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql").finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Request<'a> {
    query: &'a str,
    params: &'a [SqlValue],
    method: &'static str,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    rows: Value,
    #[serde(default)]
    metadata: Value,
}

impl Sql<'_> {
    /// The rows of a `SELECT`, each decoded as a `T` from its JSON object (column names as keys).
    pub async fn query<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Vec<T>, SqlError> {
        let answer = self.call(&self.client.execute, sql, params).await?;
        let Value::Array(rows) = answer.rows else {
            return Err(SqlError::Decode(
                "the answer's rows are not a list: was the statement a SELECT?".to_owned(),
            ));
        };
        rows.into_iter()
            .map(|row| serde_json::from_value(row).map_err(|e| SqlError::Decode(e.to_string())))
            .collect()
    }

    /// The first row of a `SELECT`, `None` when there is none; write the query to return one
    /// (`LIMIT 1`, a key), as every row is sent.
    pub async fn query_optional<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[SqlValue],
    ) -> Result<Option<T>, SqlError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs an `INSERT`, `UPDATE` or `DELETE`.
    pub async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<Changed, SqlError> {
        let answer = self.call(&self.client.execute, sql, params).await?;
        Ok(changed(&answer))
    }

    /// Runs a schema statement (`CREATE TABLE`, `ALTER TABLE`, …) on the DDL route, which Forge
    /// limits to 25 a minute per installation.
    pub async fn execute_ddl(&self, sql: &str) -> Result<(), SqlError> {
        self.call(&self.client.execute_ddl, sql, &[])
            .await
            .map(drop)
    }

    /// Checks `sql`, then `POST`s it to `url` and reads the answer.
    async fn call(&self, url: &str, sql: &str, params: &[SqlValue]) -> Result<Answer, SqlError> {
        scan::check(sql)?;
        let body = serde_json::to_vec(&Request {
            query: sql,
            params,
            method: "all",
        })
        .map_err(|e| SqlError::Decode(e.to_string()))?;
        let request = |http: &reqwest::Client| {
            http.post(url)
                .header(PROXY_AUTHORIZATION_HEADER, &self.header)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
        };
        let mut response = self.client.transport.send(&CALLS, request).await?;
        let bytes = outbound::read_limited(&mut response, MAX_ANSWER_BYTES).await?;
        serde_json::from_slice(&bytes).map_err(|e| SqlError::Decode(e.to_string()))
    }
}

/// What a DML answer says it changed: `@forge/sql` reads `affectedRows` and `insertId` from
/// `rows` (MySQL's result header); `metadata` is read when `rows` has none. An `insertId` of 0 is
/// MySQL's "none".
fn changed(answer: &Answer) -> Changed {
    let number = |name: &str| {
        [&answer.rows, &answer.metadata]
            .into_iter()
            .find_map(|v| match v.get(name)? {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            })
    };
    Changed {
        rows_affected: number("affectedRows").unwrap_or(0),
        last_insert_id: number("insertId").filter(|&id| id != 0),
    }
}

/// The error of a non-2xx answer from (the start of) its body, `{code, message, …}`.
fn api_error(status: StatusCode, body: &[u8]) -> SqlError {
    #[derive(Deserialize)]
    struct ErrorBody {
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(ErrorBody { code, message }) = serde_json::from_slice(body) else {
        return SqlError::Other {
            status,
            code: "UNKNOWN_ERROR".to_owned(),
            message: String::from_utf8_lossy(body).into_owned(),
        };
    };
    match code.as_str() {
        "SQL_EXECUTION_ERROR" => SqlError::Execution { message },
        "INVALID_SQL_QUERY" => SqlError::InvalidQuery { message },
        "QUERY_TIMED_OUT" => SqlError::TimedOut,
        "APP_NOT_ENABLED" => SqlError::AppNotEnabled,
        "SQL_POLICY_VIOLATION" => SqlError::PolicyViolation { message },
        _ => SqlError::Other {
            status,
            code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn error_bodies_become_typed_errors() {
        let bad = StatusCode::BAD_REQUEST;
        let body = |code: &str, message: &str| {
            serde_json::to_vec(&json!({ "code": code, "message": message, "suggestion": "x" }))
                .unwrap()
        };
        let duplicate = api_error(
            bad,
            &body(
                "SQL_EXECUTION_ERROR",
                "Duplicate entry '1' for key 'PRIMARY'",
            ),
        );
        assert!(duplicate.is_duplicate_key());
        assert!(matches!(
            api_error(bad, &body("INVALID_SQL_QUERY", "DDL")),
            SqlError::InvalidQuery { message } if message == "DDL"
        ));
        assert!(matches!(
            api_error(bad, &body("QUERY_TIMED_OUT", "")),
            SqlError::TimedOut
        ));
        assert!(matches!(
            api_error(StatusCode::FORBIDDEN, &body("APP_NOT_ENABLED", "")),
            SqlError::AppNotEnabled
        ));
        assert!(matches!(
            api_error(bad, &body("SQL_POLICY_VIOLATION", "USE")),
            SqlError::PolicyViolation { .. }
        ));
        assert!(matches!(
            api_error(StatusCode::BAD_GATEWAY, b"<html>"),
            SqlError::Other { code, message, .. } if code == "UNKNOWN_ERROR" && message == "<html>"
        ));
        assert!(!api_error(bad, &body("SQL_EXECUTION_ERROR", "syntax")).is_duplicate_key());
    }

    #[test]
    fn a_dml_answer_tells_what_it_changed() {
        let answer = |value: Value| serde_json::from_value::<Answer>(value).unwrap();
        let header = answer(json!({
            "rows": { "affectedRows": 1, "insertId": 42, "fieldCount": 0, "info": "",
                      "serverStatus": 2, "warningStatus": 0 },
            "metadata": { "dbExecutionTime": 3 },
        }));
        assert_eq!(
            changed(&header),
            Changed {
                rows_affected: 1,
                last_insert_id: Some(42)
            }
        );
        let in_metadata =
            answer(json!({ "rows": [], "metadata": { "affectedRows": "3", "insertId": 0 } }));
        assert_eq!(
            changed(&in_metadata),
            Changed {
                rows_affected: 3,
                last_insert_id: None
            }
        );
    }
}
