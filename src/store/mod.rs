//! The tenant store: installations keyed by `clientKey` and the tenant-scoped app data, with one
//! API over two backends (Postgres in production, embedded SQLite by default).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

mod cache;
mod postgres;
mod sqlite;

pub use cache::CachedStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// The id of a tenant (an installation of the app on one site).
///
/// Made only from a verified token or a verified lifecycle payload, so a store call on tenant
/// data cannot take a key from a path, a query or a body.
#[derive(Clone, PartialEq, Eq, Hash)]
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

/// A tenant's sharedSecret; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret(String);

impl SharedSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for signing and verifying only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An installation as the `installed` lifecycle payload describes it.
#[derive(Debug, Clone)]
pub struct Installation {
    pub client_key: ClientKey,
    pub app_key: String,
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

/// A stored tenant: its installation and its state.
#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub installation: Installation,
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

/// A note attached to a Jira issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    pub id: i64,
    pub issue_key: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub author: Option<String>,
}

/// A note to create.
#[derive(Debug, Clone)]
pub struct NewNote {
    pub issue_key: String,
    pub body: String,
    pub author: Option<String>,
}

/// Storage of tenants and their data. Every method on tenant data takes the tenant's
/// [`ClientKey`] and touches only that tenant's rows.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Checks that the store answers.
    async fn ping(&self) -> sqlx::Result<()>;

    /// How many connections the pool holds.
    fn pool_usage(&self) -> PoolUsage;

    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);

    /// Inserts or replaces a tenant (a reinstall rotates its secret), marking it installed and enabled.
    async fn save_tenant(&self, tenant: &Installation) -> sqlx::Result<()>;

    /// Finds a tenant by the key a token claims, whatever its state.
    async fn find_tenant(&self, client_key: &str) -> sqlx::Result<Option<Arc<TenantRecord>>>;

    /// Every tenant, by client key.
    async fn list_tenants(&self) -> sqlx::Result<Vec<Arc<TenantRecord>>>;

    /// Marks a tenant uninstalled, keeping its data; false when there is no such tenant.
    async fn mark_uninstalled(&self, key: &ClientKey) -> sqlx::Result<bool>;

    /// Sets a tenant's enabled flag; false when there is no such tenant.
    async fn set_enabled(&self, key: &ClientKey, enabled: bool) -> sqlx::Result<bool>;

    /// The tenant's notes on one issue, oldest first.
    async fn list_notes(&self, key: &ClientKey, issue_key: &str) -> sqlx::Result<Vec<Note>>;

    /// Adds a note for the tenant.
    async fn create_note(&self, key: &ClientKey, note: &NewNote) -> sqlx::Result<Note>;

    /// Deletes one of the tenant's notes; false when the tenant has no such note on that issue.
    async fn delete_note(&self, key: &ClientKey, issue_key: &str, id: i64) -> sqlx::Result<bool>;

    /// Deletes all of the tenant's notes on an issue; returns how many there were.
    async fn delete_issue_notes(&self, key: &ClientKey, issue_key: &str) -> sqlx::Result<u64>;
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

/// How the store is reached.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `postgres://…` or `sqlite:…`.
    pub database_url: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Tenants kept in memory.
    pub tenant_cache_size: u64,
}

/// Connects to the store, runs its migrations, and puts the tenant cache in front of it (kept
/// in step with other replicas through Postgres notifications).
pub async fn connect(options: &StoreOptions) -> anyhow::Result<Arc<dyn TenantStore>> {
    let backend: Backend = options.database_url.parse().map_err(anyhow::Error::msg)?;
    Ok(match backend {
        Backend::Postgres => {
            let store = PgStore::connect(&options.database_url, options.pool_size).await?;
            let cache = CachedStore::new(Arc::new(store.clone()), options.tenant_cache_size);
            let on_change = cache.clone();
            store
                .listen_for_changes(move |key| on_change.forget(key))
                .await?;
            Arc::new(cache)
        }
        Backend::Sqlite => {
            let store = SqliteStore::connect(&options.database_url, options.pool_size).await?;
            Arc::new(CachedStore::new(Arc::new(store), options.tenant_cache_size))
        }
    })
}

/// The columns of a tenant, in the order [`tenant_from_row`] reads them.
#[doc(hidden)]
#[macro_export]
macro_rules! SELECT_TENANT {
    () => {
        "select client_key, app_key, shared_secret, base_url, display_url, product_type, \
         description, server_version, plugins_version, oauth_client_id, \
         service_entitlement_number, cloud_id, installation_id, enabled, installed_at, \
         updated_at, uninstalled_at from tenant"
    };
}
pub(crate) use SELECT_TENANT;

/// Reads a tenant row of either backend.
pub(crate) fn tenant_from_row<R>(r: &R) -> sqlx::Result<Arc<TenantRecord>>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> DateTime<Utc>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<DateTime<Utc>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let installation = Installation {
        client_key: ClientKey::new(r.try_get::<String, _>("client_key")?),
        app_key: r.try_get("app_key")?,
        shared_secret: SharedSecret::new(r.try_get::<String, _>("shared_secret")?),
        base_url: r.try_get("base_url")?,
        display_url: r.try_get("display_url")?,
        product_type: r.try_get("product_type")?,
        description: r.try_get("description")?,
        server_version: r.try_get("server_version")?,
        plugins_version: r.try_get("plugins_version")?,
        oauth_client_id: r.try_get("oauth_client_id")?,
        service_entitlement_number: r.try_get("service_entitlement_number")?,
        cloud_id: r.try_get("cloud_id")?,
        installation_id: r.try_get("installation_id")?,
    };
    Ok(Arc::new(TenantRecord {
        installation,
        enabled: r.try_get("enabled")?,
        installed_at: r.try_get("installed_at")?,
        updated_at: r.try_get("updated_at")?,
        uninstalled_at: r.try_get("uninstalled_at")?,
    }))
}

