//! Forge SQL as the sidecar serves it (`POST /forge/storage/sql/v1/execute` and `…/execute/ddl`),
//! over a real MariaDB: one database per installation, made on first use, named from a hash of
//! the installation id under a prefix of this fake's own, so that concurrent tests never meet.
//!
//! It answers as Forge SQL does where that is known: `BIGINT`, `DECIMAL`, `DATE`, `DATETIME`,
//! `TIMESTAMP` and `TIME` values as JSON strings and the smaller integers as numbers; an
//! `INSERT`/`UPDATE`/`DELETE` with `rows: {affectedRows, insertId, …}` (MySQL's result header, as
//! `@forge/sql` reads it); errors as `{code, message}`; `LIMIT ?` refused with "Incorrect arguments
//! to LIMIT"; DDL refused on the DML route and writes on the DDL route (`INVALID_SQL_QUERY`; a
//! `SELECT` passes there, as `@forge/sql`'s migration runner reads its ledger on that route);
//! more than one statement, `SET` (but `SET @var`), `USE`, `PREPARE`, `LOCK` and transactions
//! refused as `SQL_POLICY_VIOLATION`; each statement stopped at Forge's time limit
//! (`QUERY_TIMED_OUT`, through MariaDB's `max_statement_time`). Forge does not publish the status
//! of each error: a query error here is a 400, a missing or malformed `forge-proxy-authorization`
//! a 401, an invocation the sidecar did not make a 403, a failure of the fake itself a 500
//! `UNKNOWN_ERROR`.
//!
//! MariaDB is at `TEST_MARIADB_URL`, by default `mysql://root@127.0.0.1:3306` (what `.ci/mariadb.sh`
//! starts).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use connect_axum::protocol::egress::ProxyAuthorization;
use serde_json::{Map, Value, json};
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Column, Executor, Row, TypeInfo, ValueRef};
use tokio::sync::OnceCell;

use super::Shared;

/// Where the fake finds MariaDB when `TEST_MARIADB_URL` is unset.
pub const DEFAULT_MARIADB_URL: &str = "mysql://root@127.0.0.1:3306";

/// Which of the two routes a call reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlRoute {
    /// `POST /forge/storage/sql/v1/execute`: `SELECT`, `INSERT`, `UPDATE`, `DELETE`.
    Dml,
    /// `POST /forge/storage/sql/v1/execute/ddl`: schema statements.
    Ddl,
}

/// One call the fake received, refused ones included.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlCall {
    /// The installation the header resolved to; `None` when it resolved to none.
    pub installation: Option<String>,
    /// The route called.
    pub route: SqlRoute,
    /// The `query` sent.
    pub query: String,
    /// The `params` sent.
    pub params: Vec<Value>,
    /// The `forge-proxy-authorization` header (`<none>` without one).
    pub authorization: String,
}

/// Forge's time limit of each kind of statement.
#[derive(Debug, Clone, Copy)]
struct Limits {
    select: Duration,
    write: Duration,
    ddl: Duration,
}

/// Forge SQL over MariaDB, served by [`FakeSidecar`](super::FakeSidecar) ([`sql`](super::FakeSidecar::sql)).
pub struct FakeForgeSql {
    url: String,
    prefix: String,
    admin: OnceCell<MySqlPool>,
    databases: tokio::sync::Mutex<HashMap<String, MySqlPool>>,
    names: Mutex<Vec<String>>,
    calls: Mutex<Vec<SqlCall>>,
    limits: Mutex<Limits>,
}

impl Default for FakeForgeSql {
    fn default() -> Self {
        Self {
            url: std::env::var("TEST_MARIADB_URL").unwrap_or_else(|_| DEFAULT_MARIADB_URL.into()),
            prefix: format!("fsql_{:08x}", rand08::random::<u32>()),
            admin: OnceCell::new(),
            databases: tokio::sync::Mutex::default(),
            names: Mutex::default(),
            calls: Mutex::default(),
            limits: Mutex::new(Limits {
                select: Duration::from_secs(5),
                write: Duration::from_secs(10),
                ddl: Duration::from_secs(20),
            }),
        }
    }
}

