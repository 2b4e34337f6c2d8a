//! The tenant store: installations keyed by `clientKey` and the tenant-scoped app data, with one
//! API over two backends (Postgres in production, embedded SQLite by default).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

mod cache;
mod error;
mod forge;
mod migrate;
mod model;
mod options;
mod postgres;
mod query;
mod registry;
mod rows;
mod secrets;
mod sqlite;
mod transaction;

pub use crate::config::{Backend, DEFAULT_ACQUIRE_TIMEOUT};
pub use crate::protocol::SharedSecret;
pub use cache::CachedStore;
pub use error::{DatabaseError, StoreError};
pub use forge::{EventOutcome, ForgeInstallation, ForgeSaved, QueuedEvent, StoredSystemToken};
pub use migrate::{AppMigrations, NotATenantTable};
pub(crate) use migrate::{combined_migrator, rewritten};
pub use model::{
    ClientKey, Installation, LIFECYCLE_TOKEN_MEMORY_SECS, LifecycleToken, MigrationState, Origin,
    Purged, RealmMigration, SaveOutcome, TenantRecord,
};
pub use postgres::{APP_ROLE, PgStore};
use query::{Db, RegistryTx};
pub use registry::UnreadableSecret;
use registry::{Registry, pool_usage, remember_token};
pub use secrets::{Keyring, OpenError, Sealed};
pub use sqlite::SqliteStore;
pub use transaction::{Bind, Row, Statement, TenantTransaction};