/// The SQL both backends share, written once in the dialect common to Postgres and SQLite.
macro_rules! shared_queries {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::TenantStore for $store {
            async fn ping(&self) -> sqlx::Result<()> {
                sqlx::query("select 1").execute(&self.pool).await.map(|_| ())
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            fn pool_usage(&self) -> $crate::store::PoolUsage {
                $crate::store::PoolUsage {
                    open: self.pool.size(),
                    idle: self.pool.num_idle() as u32,
                    max: self.pool.options().get_max_connections(),
                }
            }

            async fn save_tenant(&self, t: &$crate::store::Installation) -> sqlx::Result<()> {
                let now = $crate::store::now();
                sqlx::query(
                    "insert into tenant (client_key, app_key, shared_secret, base_url, display_url, \
                     product_type, description, server_version, plugins_version, oauth_client_id, \
                     service_entitlement_number, cloud_id, installation_id, enabled, installed_at, \
                     updated_at, uninstalled_at) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, true, $14, $15, null) \
                     on conflict (client_key) do update set app_key = excluded.app_key, \
                     shared_secret = excluded.shared_secret, base_url = excluded.base_url, \
                     display_url = excluded.display_url, product_type = excluded.product_type, \
                     description = excluded.description, server_version = excluded.server_version, \
                     plugins_version = excluded.plugins_version, oauth_client_id = excluded.oauth_client_id, \
                     service_entitlement_number = excluded.service_entitlement_number, \
                     cloud_id = excluded.cloud_id, installation_id = excluded.installation_id, \
                     enabled = true, updated_at = excluded.updated_at, uninstalled_at = null",
                )
                .bind(t.client_key.as_str())
                .bind(&t.app_key)
                .bind(t.shared_secret.expose())
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
                .bind(now)
                .bind(now)
                .execute(&self.pool)
                .await
                .map(|_| ())
            }

            async fn find_tenant(
                &self,
                client_key: &str,
            ) -> sqlx::Result<Option<std::sync::Arc<$crate::store::TenantRecord>>> {
                sqlx::query(concat!($crate::store::SELECT_TENANT!(), " where client_key = $1"))
                    .bind(client_key)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|r| $crate::store::tenant_from_row(&r))
                    .transpose()
            }

            async fn list_tenants(
                &self,
            ) -> sqlx::Result<Vec<std::sync::Arc<$crate::store::TenantRecord>>> {
                sqlx::query(concat!($crate::store::SELECT_TENANT!(), " order by client_key"))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map($crate::store::tenant_from_row)
                    .collect()
            }

            async fn mark_uninstalled(&self, key: &$crate::store::ClientKey) -> sqlx::Result<bool> {
                let now = $crate::store::now();
                let done = sqlx::query(
                    "update tenant set uninstalled_at = $2, updated_at = $3 where client_key = $1",
                )
                .bind(key.as_str())
                .bind(now)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_enabled(
                &self,
                key: &$crate::store::ClientKey,
                enabled: bool,
            ) -> sqlx::Result<bool> {
                let done = sqlx::query(
                    "update tenant set enabled = $2, updated_at = $3 where client_key = $1",
                )
                .bind(key.as_str())
                .bind(enabled)
                .bind($crate::store::now())
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_notes(
                &self,
                key: &$crate::store::ClientKey,
                issue_key: &str,
            ) -> sqlx::Result<Vec<$crate::store::Note>> {
                use sqlx::Row as _;
                sqlx::query(
                    "select id, issue_key, body, author, created_at from note \
                     where client_key = $1 and issue_key = $2 order by id",
                )
                .bind(key.as_str())
                .bind(issue_key)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    Ok($crate::store::Note {
                        id: r.try_get("id")?,
                        issue_key: r.try_get("issue_key")?,
                        body: r.try_get("body")?,
                        author: r.try_get("author")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect()
            }

            async fn create_note(
                &self,
                key: &$crate::store::ClientKey,
                note: &$crate::store::NewNote,
            ) -> sqlx::Result<$crate::store::Note> {
                let created_at = $crate::store::now();
                let id: i64 = sqlx::query_scalar(
                    "insert into note (client_key, issue_key, body, author, created_at) \
                     values ($1, $2, $3, $4, $5) returning id",
                )
                .bind(key.as_str())
                .bind(&note.issue_key)
                .bind(&note.body)
                .bind(&note.author)
                .bind(created_at)
                .fetch_one(&self.pool)
                .await?;
                Ok($crate::store::Note {
                    id,
                    issue_key: note.issue_key.clone(),
                    body: note.body.clone(),
                    author: note.author.clone(),
                    created_at,
                })
            }

            async fn delete_note(
                &self,
                key: &$crate::store::ClientKey,
                issue_key: &str,
                id: i64,
            ) -> sqlx::Result<bool> {
                let done = sqlx::query(
                    "delete from note where client_key = $1 and issue_key = $2 and id = $3",
                )
                .bind(key.as_str())
                .bind(issue_key)
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_issue_notes(
                &self,
                key: &$crate::store::ClientKey,
                issue_key: &str,
            ) -> sqlx::Result<u64> {
                let done = sqlx::query("delete from note where client_key = $1 and issue_key = $2")
                    .bind(key.as_str())
                    .bind(issue_key)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use shared_queries;
