//! The tenant store: installations keyed by `clientKey` and the tenant-scoped app data, with one
//! API over two backends (Postgres in production, embedded SQLite by default). [`Store`] is the
//! handle; its parts are the tenant registry ([`Tenants`], cached), the Forge records, the event
//! queue, the bookkeeping, and tenant transactions for an app's own SQL.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

mod bookkeeping;
mod cache;
mod database;
mod error;
mod forge;
mod handle;
mod lifecycle;
mod migrate;
mod model;
mod options;
mod postgres;
mod queue;
mod registry;
mod rows;
mod secrets;
mod sqlite;
mod transaction;

pub use crate::config::{Backend, DEFAULT_ACQUIRE_TIMEOUT};
pub use crate::protocol::SharedSecret;
pub use bookkeeping::Bookkeeping;
use cache::TenantCache;
pub use cache::UNKNOWN_KEY_READS_PER_SEC;
pub use database::Database;
pub use error::{DatabaseError, StoreError};
pub use forge::{ForgeInstallation, ForgeRecords, ForgeSaved, StoredSystemToken};
pub use handle::Store;
pub use migrate::{AppMigrations, NotATenantTable};
pub(crate) use migrate::{combined_migrator, rewritten};
pub use model::{
    ClientKey, Installation, LIFECYCLE_TOKEN_MEMORY_SECS, LifecycleToken, MigrationState, Origin,
    Purged, RealmMigration, SaveOutcome, TenantRecord,
};
pub use postgres::{APP_ROLE, PgStore};
pub use queue::{EventOutcome, EventQueue, QueuedEvent};
use registry::Registry;
pub use registry::{Tenants, UnreadableSecret};
pub use secrets::{Keyring, OpenError, Sealed};
pub use sqlite::SqliteStore;
pub use transaction::{Bind, Row, Statement, TenantTransaction};

/// The current time at the precision both backends keep (microseconds), so a value written
/// reads back equal.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound as _;
    Utc::now().trunc_subsecs(6)
}

/// Connections of a store's pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Connections open, idle or in use.
    pub open: u32,
    /// Connections open and idle.
    pub idle: u32,
    /// The most the pools open.
    pub max: u32,
}

impl PoolUsage {
    fn of<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> Self {
        PoolUsage {
            open: pool.size(),
            idle: pool.num_idle() as u32,
            max: pool.options().get_max_connections(),
        }
    }
}

/// How the store is reached.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `postgres://…` or `sqlite:…`: the login the server works as.
    pub database_url: String,
    /// Postgres only: the login that owns the tables and runs the migrations (`None`:
    /// `database_url`'s).
    pub migration_url: Option<String>,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Postgres only: how long a caller waits for a pooled connection, connecting included, and
    /// for the database's first answer in a transaction (the store's own statements, whole).
    pub acquire_timeout: Duration,
    /// Tenants kept in memory.
    pub tenant_cache_size: u64,
    /// Seals sharedSecrets at rest.
    pub keyring: Arc<Keyring>,
    /// The app's own migrations, run with the library's.
    pub app_migrations: AppMigrations,
}

/// Runs the store's migrations, as the migration login on Postgres, and nothing else.
pub async fn migrate(options: &StoreOptions) -> Result<(), StoreError> {
    let backend: Backend = options.database_url.parse().map_err(StoreError::Url)?;
    match backend {
        Backend::Postgres => PgStore::migrate(options).await?,
        Backend::Sqlite => connect(options).await?.close().await,
    }
    Ok(())
}

/// Connects to the store, runs its migrations, and puts the tenant cache in front of its
/// registry (kept in step with other replicas through Postgres notifications).
pub async fn connect(options: &StoreOptions) -> Result<Store, StoreError> {
    let backend: Backend = options.database_url.parse().map_err(StoreError::Url)?;
    let database = match backend {
        Backend::Postgres => Database::Postgres(Box::new(PgStore::connect(options).await?)),
        Backend::Sqlite => Database::Sqlite(
            SqliteStore::connect_with_migrations(
                &options.database_url,
                options.pool_size,
                &options.app_migrations,
            )
            .await?,
        ),
    };
    let registry = Registry {
        db: database.clone(),
        keyring: options.keyring.clone(),
    };
    let cache = TenantCache::new(Arc::new(registry), options.tenant_cache_size);
    if let Database::Postgres(pg) = &database {
        let on_change = cache.clone();
        pg.listen_for_changes(move |key| on_change.forget(key))
            .await?;
    }
    // After listening: a tenant made meanwhile is in the load or in a notification.
    cache.load_known_keys().await?;
    Ok(Store::new(database, options.keyring.clone(), cache))
}

#[cfg(test)]
mod tests {
    use super::MigrationState;

    #[test]
    fn migration_states_are_stored_by_the_names_the_migration_service_uses() {
        for state in MigrationState::ALL {
            assert_eq!(state.as_str().parse::<MigrationState>(), Ok(state));
        }
        assert_eq!(MigrationState::ReadyToCommit.as_str(), "ready-to-commit");
        assert!("done".parse::<MigrationState>().is_err());
        let open: Vec<_> = MigrationState::ALL
            .into_iter()
            .filter(|s| s.is_open())
            .collect();
        assert_eq!(
            open,
            [
                MigrationState::InProgress,
                MigrationState::ReadyToCommit,
                MigrationState::Failed
            ]
        );
    }
}