impl FakeForgeSql {
    /// The MariaDB database of `installation_id`'s Forge SQL: `fsql_<this fake's 8 hex>_<16 hex
    /// of the id's hash>`.
    pub fn database(&self, installation_id: &str) -> String {
        let mut hasher = DefaultHasher::new();
        installation_id.hash(&mut hasher);
        format!("{}_{:016x}", self.prefix, hasher.finish())
    }

    /// Every call received, in order.
    pub fn calls(&self) -> Vec<SqlCall> {
        self.calls.lock().expect("not poisoned").clone()
    }

    /// The calls received on `route`.
    pub fn calls_on(&self, route: SqlRoute) -> Vec<SqlCall> {
        let calls = self.calls.lock().expect("not poisoned");
        calls.iter().filter(|c| c.route == route).cloned().collect()
    }

    /// Forgets the calls received so far.
    pub fn clear_calls(&self) {
        self.calls.lock().expect("not poisoned").clear();
    }

    /// Sets the time limits, Forge's by default: `select` (5 s), `write` for `INSERT`, `UPDATE`
    /// and `DELETE` (10 s), `ddl` (20 s). MariaDB counts them in milliseconds.
    pub fn set_time_limits(&self, select: Duration, write: Duration, ddl: Duration) {
        *self.limits.lock().expect("not poisoned") = Limits { select, write, ddl };
    }

    /// The rows `query` reads straight from `installation_id`'s database, each as Forge SQL
    /// would answer it: what a test checks the app wrote.
    ///
    /// # Panics
    /// When MariaDB cannot run `query`.
    pub async fn rows(&self, installation_id: &str, query: &str) -> Vec<Value> {
        let pool = self
            .pool(installation_id)
            .await
            .expect("the installation's database");
        let rows = sqlx::query(query)
            .fetch_all(&pool)
            .await
            .expect("MariaDB runs the query");
        rows.iter()
            .map(|row| row_json(row).expect("a row Forge SQL could answer"))
            .collect()
    }

    /// Drops the databases this fake made; also done, best effort, when it is dropped.
    pub async fn cleanup(&self) {
        let names = std::mem::take(&mut *self.names.lock().expect("not poisoned"));
        let pools = std::mem::take(&mut *self.databases.lock().await);
        for pool in pools.into_values() {
            pool.close().await;
        }
        if let Ok(admin) = self.admin().await {
            for name in names {
                let _ = admin
                    .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
                    .await;
            }
        }
    }

    async fn admin(&self) -> Result<&MySqlPool, sqlx::Error> {
        self.admin
            .get_or_try_init(|| async {
                MySqlPoolOptions::new()
                    .max_connections(2)
                    .connect_with(MySqlConnectOptions::from_str(&self.url)?)
                    .await
            })
            .await
    }

    /// The pool of `installation_id`'s database, made with its database on first use.
    async fn pool(&self, installation_id: &str) -> Result<MySqlPool, sqlx::Error> {
        let mut databases = self.databases.lock().await;
        if let Some(pool) = databases.get(installation_id) {
            return Ok(pool.clone());
        }
        let name = self.database(installation_id);
        self.admin()
            .await?
            .execute(format!("CREATE DATABASE IF NOT EXISTS `{name}`").as_str())
            .await?;
        self.names.lock().expect("not poisoned").push(name.clone());
        // Few connections each: MariaDB's default max_connections (151) holds dozens of
        // installations under load (bench/container.sh runs 50).
        let pool = MySqlPoolOptions::new()
            .max_connections(2)
            .connect_with(MySqlConnectOptions::from_str(&self.url)?.database(&name))
            .await?;
        databases.insert(installation_id.to_owned(), pool.clone());
        Ok(pool)
    }

    fn record(&self, call: SqlCall) {
        self.calls.lock().expect("not poisoned").push(call);
    }
}

impl Drop for FakeForgeSql {
    fn drop(&mut self) {
        let names = std::mem::take(self.names.get_mut().expect("not poisoned"));
        if names.is_empty() {
            return;
        }
        let url = self.url.clone();
        // Drop may run inside a runtime that is shutting down: a thread of its own finishes it.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Ok(options) = MySqlConnectOptions::from_str(&url) else {
                    return;
                };
                let Ok(admin) = MySqlPoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                else {
                    return;
                };
                for name in names {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
                        .await;
                }
                admin.close().await;
            });
        });
        let _ = dropper.join();
    }
}

