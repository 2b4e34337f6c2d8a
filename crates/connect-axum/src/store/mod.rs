//! The tenant store: installations keyed by `clientKey` and the tenant-scoped app data, with one
//! API over two backends (Postgres in production, embedded SQLite by default).

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::{Migration, Migrator};

mod cache;
mod forge;
mod postgres;
mod query;
mod rows;
mod secrets;
mod sqlite;
mod transaction;

pub use crate::protocol::SharedSecret;
pub use cache::CachedStore;
pub use forge::{EventOutcome, ForgeInstallation, ForgeSaved, QueuedEvent, StoredSystemToken};
pub use postgres::{APP_ROLE, PgStore};
use query::{Db, RegistryTx};
pub use secrets::{Keyring, OpenError, Sealed};
pub use sqlite::SqliteStore;
pub use transaction::{Bind, Row, Statement, TenantTransaction};

/// The id of a tenant (an installation of the app on one site), whichever door it came in by:
/// the `clientKey` of a Connect install, or for a tenant born of a Forge installation the
/// `installationId` it was first installed with (its current one is
/// [`Installation::installation_id`]). Every store method, row-level-security policy, cache,
/// purge and background job takes this one type.
///
/// Made only from a verified token or a verified lifecycle payload, so a store call on tenant
/// data cannot take a key from a path, a query or a body.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ClientKey(String);

impl ClientKey {
    pub(crate) fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An installation as the `installed` lifecycle payload describes it; it serializes with the
/// payload's names, without the sharedSecret.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Installation {
    pub client_key: ClientKey,
    #[serde(rename = "key")]
    pub app_key: String,
    #[serde(skip)]
    pub shared_secret: SharedSecret,
    pub base_url: String,
    pub display_url: Option<String>,
    pub product_type: Option<String>,
    pub description: Option<String>,
    pub server_version: Option<String>,
    pub plugins_version: Option<String>,
    pub oauth_client_id: Option<String>,
    pub service_entitlement_number: Option<String>,
    pub cloud_id: Option<String>,
    pub installation_id: Option<String>,
}

#[cfg(test)]
impl Installation {
    /// The installation of tenant `client_key` with only the required fields.
    pub(crate) fn for_tests(client_key: &str, secret: &str) -> Self {
        Self {
            client_key: ClientKey::new(client_key),
            app_key: "app".into(),
            shared_secret: SharedSecret::new(secret),
            base_url: format!("https://{client_key}.atlassian.net"),
            display_url: None,
            product_type: None,
            description: None,
            server_version: None,
            plugins_version: None,
            oauth_client_id: None,
            service_entitlement_number: None,
            cloud_id: None,
            installation_id: None,
        }
    }
}

/// Which door a tenant came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A Connect install (`/installed`), Connect-on-Forge included.
    Connect,
    /// A Forge installation (`avi:forge:installed:app`) with no Connect install behind it.
    Forge,
}

impl Origin {
    fn parse(stored: &str) -> Self {
        if stored == "forge" {
            Origin::Forge
        } else {
            Origin::Connect
        }
    }
}

/// A stored tenant: its installation and its state.
#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub installation: Installation,
    pub origin: Origin,
    /// `app.apiBaseUrl` of the latest verified Forge install or trigger: where product calls
    /// with a Forge token go.
    pub api_base_url: Option<String>,
    /// `app.appVersion` of the latest verified Forge install or upgrade.
    pub app_version: Option<String>,
    pub enabled: bool,
    pub installed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub uninstalled_at: Option<DateTime<Utc>>,
}

impl TenantRecord {
    /// Installed and not uninstalled since.
    pub fn is_installed(&self) -> bool {
        self.uninstalled_at.is_none()
    }
}

/// The signed lifecycle token a hook was verified with. A tenant remembers the newest one
/// applied, and refuses one that is not newer: a replay, or an older install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleToken {
    /// `iat`.
    pub issued_at: i64,
    /// `exp`: the id is remembered until well after it.
    pub expires_at: i64,
    /// `jti`, or the SHA-256 of the whole token when it has none.
    pub id: String,
}

/// How long past its `exp` a lifecycle token's id is remembered: longer than any clock leeway.
pub const LIFECYCLE_TOKEN_MEMORY_SECS: i64 = 60 * 60;

/// What became of an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The tenant was saved.
    Saved,
    /// Nothing changed: the token was applied to the tenant before (a replay), or is older
    /// (`iat`) than the last one applied.
    Stale,
    /// Nothing changed: another installed tenant holds the install's Forge `installationId`.
    InstallationIdTaken,
}

/// A tenant removed for good once its retention after uninstalling ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    pub client_key: ClientKey,
    pub uninstalled_at: DateTime<Utc>,
}

/// Where a realm migration stands; stored and answered as its text (`ready-to-commit`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    Scheduled,
    InProgress,
    ReadyToCommit,
    Committed,
    RolledBack,
    Failed,
}