/// Storage of tenants and their data. Every method on tenant data takes the tenant's
/// [`ClientKey`] and touches only that tenant's rows.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// How many connections the pool holds.
    fn pool_usage(&self) -> PoolUsage;

    /// The backend itself, for an app's own SQL on its own tables: run it in the backend's
    /// `tenant_transaction` (on Postgres, row-level security in force for that tenant).
    fn database(&self) -> Database;

    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);

    /// Inserts or replaces a tenant (a reinstall rotates its secret), marking it installed and
    /// enabled, unless `token` was applied to the tenant before (a replay) or is older (`iat`)
    /// than the last one applied, or another installed tenant holds its `installationId`.
    async fn save_tenant(
        &self,
        tenant: &Installation,
        token: &LifecycleToken,
    ) -> Result<SaveOutcome, StoreError>;

    /// Finds a tenant by the key a token claims, whatever its state.
    async fn find_tenant(&self, client_key: &str) -> Result<Option<Arc<TenantRecord>>, StoreError>;

    /// Every tenant's client key, whatever its state.
    async fn client_keys(&self) -> Result<Vec<String>, StoreError>;

    /// Finds the installed tenant whose Connect-on-Forge install stored this `installationId`
    /// (at most one installed tenant holds an id).
    async fn find_tenant_by_installation_id(
        &self,
        installation_id: &str,
    ) -> Result<Option<Arc<TenantRecord>>, StoreError>;

    /// Installed tenants of the site with this cloud id as a verified invocation token gave it
    /// (never as a Connect install body claimed it), of `product` when given (a tenant that
    /// stored no product type counts as any); at most two: more than one is ambiguous.
    async fn find_installed_by_cloud_id(
        &self,
        cloud_id: &str,
        product: Option<&str>,
    ) -> Result<Vec<Arc<TenantRecord>>, StoreError>;

    /// Every tenant, by client key.
    async fn list_tenants(&self) -> Result<Vec<Arc<TenantRecord>>, StoreError>;

    /// Marks a tenant uninstalled, keeping its data for the retention window; false when there is
    /// no such tenant, or `token` is a replay or older than the last one applied.
    async fn mark_uninstalled(
        &self,
        key: &ClientKey,
        token: &LifecycleToken,
    ) -> Result<bool, StoreError>;

    /// Seals every sharedSecret not sealed with the keyring's current key (older keys, or plain
    /// text from before sealing) with it; returns how many were sealed again.
    async fn reencrypt_secrets(&self) -> Result<u64, StoreError>;

    /// Deletes every tenant uninstalled before `before`, with all its data, and forgets the
    /// lifecycle tokens that can no longer be replayed.
    async fn purge_uninstalled(&self, before: DateTime<Utc>) -> Result<Vec<Purged>, StoreError>;

    /// Sets a tenant's enabled flag, unless `token` was applied to the tenant before (a replay)
    /// or is older (`iat`) than the last lifecycle token applied; false when nothing changed
    /// (also when there is no such tenant).
    async fn set_enabled(
        &self,
        key: &ClientKey,
        enabled: bool,
        token: &LifecycleToken,
    ) -> Result<bool, StoreError>;

    /// Installed tenants whose personal data report is due at `now` (never reported, or due).
    async fn personal_data_due(&self, now: DateTime<Utc>) -> Result<Vec<ClientKey>, StoreError>;

    /// Records a tenant's report (`reported_at`, when one was made) and when the next is due.
    async fn set_personal_data_due(
        &self,
        key: &ClientKey,
        reported_at: Option<DateTime<Utc>>,
        next_due_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The tenant's realm migration, if one was ever scheduled.
    async fn realm_migration(&self, key: &ClientKey) -> Result<Option<RealmMigration>, StoreError>;

    /// Records the tenant's realm migration (replacing an earlier one).
    async fn save_realm_migration(
        &self,
        key: &ClientKey,
        migration: &RealmMigration,
    ) -> Result<(), StoreError>;

    /// A transaction on `key`'s rows, for an app's own tables: one SQL text for both backends,
    /// and on Postgres row-level security admits only `key`'s rows in it.
    async fn tenant_transaction(&self, key: &ClientKey) -> Result<TenantTransaction, StoreError>;

    /// Installs or revives the tenant of a verified Forge installation: the one holding its
    /// `installationId`, else the one site and product its cloud id names (a reinstall that
    /// brought a new id, or a Connect tenant installed without one), else a new tenant keyed by
    /// the id. Refused like [`save_tenant`](Self::save_tenant) for a replayed or older token.
    async fn save_forge_installation(
        &self,
        installation: &ForgeInstallation,
        token: &LifecycleToken,
    ) -> Result<ForgeSaved, StoreError>;

    /// Records the permissions (JSON) of the tenant's latest Forge upgrade.
    async fn save_forge_permissions(
        &self,
        key: &ClientKey,
        permissions: &str,
    ) -> Result<(), StoreError>;

    /// Stores the app's system token for the tenant, sealed, unless the stored one came with a
    /// later invocation token (`issued_at`, the FIT's `iat`); true when stored.
    async fn save_system_token(
        &self,
        key: &ClientKey,
        token: &crate::protocol::ForgeToken,
        api_base_url: &str,
        expires_at: DateTime<Utc>,
        issued_at: i64,
    ) -> Result<bool, StoreError>;

    /// The tenant's stored system token, whether or not it has expired.
    async fn system_token(&self, key: &ClientKey) -> Result<Option<StoredSystemToken>, StoreError>;

    /// Queues a trigger delivery for the app's handlers; false when it is queued already (a
    /// redelivery).
    async fn enqueue_forge_event(
        &self,
        key: &ClientKey,
        id: &str,
        event_type: &str,
        body: &str,
    ) -> Result<bool, StoreError>;

    /// Takes up to `limit` queued events due at `now`, each held until `lease_until` (taken
    /// again then if its run never finishes).
    async fn claim_forge_events(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<QueuedEvent>, StoreError>;

    /// Records what a run of a taken event came to.
    async fn finish_forge_event(
        &self,
        event: &QueuedEvent,
        outcome: &EventOutcome,
    ) -> Result<(), StoreError>;

    /// How many queued events are not done.
    async fn forge_events_pending(&self) -> Result<u64, StoreError>;

    /// Forgets events done before `done_before`; a redelivery after that runs again.
    async fn prune_forge_events(&self, done_before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// A store's backend, for SQL that only one backend speaks (for SQL both speak,
/// [`TenantStore::tenant_transaction`]):
///
/// ```no_run
/// # async fn f(store: &dyn connect_axum::store::TenantStore, key: &connect_axum::store::ClientKey) -> Result<(), connect_axum::store::StoreError> {
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
    Postgres(Box<PgStore>),
    Sqlite(SqliteStore),
}

/// The current time at the precision both backends keep (microseconds), so a value written
/// reads back equal.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound as _;
    Utc::now().trunc_subsecs(6)
}

/// Connections of a store's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
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
    /// Postgres only: how long a caller waits for a pooled connection, connecting included.
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

/// Connects to the store, runs its migrations, and puts the tenant cache in front of it (kept
/// in step with other replicas through Postgres notifications).
pub async fn connect(options: &StoreOptions) -> Result<Arc<dyn TenantStore>, StoreError> {
    let backend: Backend = options.database_url.parse().map_err(StoreError::Url)?;
    Ok(match backend {
        Backend::Postgres => {
            let store = PgStore::connect(options).await?;
            let cache = CachedStore::new(Arc::new(store.clone()), options.tenant_cache_size);
            let on_change = cache.clone();
            store
                .listen_for_changes(move |key| on_change.forget(key))
                .await?;
            // After listening: a tenant made meanwhile is in the load or in a notification.
            cache.load_known_keys().await?;
            Arc::new(cache)
        }
        Backend::Sqlite => {
            let store = SqliteStore::connect_with_migrations(
                &options.database_url,
                options.pool_size,
                options.keyring.clone(),
                &options.app_migrations,
            )
            .await?;
            let cache = CachedStore::new(Arc::new(store), options.tenant_cache_size);
            cache.load_known_keys().await?;
            Arc::new(cache)
        }
    })
}

/// A backend: its registry, its pool, and the store behind it. The one [`TenantStore`]
/// implementation of both backends runs on it.
trait SqlBackend: Send + Sync + 'static {
    fn registry(&self) -> Registry<'_>;
    fn pool_usage(&self) -> PoolUsage;
    fn database(&self) -> Database;
    fn close_pool(&self) -> impl std::future::Future<Output = ()> + Send;
    fn tenant_transaction(
        &self,
        key: &ClientKey,
    ) -> impl std::future::Future<Output = Result<TenantTransaction, StoreError>> + Send;
}

