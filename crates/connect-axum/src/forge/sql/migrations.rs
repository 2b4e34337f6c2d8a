//! An app's Forge SQL schema, applied lazily to each installation's database: an ordered list of
//! named DDL statements, a ledger table in each database of the names applied, and a cache so
//! that a process checks an installation once.
//!
//! Forge SQL has no transactions, and several replicas of a container may apply the same list to
//! the same installation at once. So each DDL statement is applied on its own call, then its
//! name is recorded with `INSERT IGNORE`; a replica that loses a race finds the name recorded and
//! moves on. What keeps a race (or a crash between a statement and its record) harmless is that
//! the statements are idempotent: write `CREATE TABLE IF NOT EXISTS`, `ADD COLUMN IF NOT EXISTS`,
//! `CREATE INDEX IF NOT EXISTS`. An applied migration is never edited; a change is a new one.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

use super::{ForgeSql, Sql, SqlError, SqlValue};
use crate::outbound;
use crate::protocol::egress::ProxyAuthorization;

/// The ledger table kept in each installation's database: one row per migration applied.
pub const LEDGER_TABLE: &str = "connect_axum_migrations";

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS connect_axum_migrations (\
     name VARCHAR(255) NOT NULL PRIMARY KEY, \
     applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)";
const LIST_APPLIED: &str = "SELECT name FROM connect_axum_migrations";
const RECORD: &str = "INSERT IGNORE INTO connect_axum_migrations (name) VALUES (?)";

/// How many installations a process remembers as migrated.
const REMEMBERED: u64 = 100_000;

/// An app's ordered Forge SQL migrations, and the installations this process has brought up to
/// date. Clones share what they remember.
///
/// ```
/// use connect_axum::forge::sql::SqlMigrations;
///
/// let migrations = SqlMigrations::new()
///     .add("0001_notes", "CREATE TABLE IF NOT EXISTS note (id BIGINT PRIMARY KEY AUTO_RANDOM, body TEXT NOT NULL)")
///     .add("0002_note_issue", "ALTER TABLE note ADD COLUMN IF NOT EXISTS issue VARCHAR(64)");
/// ```
#[derive(Clone)]
pub struct SqlMigrations {
    list: Vec<(String, String)>,
    pause: Duration,
    migrated: moka::future::Cache<String, ()>,
}

impl Default for SqlMigrations {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SqlMigrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlMigrations")
            .field(
                "names",
                &self.list.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("pause", &self.pause)
            .finish_non_exhaustive()
    }
}

impl SqlMigrations {
    /// No migrations, and no pause between DDL calls.
    pub fn new() -> Self {
        Self {
            list: Vec::new(),
            pause: Duration::ZERO,
            migrated: moka::future::Cache::builder()
                .max_capacity(REMEMBERED)
                .build(),
        }
    }

    /// Adds the migration `name`, one DDL statement, after those added before.
    ///
    /// # Panics
    /// When `name` is empty, longer than 255 bytes, or added already: the list is the app's code.
    pub fn add(mut self, name: &str, ddl: &str) -> Self {
        assert!(
            (1..=255).contains(&name.len()),
            "a migration name has 1 to 255 bytes: {name:?}"
        );
        assert!(
            self.list.iter().all(|(n, _)| n != name),
            "the migration {name:?} is added twice"
        );
        self.list.push((name.to_owned(), ddl.to_owned()));
        self
    }