impl MigrationState {
    const ALL: [MigrationState; 6] = [
        MigrationState::Scheduled,
        MigrationState::InProgress,
        MigrationState::ReadyToCommit,
        MigrationState::Committed,
        MigrationState::RolledBack,
        MigrationState::Failed,
    ];

    /// The state as the migration service and the store name it.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::Scheduled => "scheduled",
            MigrationState::InProgress => "in-progress",
            MigrationState::ReadyToCommit => "ready-to-commit",
            MigrationState::Committed => "committed",
            MigrationState::RolledBack => "rolled-back",
            MigrationState::Failed => "failed",
        }
    }

    /// Whether data may have moved and the way back is still needed: such a migration must be
    /// committed or rolled back before another is scheduled.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            MigrationState::InProgress | MigrationState::ReadyToCommit | MigrationState::Failed
        )
    }
}

impl fmt::Display for MigrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MigrationState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a realm migration state"))
    }
}

/// A tenant's data residency migration, as the migration service drives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmMigration {
    pub migration_id: String,
    /// The realm the data moves to, e.g. `EU`.
    pub location: String,
    /// Where the data was before the move (`None`: the realm it was installed in).
    pub previous_location: Option<String>,
    pub state: MigrationState,
    /// Why it failed, as the migration service's codes (`E0001`…).
    pub error_code: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
}

/// Storage of tenants and their data. Every method on tenant data takes the tenant's
/// [`ClientKey`] and touches only that tenant's rows.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Checks that the store answers.
    async fn ping(&self) -> sqlx::Result<()>;

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
    ) -> sqlx::Result<SaveOutcome>;

    /// Finds a tenant by the key a token claims, whatever its state.
    async fn find_tenant(&self, client_key: &str) -> sqlx::Result<Option<Arc<TenantRecord>>>;

    /// Every tenant's client key, whatever its state.
    async fn client_keys(&self) -> sqlx::Result<Vec<String>>;

    /// Finds the installed tenant whose Connect-on-Forge install stored this `installationId`
    /// (at most one installed tenant holds an id).
    async fn find_tenant_by_installation_id(
        &self,
        installation_id: &str,
    ) -> sqlx::Result<Option<Arc<TenantRecord>>>;

    /// Installed tenants of the site with this cloud id as a verified invocation token gave it
    /// (never as a Connect install body claimed it), of `product` when given (a tenant that
    /// stored no product type counts as any); at most two: more than one is ambiguous.
    async fn find_installed_by_cloud_id(
        &self,
        cloud_id: &str,
        product: Option<&str>,
    ) -> sqlx::Result<Vec<Arc<TenantRecord>>>;

    /// Every tenant, by client key.
    async fn list_tenants(&self) -> sqlx::Result<Vec<Arc<TenantRecord>>>;

    /// Marks a tenant uninstalled, keeping its data for the retention window; false when there is
    /// no such tenant, or `token` is a replay or older than the last one applied.
    async fn mark_uninstalled(&self, key: &ClientKey, token: &LifecycleToken)
    -> sqlx::Result<bool>;

    /// Seals every sharedSecret not sealed with the keyring's current key (older keys, or plain
    /// text from before sealing) with it; returns how many were sealed again.
    async fn reencrypt_secrets(&self) -> sqlx::Result<u64>;

    /// Deletes every tenant uninstalled before `before`, with all its data, and forgets the
    /// lifecycle tokens that can no longer be replayed.
    async fn purge_uninstalled(&self, before: DateTime<Utc>) -> sqlx::Result<Vec<Purged>>;

    /// Sets a tenant's enabled flag, unless `token` was applied to the tenant before (a replay)
    /// or is older (`iat`) than the last lifecycle token applied; false when nothing changed
    /// (also when there is no such tenant).
    async fn set_enabled(
        &self,
        key: &ClientKey,
        enabled: bool,
        token: &LifecycleToken,
    ) -> sqlx::Result<bool>;

    /// Installed tenants whose personal data report is due at `now` (never reported, or due).
    async fn personal_data_due(&self, now: DateTime<Utc>) -> sqlx::Result<Vec<ClientKey>>;

    /// Records a tenant's report (`reported_at`, when one was made) and when the next is due.
    async fn set_personal_data_due(
        &self,
        key: &ClientKey,
        reported_at: Option<DateTime<Utc>>,
        next_due_at: DateTime<Utc>,
    ) -> sqlx::Result<()>;

    /// The tenant's realm migration, if one was ever scheduled.
    async fn realm_migration(&self, key: &ClientKey) -> sqlx::Result<Option<RealmMigration>>;

    /// Records the tenant's realm migration (replacing an earlier one).
    async fn save_realm_migration(
        &self,
        key: &ClientKey,
        migration: &RealmMigration,
    ) -> sqlx::Result<()>;

    /// A transaction on `key`'s rows, for an app's own tables: one SQL text for both backends,
    /// and on Postgres row-level security admits only `key`'s rows in it.
    async fn tenant_transaction(&self, key: &ClientKey) -> sqlx::Result<TenantTransaction>;

    /// Installs or revives the tenant of a verified Forge installation: the one holding its
    /// `installationId`, else the one site and product its cloud id names (a reinstall that
    /// brought a new id, or a Connect tenant installed without one), else a new tenant keyed by
    /// the id. Refused like [`save_tenant`](Self::save_tenant) for a replayed or older token.
    async fn save_forge_installation(
        &self,
        installation: &ForgeInstallation,
        token: &LifecycleToken,
    ) -> sqlx::Result<ForgeSaved>;

    /// Records the permissions (JSON) of the tenant's latest Forge upgrade.
    async fn save_forge_permissions(&self, key: &ClientKey, permissions: &str) -> sqlx::Result<()>;

    /// Stores the app's system token for the tenant, sealed, unless the stored one came with a
    /// later invocation token (`issued_at`, the FIT's `iat`); true when stored.
    async fn save_system_token(
        &self,
        key: &ClientKey,
        token: &crate::protocol::ForgeToken,
        api_base_url: &str,
        expires_at: DateTime<Utc>,
        issued_at: i64,
    ) -> sqlx::Result<bool>;

    /// The tenant's stored system token, whether or not it has expired.
    async fn system_token(&self, key: &ClientKey) -> sqlx::Result<Option<StoredSystemToken>>;

    /// Queues a trigger delivery for the app's handlers; false when it is queued already (a
    /// redelivery).
    async fn enqueue_forge_event(
        &self,
        key: &ClientKey,
        id: &str,
        event_type: &str,
        body: &str,
    ) -> sqlx::Result<bool>;

    /// Takes up to `limit` queued events due at `now`, each held until `lease_until` (taken
    /// again then if its run never finishes).
    async fn claim_forge_events(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> sqlx::Result<Vec<QueuedEvent>>;

    /// Records what a run of a taken event came to.
    async fn finish_forge_event(
        &self,
        event: &QueuedEvent,
        outcome: &EventOutcome,
    ) -> sqlx::Result<()>;

    /// How many queued events are not done.
    async fn forge_events_pending(&self) -> sqlx::Result<u64>;

    /// Forgets events done before `done_before`; a redelivery after that runs again.
    async fn prune_forge_events(&self, done_before: DateTime<Utc>) -> sqlx::Result<u64>;
}