/// `POST /forge/storage/sql/v1/execute`.
pub(super) async fn execute(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&shared, SqlRoute::Dml, &headers, &body).await
}

/// `POST /forge/storage/sql/v1/execute/ddl`.
pub(super) async fn execute_ddl(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&shared, SqlRoute::Ddl, &headers, &body).await
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "code": code, "message": message.into() })),
    )
        .into_response()
}

fn query_error(code: &str, message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, code, message)
}

async fn serve(shared: &Shared, route: SqlRoute, headers: &HeaderMap, body: &[u8]) -> Response {
    let authorization = shared.received(headers);
    let installation = match ProxyAuthorization::parse(&authorization) {
        Ok(parsed) => shared
            .installation_of(&parsed.scope)
            .ok_or(StatusCode::FORBIDDEN),
        Err(_) => Err(StatusCode::UNAUTHORIZED),
    };
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let query = request["query"].as_str().unwrap_or_default().to_owned();
    let params = request["params"].as_array().cloned().unwrap_or_default();
    let sql = &shared.sql;
    sql.record(SqlCall {
        installation: installation.as_ref().ok().cloned(),
        route,
        query: query.clone(),
        params: params.clone(),
        authorization,
    });
    if shared.down.load(std::sync::atomic::Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let installation = match installation {
        Ok(id) => id,
        Err(status) => {
            return error(
                status,
                "UNAUTHENTICATED",
                "forge-proxy-authorization names no installation this sidecar knows",
            );
        }
    };
    if !request["query"].is_string() {
        return query_error("INVALID_SQL_QUERY", "the body has no query");
    }
    let kind = match classify(&query, route) {
        Ok(kind) => kind,
        Err(refusal) => return refusal,
    };
    let limits = *sql.limits.lock().expect("not poisoned");
    let limit = match kind {
        Kind::Rows => limits.select,
        Kind::Write | Kind::Other => limits.write,
        Kind::Schema => limits.ddl,
    };
    let pool = match sql.pool(&installation).await {
        Ok(pool) => pool,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN_ERROR",
                format!("the fake's MariaDB at {} failed: {e}", sql.url),
            );
        }
    };
    // `SET @var` cannot carry a `SET STATEMENT`; it is quick, and the timeout below bounds it.
    let text = if words(&query)[0].eq_ignore_ascii_case("set") {
        query.clone()
    } else {
        format!(
            "SET STATEMENT max_statement_time={:.3} FOR {query}",
            limit.as_secs_f64()
        )
    };
    let started = Instant::now();
    let run = run(&pool, &text, &params, kind);
    // MariaDB stops the statement itself; this bounds a call it does not.
    let outcome = tokio::time::timeout(limit + Duration::from_secs(2), run).await;
    let elapsed = started.elapsed().as_millis() as u64;
    match outcome {
        Err(_) => query_error("QUERY_TIMED_OUT", "the query ran past its time limit"),
        Ok(Ok((rows, fields))) => {
            let size = rows.to_string().len();
            Json(json!({
                "rows": rows,
                "metadata": { "dbExecutionTime": elapsed, "responseSize": size, "fields": fields },
            }))
            .into_response()
        }
        Ok(Err(sqlx::Error::Database(e))) => {
            let number = e
                .try_downcast_ref::<MySqlDatabaseError>()
                .map(MySqlDatabaseError::number);
            if number == Some(1969) {
                query_error("QUERY_TIMED_OUT", "the query ran past its time limit")
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    Json(json!({
                        "code": "SQL_EXECUTION_ERROR",
                        "message": e.message(),
                        "context": { "errno": number, "sqlState": e.code() },
                    })),
                )
                    .into_response()
            }
        }
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_ERROR",
            e.to_string(),
        ),
    }
}

/// What a statement does, for its time limit and its answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Answers rows: `SELECT`, `WITH`, `SHOW`, …
    Rows,
    /// `INSERT`, `UPDATE`, `DELETE`, `REPLACE`: answers MySQL's result header.
    Write,
    /// Schema.
    Schema,
    /// Anything else, left to MariaDB on either route.
    Other,
}

