//! The backend a store runs on: Postgres or SQLite, each with its pools, and the connections and
//! transactions the registry's SQL and an app's SQL run in.

use super::{ClientKey, PgStore, PoolUsage, SqliteStore, StoreError, TenantTransaction};

/// A store's backend, for SQL that only one backend speaks (for SQL both speak,
/// [`Store::tenant_transaction`](super::Store::tenant_transaction)):
///
/// ```no_run
/// # async fn f(store: &connect_axum::store::Store, key: &connect_axum::store::ClientKey) -> Result<(), connect_axum::store::StoreError> {
/// use connect_axum::store::Database;
/// let select = "select url from bookmark where client_key = $1 order by id";
/// let urls: Vec<String> = match store.database() {
///     Database::Postgres(pg) => {
///         let mut tx = pg.begin_tenant(key).await?;
///         sqlx::query_scalar(select).bind(key.as_str()).fetch_all(&mut *tx).await?
///     }
///     Database::Sqlite(db) => {
///         let mut tx = db.begin_tenant(key).await?;
///         sqlx::query_scalar(select).bind(key.as_str()).fetch_all(&mut *tx).await?
///     }
/// };
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub enum Database {
    /// Postgres, with row-level security on tenant tables.
    Postgres(Box<PgStore>),
    /// An embedded SQLite file (no `DATABASE_URL`).
    Sqlite(SqliteStore),
}

impl Database {
    /// Statements each on their own, outside any transaction.
    pub(super) async fn connection(&self) -> Result<TenantTransaction, StoreError> {
        match self {
            Database::Postgres(pg) => pg.connection().await,
            Database::Sqlite(db) => db.connection().await,
        }
    }

    /// A transaction outside any tenant (the registry tables).
    pub(super) async fn begin(&self) -> Result<TenantTransaction, StoreError> {
        match self {
            Database::Postgres(pg) => pg.begin().await,
            Database::Sqlite(db) => db.begin().await,
        }
    }

    /// A transaction in which, on Postgres, row-level security admits only `key`'s rows.
    pub(super) async fn tenant_transaction(
        &self,
        key: &ClientKey,
    ) -> Result<TenantTransaction, StoreError> {
        match self {
            Database::Postgres(pg) => pg.tenant_transaction(key).await,
            Database::Sqlite(db) => db.begin().await,
        }
    }

    pub(super) fn pool_usage(&self) -> PoolUsage {
        match self {
            Database::Postgres(pg) => pg.pool_usage(),
            Database::Sqlite(db) => db.pool_usage(),
        }
    }

    pub(super) async fn close(&self) {
        match self {
            Database::Postgres(pg) => pg.close_connections().await,
            Database::Sqlite(db) => db.close().await,
        }
    }
}