/// A store's backend, for SQL that only one backend speaks (for SQL both speak,
/// [`TenantStore::tenant_transaction`]):
///
/// ```no_run
/// # async fn f(store: &dyn connect_axum::store::TenantStore, key: &connect_axum::store::ClientKey) -> sqlx::Result<()> {
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

/// Which backend a `DATABASE_URL` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err("DATABASE_URL must start with postgres://, postgresql:// or sqlite:".to_owned())
        }
    }
}

/// How long a request waits for a pooled Postgres connection by default: a store that cannot
/// be reached is a 503 within 2 s.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

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

/// What an app adds to the store beside the library's: its migrations, one set for each backend
/// (its `sqlx::migrate!` folders) or one set both run, and the tables of its that hold tenant
/// data. The migrations run with the library's as one set, so that each side's applied versions
/// are known to the other and sqlx still refuses a version nobody knows.
#[derive(Debug, Clone, Default)]
pub struct AppMigrations {
    pub postgres: Vec<Migration>,
    pub sqlite: Vec<Migration>,
    /// Tables with a `client_key` column: on Postgres each is put under row-level security after
    /// the migrations (`connect_axum_tenant_table`); on both, a start fails if one lacks the column.
    pub tenant_tables: Vec<String>,
}

impl AppMigrations {
    /// The app's migrations for Postgres and for the embedded store.
    pub fn new(postgres: &Migrator, sqlite: &Migrator) -> Self {
        Self {
            postgres: postgres.iter().cloned().collect(),
            sqlite: sqlite.iter().cloned().collect(),
            tenant_tables: Vec::new(),
        }
    }

    /// One set of migrations, written in the SQL both backends speak, for both.
    pub fn shared(migrations: &Migrator) -> Self {
        Self::new(migrations, migrations)
    }

    /// Declares `table` (with a `client_key` column referencing `tenant`) as tenant data: on
    /// Postgres only the rows of the tenant whose transaction it is are visible in it.
    pub fn tenant_table(mut self, table: impl Into<String>) -> Self {
        self.tenant_tables.push(table.into());
        self
    }
}

/// Why a declared tenant table cannot be one.
#[derive(Debug, thiserror::Error)]
#[error("the tenant table {0:?} does not exist or has no client_key column")]
pub struct NotATenantTable(pub String);