/// What Forge would refuse before running the statement, or what it is.
#[expect(clippy::result_large_err, reason = "the refusal is the answer")]
fn classify(query: &str, route: SqlRoute) -> Result<Kind, Response> {
    let words = words(query);
    if let Some(semicolon) = words.iter().position(|w| w == ";")
        && semicolon + 1 < words.len()
    {
        return Err(query_error(
            "SQL_POLICY_VIOLATION",
            "only one statement is allowed per query",
        ));
    }
    if words
        .windows(2)
        .any(|w| w[0].eq_ignore_ascii_case("limit") && w[1] == "?")
        || words.windows(4).any(|w| {
            w[0].eq_ignore_ascii_case("limit") && w[2] == "," && w[3] == "?"
                || w[0].eq_ignore_ascii_case("limit")
                    && w[2].eq_ignore_ascii_case("offset")
                    && w[3] == "?"
        })
    {
        return Err(query_error(
            "SQL_EXECUTION_ERROR",
            "Incorrect arguments to LIMIT (ER_WRONG_ARGUMENTS)",
        ));
    }
    let first = words
        .first()
        .map(|w| w.to_ascii_uppercase())
        .unwrap_or_default();
    let second = words.get(1).map(String::as_str).unwrap_or_default();
    let kind = match first.as_str() {
        "SELECT" | "WITH" | "SHOW" | "EXPLAIN" | "DESCRIBE" | "DESC" | "VALUES" | "(" => Kind::Rows,
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" => Kind::Write,
        "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "RENAME" => Kind::Schema,
        "SET" if second.starts_with('@') => Kind::Other,
        "" => return Err(query_error("INVALID_SQL_QUERY", "the query is empty")),
        refused @ ("SET" | "USE" | "PREPARE" | "EXECUTE" | "DEALLOCATE" | "LOCK" | "UNLOCK"
        | "START" | "BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "XA" | "GRANT"
        | "REVOKE" | "LOAD" | "HANDLER" | "CALL" | "DO" | "KILL" | "FLUSH"
        | "INSTALL") => {
            return Err(query_error(
                "SQL_POLICY_VIOLATION",
                format!("{refused} statements are not allowed"),
            ));
        }
        // MariaDB answers the rest, a syntax error most likely.
        _ => Kind::Other,
    };
    match (route, kind) {
        (SqlRoute::Dml, Kind::Schema) => Err(query_error(
            "INVALID_SQL_QUERY",
            "DDL statements must be sent to the DDL endpoint",
        )),
        (SqlRoute::Ddl, Kind::Write) => Err(query_error(
            "INVALID_SQL_QUERY",
            "DML statements must be sent to the DML endpoint",
        )),
        _ => Ok(kind),
    }
}

/// The statement's words, numbers and marks outside strings, quoted names and comments.
fn words(query: &str) -> Vec<String> {
    let chars: Vec<char> = query.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' || c == '`' {
            i += 1;
            while i < chars.len() {
                // A backslash escape, or a doubled quote standing for itself.
                if (chars[i] == '\\' && c != '`') || (chars[i] == c && chars.get(i + 1) == Some(&c))
                {
                    i += 2;
                } else if chars[i] == c {
                    break;
                } else {
                    i += 1;
                }
            }
            out.push("'str'".to_owned());
            i += 1;
        } else if c == '#' || (c == '-' && chars.get(i + 1) == Some(&'-')) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' || c == '@' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_@$.".contains(chars[i])) {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// Runs the statement with its parameters bound: the answer's `rows` and `fields`.