    /// Waits `pause` before each DDL call after a run's first: Forge allows 25 DDL statements a
    /// minute per installation, so a long list applied to a new installation may want ~2.5 s.
    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// The migrations' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|(name, _)| name.as_str())
    }

    /// Applies the migrations the database of `installation_id` lacks, through `sql` (which must
    /// name that installation); the first call for an installation checks its ledger, the next
    /// ones return at once. Concurrent first calls share one run; a failed run is not
    /// remembered, so the next call tries again.
    ///
    /// # Errors
    /// The first statement that failed; the migrations before it stay applied.
    pub async fn ensure(&self, installation_id: &str, sql: &Sql<'_>) -> Result<(), SqlError> {
        self.migrated
            .try_get_with(installation_id.to_owned(), self.run(sql))
            .await
            .map_err(|e| (*e).clone())
    }

    /// [`ensure`](Self::ensure) for each installation of `installations`, one after another, each
    /// reached as the app (`installationId=…,as=app`): for a scheduled job that brings every
    /// installation up to date before its users arrive. Returns those that failed, with why.
    pub async fn sweep(
        &self,
        forge_sql: &ForgeSql,
        installations: impl IntoIterator<Item = String>,
    ) -> Vec<(String, SqlError)> {
        let mut failed = Vec::new();
        for id in installations {
            let result = match ProxyAuthorization::installation_as_app(&id) {
                Ok(authorization) => self.ensure(&id, &forge_sql.at(&authorization)).await,
                Err(_) => Err(SqlError::InvalidInstallation { id: id.clone() }),
            };
            if let Err(e) = result {
                tracing::warn!(installation = %id, error = %e, "Forge SQL migrations failed: {e}");
                failed.push((id, e));
            }
        }
        failed
    }

    /// One run: the ledger read (made first when it is missing), then each missing migration
    /// applied and recorded.
    async fn run(&self, sql: &Sql<'_>) -> Result<(), SqlError> {
        let mut calls = 0;
        let applied = match applied(sql).await {
            Ok(applied) => applied,
            // Most likely the ledger does not exist yet; anything else fails again below.
            Err(SqlError::Execution { .. }) => {
                sql.execute_ddl(CREATE_LEDGER).await?;
                calls += 1;
                applied(sql).await?
            }
            Err(e) => return Err(e),
        };
        for (name, ddl) in &self.list {
            if applied.contains(name) {
                continue;
            }
            if calls > 0 && !self.pause.is_zero() {
                tokio::time::sleep(self.pause).await;
            }
            calls += 1;
            if let Err(e) = sql.execute_ddl(ddl).await {
                // Another replica may have applied it (a non-idempotent statement then fails here).
                if applied_now(sql, name).await {
                    continue;
                }
                return Err(e);
            }
            sql.execute(RECORD, &[SqlValue::from(name)]).await?;
            tracing::info!(migration = %name, "applied the Forge SQL migration {name}");
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Applied {
    name: String,
}

async fn applied(sql: &Sql<'_>) -> Result<Vec<String>, SqlError> {
    let rows: Vec<Applied> = sql.query(LIST_APPLIED, &[]).await?;
    Ok(rows.into_iter().map(|row| row.name).collect())
}

async fn applied_now(sql: &Sql<'_>, name: &str) -> bool {
    applied(sql)
        .await
        .is_ok_and(|names| names.iter().any(|n| n == name))
}

/// Every installation of the app, from the egress proxy's `GET {proxy}/v1/installations`: for
/// [`SqlMigrations::sweep`].
///
/// **Unconfirmed**: the route and its `pageSize` of at most 100 are documented for containers,
/// but not the name of the paging parameter or of the answer's fields; this reads items from
/// `results` (or `installations`), each with an `id`, and the next page's `cursor` (sent back as
/// `?cursor=`), with no `forge-proxy-authorization` header.
pub async fn list_installations(forge_sql: &ForgeSql) -> Result<Vec<String>, SqlError> {
    #[derive(Deserialize)]
    struct Installation {
        id: String,
    }
    #[derive(Deserialize)]
    struct Page {
        #[serde(default, alias = "installations")]
        results: Vec<Installation>,
        #[serde(default, alias = "nextCursor")]
        cursor: Option<String>,
    }
    let base = forge_sql
        .execute
        .strip_suffix(super::EXECUTE_PATH)
        .unwrap_or(&forge_sql.execute);
    let url = format!("{base}/v1/installations");
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let request = |http: &reqwest::Client| {
            let mut request = http
                .get(&url)
                .query(&[("pageSize", "100")])
                .header(CONTENT_TYPE, "application/json");
            if let Some(cursor) = &cursor {
                request = request.query(&[("cursor", cursor)]);
            }
            request
        };
        let response = forge_sql.transport.send(&super::CALLS, request).await?;
        let page: Page = outbound::json(response).await?;
        ids.extend(page.results.into_iter().map(|i| i.id));
        match page.cursor {
            Some(next) if !next.is_empty() && Some(&next) != cursor.as_ref() => cursor = Some(next),
            _ => return Ok(ids),
        }
    }
}