/// The library's migrations and the app's, as one migrator.
///
/// # Errors
/// [`MigrateError::Source`] when an app migration has a library migration's version.
pub(crate) async fn combined_migrator(
    library: &Migrator,
    app: &[Migration],
) -> Result<Migrator, sqlx::migrate::MigrateError> {
    #[derive(Debug)]
    struct Combined(Vec<Migration>);

    impl<'s> sqlx::migrate::MigrationSource<'s> for Combined {
        fn resolve(
            self,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>>
                    + Send
                    + 's,
            >,
        > {
            Box::pin(async move { Ok(self.0) })
        }
    }

    let mut all: Vec<Migration> = library.iter().cloned().collect();
    for migration in app {
        if library.version_exists(migration.version) {
            return Err(sqlx::migrate::MigrateError::Source(
                format!(
                    "the app's migration {} ({}) has the version of one of the library's",
                    migration.version, migration.description
                )
                .into(),
            ));
        }
        all.push(migration.clone());
    }
    all.sort_by_key(|m| m.version);
    Migrator::new(Combined(all)).await
}

/// Library migrations whose text changed after databases applied them: the sample app's tables
/// (`note`, `data_location`) moved to the sample's own migrations, which make them only where they
/// are missing. Each entry is (backend, version, the SHA-384 sqlx recorded for the old text); a
/// database that recorded it is given the new text's checksum, so sqlx's check of every applied
/// migration still holds for everything else.
const REWRITTEN: &[(Backend, i64, &str)] = &[
    (
        Backend::Postgres,
        20261123000001,
        "59b1a83634795202ceede685606c2f38baec1c207a0fb8c62242d487a1e9bc8eb8955253655de05ffb6f3c73467af1b6",
    ),
    (
        Backend::Postgres,
        20261201000001,
        "49b86a6343816d81d10d2841efc555169412e9c13979ef5699c75257da7a38bacf7ad4f515c2348edd3da8e83c704125",
    ),
    (
        Backend::Postgres,
        20261201000003,
        "20ff0add7dd1e431c4f848a8d1e689699c9b40bdee9c4a918b7aeea8173358521450591e3675d80c82118e8f7b4777de",
    ),
    (
        Backend::Sqlite,
        20261123000001,
        "80b96dd6b1d97072b6583ffcabc78f3d3a5afd947d22342f79142df4304c6ac6951d9c407b4517b57bbb4cf2d229f4f2",
    ),
    (
        Backend::Sqlite,
        20261201000003,
        "e67512f4d8f53233919d473332cb7ca06bd4d2cdbaf073daa91c44310b96e42b6c22ef08a945e2597311e4afc48c97b2",
    ),
];

/// The (version, old checksum, new checksum) of each of `backend`'s rewritten migrations.
pub(crate) fn rewritten(backend: Backend, library: &Migrator) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    REWRITTEN
        .iter()
        .filter(|(b, _, _)| *b == backend)
        .filter_map(|(_, version, old)| {
            let new = library.iter().find(|m| m.version == *version)?;
            Some((*version, hex::decode(old).ok()?, new.checksum.to_vec()))
        })
        .collect()
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `DATABASE_URL` names no backend.
    #[error("{0}")]
    Url(String),
    /// The database refused, or a migration failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
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

/// The columns of an [`Installation`], in the order [`bind_installation`] binds them.
const INSTALLATION_COLUMNS: [&str; 13] = [
    "client_key",
    "app_key",
    "shared_secret",
    "base_url",
    "display_url",
    "product_type",
    "description",
    "server_version",
    "plugins_version",
    "oauth_client_id",
    "service_entitlement_number",
    "cloud_id",
    "installation_id",
];

/// Binds an installation's [`INSTALLATION_COLUMNS`], its secret as `sealed`.
fn bind_installation<'t>(
    statement: query::Statement<'t>,
    t: &'t Installation,
    sealed: &'t str,
) -> query::Statement<'t> {
    statement
        .bind(t.client_key.as_str())
        .bind(&t.app_key)
        .bind(sealed)
        .bind(&t.base_url)
        .bind(&t.display_url)
        .bind(&t.product_type)
        .bind(&t.description)
        .bind(&t.server_version)
        .bind(&t.plugins_version)
        .bind(&t.oauth_client_id)
        .bind(&t.service_entitlement_number)
        .bind(&t.cloud_id)
        .bind(&t.installation_id)
}

/// The columns of a tenant, as [`TenantRow`] reads them.
static SELECT_TENANT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "select {}, enabled, installed_at, updated_at, uninstalled_at, secret_key_id, origin, \
         api_base_url, app_version from tenant",
        INSTALLATION_COLUMNS.join(", ")
    )
});