async fn run(
    pool: &MySqlPool,
    text: &str,
    params: &[Value],
    kind: Kind,
) -> Result<(Value, Value), sqlx::Error> {
    let mut query = sqlx::query(text);
    for param in params {
        query = match param {
            Value::Null => query.bind(None::<String>),
            Value::Bool(b) => query.bind(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => query.bind(i),
                (None, Some(u), _) => query.bind(u),
                (_, _, f) => query.bind(f.unwrap_or_default()),
            },
            Value::String(s) => query.bind(s.clone()),
            other => query.bind(other.to_string()),
        };
    }
    if kind == Kind::Rows {
        let rows = query.fetch_all(pool).await?;
        let fields = rows.first().map_or_else(Vec::new, |row| {
            row.columns()
                .iter()
                .map(|c| json!({ "name": c.name(), "type": c.type_info().name() }))
                .collect()
        });
        let rows = rows.iter().map(row_json).collect::<Result<Vec<_>, _>>()?;
        Ok((Value::Array(rows), Value::Array(fields)))
    } else {
        let done = query.execute(pool).await?;
        let header = json!({
            "fieldCount": 0,
            "affectedRows": done.rows_affected(),
            "insertId": done.last_insert_id(),
            "info": "",
            "serverStatus": 2,
            "warningStatus": 0,
        });
        Ok((header, json!([])))
    }
}

fn row_json(row: &MySqlRow) -> Result<Value, sqlx::Error> {
    let mut object = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        object.insert(column.name().to_owned(), cell(row, i)?);
    }
    Ok(Value::Object(object))
}

/// One value as Forge SQL answers it.
fn cell(row: &MySqlRow, i: usize) -> Result<Value, sqlx::Error> {
    if row.try_get_raw(i)?.is_null() {
        return Ok(Value::Null);
    }
    let name = row.column(i).type_info().name().to_owned();
    let text = |bytes: &[u8]| Value::String(String::from_utf8_lossy(bytes).into_owned());
    Ok(match name.as_str() {
        "BIGINT" => Value::String(row.try_get_unchecked::<i64, _>(i)?.to_string()),
        "BIGINT UNSIGNED" => Value::String(row.try_get_unchecked::<u64, _>(i)?.to_string()),
        "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "YEAR" => {
            json!(row.try_get_unchecked::<i64, _>(i)?)
        }
        n if n.ends_with(" UNSIGNED") => json!(row.try_get_unchecked::<u64, _>(i)?),
        "FLOAT" | "DOUBLE" => json!(row.try_get_unchecked::<f64, _>(i)?),
        "DECIMAL" => text(row.try_get_unchecked::<&[u8], _>(i)?),
        "DATE" => Value::String(
            row.try_get_unchecked::<chrono::NaiveDate, _>(i)?
                .format("%Y-%m-%d")
                .to_string(),
        ),
        "DATETIME" | "TIMESTAMP" => Value::String(
            row.try_get_unchecked::<chrono::NaiveDateTime, _>(i)?
                .format("%Y-%m-%d %H:%M:%S%.f")
                .to_string(),
        ),
        "TIME" => Value::String(
            row.try_get_unchecked::<chrono::NaiveTime, _>(i)?
                .format("%H:%M:%S%.f")
                .to_string(),
        ),
        _ => text(row.try_get_unchecked::<&[u8], _>(i)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_told_apart_and_refused_as_forge_does() {
        let kind = |q: &str, route| classify(q, route).map_err(|r| r.status());
        assert_eq!(kind("select 1", SqlRoute::Dml), Ok(Kind::Rows));
        assert_eq!(kind("SELECT 1", SqlRoute::Ddl), Ok(Kind::Rows));
        assert_eq!(
            kind("/* x */ INSERT INTO t VALUES (1);", SqlRoute::Dml),
            Ok(Kind::Write)
        );
        assert_eq!(
            kind("CREATE TABLE t (a INT)", SqlRoute::Ddl),
            Ok(Kind::Schema)
        );
        assert_eq!(
            kind("SELECT ';' FROM t LIMIT 5", SqlRoute::Dml),
            Ok(Kind::Rows)
        );
        for (q, route) in [
            ("CREATE TABLE t (a INT)", SqlRoute::Dml),
            ("INSERT INTO t VALUES (1)", SqlRoute::Ddl),
            ("SELECT 1; SELECT 2", SqlRoute::Dml),
            ("SELECT * FROM t LIMIT ?", SqlRoute::Dml),
            ("USE other", SqlRoute::Dml),
            ("START TRANSACTION", SqlRoute::Dml),
        ] {
            assert_eq!(kind(q, route), Err(StatusCode::BAD_REQUEST), "{q}");
        }
    }
}