#[async_trait]
impl<B: SqlBackend> TenantStore for B {
    async fn ping(&self) -> Result<(), StoreError> {
        self.registry().ping().await
    }

    fn pool_usage(&self) -> PoolUsage {
        SqlBackend::pool_usage(self)
    }

    fn database(&self) -> Database {
        SqlBackend::database(self)
    }

    async fn close(&self) {
        self.close_pool().await;
    }

    async fn save_tenant(
        &self,
        tenant: &Installation,
        token: &LifecycleToken,
    ) -> Result<SaveOutcome, StoreError> {
        self.registry().save_tenant(tenant, token).await
    }

    async fn find_tenant(&self, client_key: &str) -> Result<Option<Arc<TenantRecord>>, StoreError> {
        self.registry().find_tenant(client_key).await
    }

    async fn client_keys(&self) -> Result<Vec<String>, StoreError> {
        self.registry().client_keys().await
    }

    async fn find_tenant_by_installation_id(
        &self,
        installation_id: &str,
    ) -> Result<Option<Arc<TenantRecord>>, StoreError> {
        self.registry()
            .find_tenant_by_installation_id(installation_id)
            .await
    }

    async fn find_installed_by_cloud_id(
        &self,
        cloud_id: &str,
        product: Option<&str>,
    ) -> Result<Vec<Arc<TenantRecord>>, StoreError> {
        self.registry()
            .find_installed_by_cloud_id(cloud_id, product)
            .await
    }

    async fn list_tenants(&self) -> Result<Vec<Arc<TenantRecord>>, StoreError> {
        self.registry().list_tenants().await
    }

    async fn mark_uninstalled(
        &self,
        key: &ClientKey,
        token: &LifecycleToken,
    ) -> Result<bool, StoreError> {
        self.registry().mark_uninstalled(key, token).await
    }

    async fn reencrypt_secrets(&self) -> Result<u64, StoreError> {
        self.registry().reencrypt_secrets().await
    }

    async fn purge_uninstalled(&self, before: DateTime<Utc>) -> Result<Vec<Purged>, StoreError> {
        self.registry().purge_uninstalled(before).await
    }

    async fn set_enabled(
        &self,
        key: &ClientKey,
        enabled: bool,
        token: &LifecycleToken,
    ) -> Result<bool, StoreError> {
        self.registry().set_enabled(key, enabled, token).await
    }

    async fn personal_data_due(&self, now: DateTime<Utc>) -> Result<Vec<ClientKey>, StoreError> {
        self.registry().personal_data_due(now).await
    }

    async fn set_personal_data_due(
        &self,
        key: &ClientKey,
        reported_at: Option<DateTime<Utc>>,
        next_due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.registry()
            .set_personal_data_due(key, reported_at, next_due_at)
            .await
    }

    async fn realm_migration(&self, key: &ClientKey) -> Result<Option<RealmMigration>, StoreError> {
        self.registry().realm_migration(key).await
    }

    async fn save_realm_migration(
        &self,
        key: &ClientKey,
        migration: &RealmMigration,
    ) -> Result<(), StoreError> {
        self.registry().save_realm_migration(key, migration).await
    }

    async fn tenant_transaction(&self, key: &ClientKey) -> Result<TenantTransaction, StoreError> {
        SqlBackend::tenant_transaction(self, key).await
    }

    async fn save_forge_installation(
        &self,
        installation: &ForgeInstallation,
        token: &LifecycleToken,
    ) -> Result<ForgeSaved, StoreError> {
        self.registry()
            .save_forge_installation(installation, token)
            .await
    }

    async fn save_forge_permissions(
        &self,
        key: &ClientKey,
        permissions: &str,
    ) -> Result<(), StoreError> {
        self.registry()
            .save_forge_permissions(key, permissions)
            .await
    }

    async fn save_system_token(
        &self,
        key: &ClientKey,
        token: &crate::protocol::ForgeToken,
        api_base_url: &str,
        expires_at: DateTime<Utc>,
        issued_at: i64,
    ) -> Result<bool, StoreError> {
        self.registry()
            .save_system_token(key, token, api_base_url, expires_at, issued_at)
            .await
    }

    async fn system_token(&self, key: &ClientKey) -> Result<Option<StoredSystemToken>, StoreError> {
        self.registry().system_token(key).await
    }

    async fn enqueue_forge_event(
        &self,
        key: &ClientKey,
        id: &str,
        event_type: &str,
        body: &str,
    ) -> Result<bool, StoreError> {
        self.registry()
            .enqueue_forge_event(key, id, event_type, body)
            .await
    }

    async fn claim_forge_events(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        self.registry()
            .claim_forge_events(now, lease_until, limit)
            .await
    }

    async fn finish_forge_event(
        &self,
        event: &QueuedEvent,
        outcome: &EventOutcome,
    ) -> Result<(), StoreError> {
        self.registry().finish_forge_event(event, outcome).await
    }

    async fn forge_events_pending(&self) -> Result<u64, StoreError> {
        self.registry().forge_events_pending().await
    }

    async fn prune_forge_events(&self, done_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.registry().prune_forge_events(done_before).await
    }
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