/// The upsert of an install: [`INSTALLATION_COLUMNS`] (`$1` to `$n`), then `installed_at` and
/// `updated_at` (`$n+1`, `$n+2`), `secret_key_id` (`$n+3`) and `lifecycle_iat` (`$n+4`). A tenant
/// installed again keeps its `installed_at`; a token older than the last one applied changes
/// nothing.
static SAVE_TENANT: LazyLock<String> = LazyLock::new(|| {
    let n = INSTALLATION_COLUMNS.len();
    let placeholders: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    let updates: Vec<String> = INSTALLATION_COLUMNS
        .iter()
        .filter(|&&c| c != "client_key")
        .map(|c| match *c {
            // A cloud id a verified invocation token gave is kept against an install body's claim.
            "cloud_id" => "cloud_id = case when tenant.cloud_id_verified then tenant.cloud_id \
                           else excluded.cloud_id end"
                .to_owned(),
            c => format!("{c} = excluded.{c}"),
        })
        .collect();
    format!(
        "insert into tenant ({}, enabled, installed_at, updated_at, uninstalled_at, \
         secret_key_id, lifecycle_iat) \
         values ({}, true, ${}, ${}, null, ${}, ${}) \
         on conflict (client_key) do update set {}, \
         enabled = true, updated_at = excluded.updated_at, uninstalled_at = null, \
         secret_key_id = excluded.secret_key_id, lifecycle_iat = excluded.lifecycle_iat \
         where tenant.origin = 'connect' \
         and (tenant.lifecycle_iat is null or tenant.lifecycle_iat <= excluded.lifecycle_iat)",
        INSTALLATION_COLUMNS.join(", "),
        placeholders.join(", "),
        n + 1,
        n + 2,
        n + 3,
        n + 4,
        updates.join(", "),
    )
});

/// A `tenant` row of either backend, its secret still sealed.
#[derive(sqlx::FromRow)]
struct TenantRow {
    client_key: String,
    app_key: String,
    shared_secret: String,
    base_url: String,
    display_url: Option<String>,
    product_type: Option<String>,
    description: Option<String>,
    server_version: Option<String>,
    plugins_version: Option<String>,
    oauth_client_id: Option<String>,
    service_entitlement_number: Option<String>,
    cloud_id: Option<String>,
    installation_id: Option<String>,
    enabled: bool,
    installed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    uninstalled_at: Option<DateTime<Utc>>,
    secret_key_id: Option<String>,
    origin: String,
    api_base_url: Option<String>,
    app_version: Option<String>,
}

impl TenantRow {
    /// The tenant, its sealed secret opened.
    fn open(self, keyring: &Keyring) -> sqlx::Result<Arc<TenantRecord>> {
        let shared_secret = open_secret(
            keyring,
            &self.client_key,
            self.secret_key_id.as_deref(),
            &self.shared_secret,
        )?;
        let installation = Installation {
            client_key: ClientKey::new(self.client_key),
            app_key: self.app_key,
            shared_secret,
            base_url: self.base_url,
            display_url: self.display_url,
            product_type: self.product_type,
            description: self.description,
            server_version: self.server_version,
            plugins_version: self.plugins_version,
            oauth_client_id: self.oauth_client_id,
            service_entitlement_number: self.service_entitlement_number,
            cloud_id: self.cloud_id,
            installation_id: self.installation_id,
        };
        Ok(Arc::new(TenantRecord {
            installation,
            origin: Origin::parse(&self.origin),
            api_base_url: self.api_base_url,
            app_version: self.app_version,
            enabled: self.enabled,
            installed_at: self.installed_at,
            updated_at: self.updated_at,
            uninstalled_at: self.uninstalled_at,
        }))
    }
}

/// A `realm_migration` row, its state still text.
#[derive(sqlx::FromRow)]
struct RealmMigrationRow {
    migration_id: String,
    location: String,
    previous_location: Option<String>,
    state: String,
    error_code: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
}

impl TryFrom<RealmMigrationRow> for RealmMigration {
    type Error = sqlx::Error;

    fn try_from(row: RealmMigrationRow) -> sqlx::Result<Self> {
        Ok(RealmMigration {
            migration_id: row.migration_id,
            location: row.location,
            previous_location: row.previous_location,
            state: row
                .state
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            error_code: row.error_code,
            start_time: row.start_time,
            end_time: row.end_time,
        })
    }
}

/// A tenant whose stored sharedSecret does not open: sealed with a key not configured, corrupt,
/// or plain text that is not allowed. Store reads fail with it as an [`sqlx::Error::Decode`].
#[derive(Debug, thiserror::Error)]
#[error("the sharedSecret of tenant {client_key:?}: {source}")]
pub struct UnreadableSecret {
    pub client_key: String,
    #[source]
    pub source: OpenError,
}

impl UnreadableSecret {
    /// The unreadable secret a store error is about, if that is what it is.
    pub fn of(e: &sqlx::Error) -> Option<&Self> {
        match e {
            sqlx::Error::Decode(e) => e.downcast_ref(),
            _ => None,
        }
    }
}

/// Opens a stored secret; one that does not open is an [`UnreadableSecret`] naming the tenant,
/// never the secret.
pub(crate) fn open_secret(
    keyring: &Keyring,
    client_key: &str,
    key_id: Option<&str>,
    stored: &str,
) -> sqlx::Result<SharedSecret> {
    keyring.open(client_key, key_id, stored).map_err(|source| {
        sqlx::Error::Decode(Box::new(UnreadableSecret {
            client_key: client_key.to_owned(),
            source,
        }))
    })
}

/// How many connections `pool` holds.
fn pool_usage<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> PoolUsage {
    PoolUsage {
        open: pool.size(),
        idle: pool.num_idle() as u32,
        max: pool.options().get_max_connections(),
    }
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
    ) -> impl std::future::Future<Output = sqlx::Result<TenantTransaction>> + Send;
}

#[async_trait]
impl<B: SqlBackend> TenantStore for B {
    async fn ping(&self) -> sqlx::Result<()> {
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
    ) -> sqlx::Result<SaveOutcome> {
        self.registry().save_tenant(tenant, token).await
    }

    async fn find_tenant(&self, client_key: &str) -> sqlx::Result<Option<Arc<TenantRecord>>> {
        self.registry().find_tenant(client_key).await
    }

    async fn client_keys(&self) -> sqlx::Result<Vec<String>> {
        self.registry().client_keys().await
    }

    async fn find_tenant_by_installation_id(
        &self,
        installation_id: &str,
    ) -> sqlx::Result<Option<Arc<TenantRecord>>> {
        self.registry()
            .find_tenant_by_installation_id(installation_id)
            .await
    }

    async fn find_installed_by_cloud_id(
        &self,
        cloud_id: &str,
        product: Option<&str>,
    ) -> sqlx::Result<Vec<Arc<TenantRecord>>> {
        self.registry()
            .find_installed_by_cloud_id(cloud_id, product)
            .await
    }

    async fn list_tenants(&self) -> sqlx::Result<Vec<Arc<TenantRecord>>> {
        self.registry().list_tenants().await
    }

    async fn mark_uninstalled(
        &self,
        key: &ClientKey,
        token: &LifecycleToken,
    ) -> sqlx::Result<bool> {
        self.registry().mark_uninstalled(key, token).await
    }

    async fn reencrypt_secrets(&self) -> sqlx::Result<u64> {
        self.registry().reencrypt_secrets().await
    }

    async fn purge_uninstalled(&self, before: DateTime<Utc>) -> sqlx::Result<Vec<Purged>> {
        self.registry().purge_uninstalled(before).await
    }

    async fn set_enabled(
        &self,
        key: &ClientKey,
        enabled: bool,
        token: &LifecycleToken,
    ) -> sqlx::Result<bool> {
        self.registry().set_enabled(key, enabled, token).await
    }

    async fn personal_data_due(&self, now: DateTime<Utc>) -> sqlx::Result<Vec<ClientKey>> {
        self.registry().personal_data_due(now).await
    }

    async fn set_personal_data_due(
        &self,
        key: &ClientKey,
        reported_at: Option<DateTime<Utc>>,
        next_due_at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        self.registry()
            .set_personal_data_due(key, reported_at, next_due_at)
            .await
    }

    async fn realm_migration(&self, key: &ClientKey) -> sqlx::Result<Option<RealmMigration>> {
        self.registry().realm_migration(key).await
    }

    async fn save_realm_migration(
        &self,
        key: &ClientKey,
        migration: &RealmMigration,
    ) -> sqlx::Result<()> {
        self.registry().save_realm_migration(key, migration).await
    }

    async fn tenant_transaction(&self, key: &ClientKey) -> sqlx::Result<TenantTransaction> {
        SqlBackend::tenant_transaction(self, key).await
    }

    async fn save_forge_installation(
        &self,
        installation: &ForgeInstallation,
        token: &LifecycleToken,
    ) -> sqlx::Result<ForgeSaved> {
        self.registry()
            .save_forge_installation(installation, token)
            .await
    }

    async fn save_forge_permissions(&self, key: &ClientKey, permissions: &str) -> sqlx::Result<()> {
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
    ) -> sqlx::Result<bool> {
        self.registry()
            .save_system_token(key, token, api_base_url, expires_at, issued_at)
            .await
    }

    async fn system_token(&self, key: &ClientKey) -> sqlx::Result<Option<StoredSystemToken>> {
        self.registry().system_token(key).await
    }

    async fn enqueue_forge_event(
        &self,
        key: &ClientKey,
        id: &str,
        event_type: &str,
        body: &str,
    ) -> sqlx::Result<bool> {
        self.registry()
            .enqueue_forge_event(key, id, event_type, body)
            .await
    }

    async fn claim_forge_events(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> sqlx::Result<Vec<QueuedEvent>> {
        self.registry()
            .claim_forge_events(now, lease_until, limit)
            .await
    }

    async fn finish_forge_event(
        &self,
        event: &QueuedEvent,
        outcome: &EventOutcome,
    ) -> sqlx::Result<()> {
        self.registry().finish_forge_event(event, outcome).await
    }

    async fn forge_events_pending(&self) -> sqlx::Result<u64> {
        self.registry().forge_events_pending().await
    }

    async fn prune_forge_events(&self, done_before: DateTime<Utc>) -> sqlx::Result<u64> {
        self.registry().prune_forge_events(done_before).await
    }
}

/// The registry of one store: the SQL both backends share, written once in the dialect common to
/// Postgres and SQLite.
///
/// Statements on tenant data run in the backend's tenant transaction, which on Postgres puts
/// row-level security in force for that one tenant.
#[derive(Clone, Copy)]
struct Registry<'s> {
    db: Db<'s>,
    keyring: &'s Keyring,
}

impl Registry<'_> {
    async fn ping(self) -> sqlx::Result<()> {
        self.db.query("select 1").execute().await.map(|_| ())
    }

    async fn save_tenant(
        self,
        t: &Installation,
        token: &LifecycleToken,
    ) -> sqlx::Result<SaveOutcome> {
        let now = now();
        let sealed = self.keyring.seal(t.client_key.as_str(), &t.shared_secret);
        let mut tx = self.db.begin().await?;
        let saved = bind_installation(tx.query(&SAVE_TENANT), t, &sealed.ciphertext)
            .bind(now)
            .bind(now)
            .bind(&sealed.key_id)
            .bind(token.issued_at)
            .execute()
            .await;
        let saved = match saved {
            // The only unique index the upsert can break: another installed tenant's
            // installationId.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Ok(SaveOutcome::InstallationIdTaken);
            }
            saved => saved?,
        };
        if saved == 0 || !remember_token(&mut tx, &t.client_key, token).await? {
            return Ok(SaveOutcome::Stale);
        }
        tx.commit().await?;
        Ok(SaveOutcome::Saved)
    }

    async fn find_tenant(self, client_key: &str) -> sqlx::Result<Option<Arc<TenantRecord>>> {
        let sql = format!("{} where client_key = $1", *SELECT_TENANT);
        self.db
            .query(&sql)
            .bind(client_key)
            .fetch_optional::<TenantRow>()
            .await?
            .map(|row| row.open(self.keyring))
            .transpose()
    }

    async fn find_tenant_by_installation_id(
        self,
        installation_id: &str,
    ) -> sqlx::Result<Option<Arc<TenantRecord>>> {
        let sql = format!(
            "{} where installation_id = $1 and uninstalled_at is null",
            *SELECT_TENANT
        );
        self.db
            .query(&sql)
            .bind(installation_id)
            .fetch_optional::<TenantRow>()
            .await?
            .map(|row| row.open(self.keyring))
            .transpose()
    }

    async fn client_keys(self) -> sqlx::Result<Vec<String>> {
        let keys: Vec<(String,)> = self
            .db
            .query("select client_key from tenant")
            .fetch_all()
            .await?;
        Ok(keys.into_iter().map(|(key,)| key).collect())
    }

    async fn find_installed_by_cloud_id(
        self,
        cloud_id: &str,
        product: Option<&str>,
    ) -> sqlx::Result<Vec<Arc<TenantRecord>>> {
        let sql = format!(
            "{} where cloud_id = $1 and cloud_id_verified and uninstalled_at is null \
             and ($2 is null or product_type is null or product_type = $2) \
             order by client_key limit 2",
            *SELECT_TENANT
        );
        self.db
            .query(&sql)
            .bind(cloud_id)
            .bind(product)
            .fetch_all::<TenantRow>()
            .await?
            .into_iter()
            .map(|row| row.open(self.keyring))
            .collect()
    }

    async fn list_tenants(self) -> sqlx::Result<Vec<Arc<TenantRecord>>> {
        let sql = format!("{} order by client_key", *SELECT_TENANT);
        self.db
            .query(&sql)
            .fetch_all::<TenantRow>()
            .await?
            .into_iter()
            .map(|row| row.open(self.keyring))
            .collect()
    }

    async fn mark_uninstalled(self, key: &ClientKey, token: &LifecycleToken) -> sqlx::Result<bool> {
        let now = now();
        let mut tx = self.db.begin().await?;
        let done = tx
            .query(
                "update tenant set uninstalled_at = coalesce(uninstalled_at, $2), updated_at = $3, \
                 lifecycle_iat = $4 where client_key = $1 \
                 and (lifecycle_iat is null or lifecycle_iat <= $4)",
            )
            .bind(key.as_str())
            .bind(now)
            .bind(now)
            .bind(token.issued_at)
            .execute()
            .await?;
        if done == 0 || !remember_token(&mut tx, key, token).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn reencrypt_secrets(self) -> sqlx::Result<u64> {
        let rows: Vec<(String, String, Option<String>)> = self
            .db
            .query(
                "select client_key, shared_secret, secret_key_id from tenant \
                 where (secret_key_id is null and $2) or secret_key_id <> $1 order by client_key",
            )
            .bind(self.keyring.current_id())
            .bind(self.keyring.allows_plaintext())
            .fetch_all()
            .await?;
        let mut sealed_again = 0;
        for (client_key, stored, key_id) in rows {
            let secret = open_secret(self.keyring, &client_key, key_id.as_deref(), &stored)?;
            let sealed = self.keyring.seal(&client_key, &secret);
            // Only if no install replaced the secret since it was read.
            sealed_again += self
                .db
                .query(
                    "update tenant set shared_secret = $1, secret_key_id = $2 \
                     where client_key = $3 and shared_secret = $4",
                )
                .bind(&sealed.ciphertext)
                .bind(&sealed.key_id)
                .bind(&client_key)
                .bind(&stored)
                .execute()
                .await?;
        }
        Ok(sealed_again)
    }

    async fn purge_uninstalled(self, before: DateTime<Utc>) -> sqlx::Result<Vec<Purged>> {
        let due: Vec<(String, DateTime<Utc>)> = self
            .db
            .query(
                "select client_key, uninstalled_at from tenant \
                 where uninstalled_at is not null and uninstalled_at < $1 order by client_key",
            )
            .bind(before)
            .fetch_all()
            .await?;
        self.db
            .query("delete from lifecycle_token where expires_at < $1")
            .bind(now().timestamp())
            .execute()
            .await?;
        let mut purged = Vec::with_capacity(due.len());
        for (client_key, uninstalled_at) in due {
            let key = ClientKey::new(client_key);
            let mut tx = self.db.begin_tenant(&key).await?;
            // A reinstall since the tenant was listed cancels its purge.
            let gone = tx
                .query(
                    "delete from tenant where client_key = $1 and uninstalled_at is not null \
                     and uninstalled_at < $2",
                )
                .bind(key.as_str())
                .bind(before)
                .execute()
                .await?;
            if gone == 0 {
                tx.rollback().await?;
                continue;
            }
            tx.commit().await?;
            purged.push(Purged {
                client_key: key,
                uninstalled_at,
            });
        }
        Ok(purged)
    }

    async fn set_enabled(
        self,
        key: &ClientKey,
        enabled: bool,
        token: &LifecycleToken,
    ) -> sqlx::Result<bool> {
        let mut tx = self.db.begin().await?;
        let done = tx
            .query(
                "update tenant set enabled = $2, updated_at = $3, lifecycle_iat = $4 \
                 where client_key = $1 and (lifecycle_iat is null or lifecycle_iat <= $4)",
            )
            .bind(key.as_str())
            .bind(enabled)
            .bind(now())
            .bind(token.issued_at)
            .execute()
            .await?;
        if done == 0 || !remember_token(&mut tx, key, token).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn realm_migration(self, key: &ClientKey) -> sqlx::Result<Option<RealmMigration>> {
        self.db
            .query(
                "select migration_id, location, previous_location, state, error_code, \
                 start_time, end_time from realm_migration where client_key = $1",
            )
            .bind(key.as_str())
            .fetch_optional::<RealmMigrationRow>()
            .await?
            .map(RealmMigration::try_from)
            .transpose()
    }

    async fn save_realm_migration(self, key: &ClientKey, m: &RealmMigration) -> sqlx::Result<()> {
        self.db
            .query(
                "insert into realm_migration (client_key, migration_id, location, \
                 previous_location, state, error_code, start_time, end_time, updated_at) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict (client_key) do update set \
                 migration_id = excluded.migration_id, location = excluded.location, \
                 previous_location = excluded.previous_location, state = excluded.state, \
                 error_code = excluded.error_code, start_time = excluded.start_time, \
                 end_time = excluded.end_time, updated_at = excluded.updated_at",
            )
            .bind(key.as_str())
            .bind(&m.migration_id)
            .bind(&m.location)
            .bind(&m.previous_location)
            .bind(m.state.as_str())
            .bind(&m.error_code)
            .bind(&m.start_time)
            .bind(&m.end_time)
            .bind(now())
            .execute()
            .await?;
        Ok(())
    }

    async fn personal_data_due(self, now: DateTime<Utc>) -> sqlx::Result<Vec<ClientKey>> {
        let keys: Vec<(String,)> = self
            .db
            .query(
                "select t.client_key from tenant t \
                 left join personal_data_report r on r.client_key = t.client_key \
                 where t.uninstalled_at is null and t.origin = 'connect' and (r.next_due_at is null or r.next_due_at <= $1) \
                 order by t.client_key",
            )
            .bind(now)
            .fetch_all()
            .await?;
        Ok(keys.into_iter().map(|(key,)| ClientKey::new(key)).collect())
    }

    async fn set_personal_data_due(
        self,
        key: &ClientKey,
        reported_at: Option<DateTime<Utc>>,
        next_due_at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        self.db
            .query(
                "insert into personal_data_report (client_key, last_reported_at, next_due_at) \
                 values ($1, $2, $3) on conflict (client_key) do update set \
                 last_reported_at = coalesce(excluded.last_reported_at, personal_data_report.last_reported_at), \
                 next_due_at = excluded.next_due_at",
            )
            .bind(key.as_str())
            .bind(reported_at)
            .bind(next_due_at)
            .execute()
            .await?;
        Ok(())
    }
}

/// Records that `token` was applied to the tenant; false if it had been already.
async fn remember_token(
    tx: &mut RegistryTx,
    key: &ClientKey,
    token: &LifecycleToken,
) -> sqlx::Result<bool> {
    let fresh = tx
        .query(
            "insert into lifecycle_token (client_key, token_id, expires_at) \
             values ($1, $2, $3) on conflict do nothing",
        )
        .bind(key.as_str())
        .bind(&token.id)
        .bind(token.expires_at.saturating_add(LIFECYCLE_TOKEN_MEMORY_SECS))
        .execute()
        .await?;
    Ok(fresh > 0)
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
