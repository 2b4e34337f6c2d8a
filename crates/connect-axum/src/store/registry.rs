//! The tenant registry: the [`Tenants`] trait and its SQL, written once for both backends:
//! tenants, their lifecycle tokens, their secrets at rest.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};

use async_trait::async_trait;

use super::lifecycle::commit_applied;
use super::{
    ClientKey, Database, ForgeInstallation, ForgeSaved, Installation, Keyring, LifecycleToken,
    OpenError, Origin, Purged, SaveOutcome, SharedSecret, Statement, StoreError, TenantRecord, now,
};

/// The columns of an [`Installation`], in the order [`bind_installation`] binds them.
pub(super) const INSTALLATION_COLUMNS: [&str; 13] = [
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
pub(super) fn bind_installation<'t>(
    statement: Statement<'t>,
    t: &'t Installation,
    sealed: &'t str,
) -> Statement<'t> {
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
pub(super) static SELECT_TENANT: LazyLock<String> = LazyLock::new(|| {
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
pub(super) static SAVE_TENANT: LazyLock<String> = LazyLock::new(|| {
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
#[derive(serde::Deserialize)]
pub(super) struct TenantRow {
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
    pub(super) fn open(self, keyring: &Keyring) -> Result<Arc<TenantRecord>, StoreError> {
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

/// A tenant whose stored sharedSecret does not open: sealed with a key not configured, corrupt,
/// or plain text that is not allowed. Store reads fail with it as
/// [`StoreError::UnreadableSecret`].
#[derive(Debug, thiserror::Error)]
#[error("the sharedSecret of tenant {client_key:?}: {source}")]
pub struct UnreadableSecret {
    /// The tenant whose secret it is.
    pub client_key: String,
    /// Why it does not open.
    #[source]
    pub source: OpenError,
}

impl UnreadableSecret {
    /// The unreadable secret a store error is about, if that is what it is.
    pub fn of(e: &StoreError) -> Option<&Self> {
        match e {
            StoreError::UnreadableSecret(e) => Some(e),
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
) -> Result<SharedSecret, StoreError> {
    keyring.open(client_key, key_id, stored).map_err(|source| {
        StoreError::UnreadableSecret(UnreadableSecret {
            client_key: client_key.to_owned(),
            source,
        })
    })
}

/// The tenant registry: installations keyed by `clientKey`, their lifecycle, and their secrets.
/// [`Store::tenants`](super::Store::tenants) answers lookups from memory in front of the SQL.
#[async_trait]
pub trait Tenants: Send + Sync + 'static {
    /// Finds a tenant by the key a token claims, whatever its state.
    async fn find(&self, client_key: &str) -> Result<Option<Arc<TenantRecord>>, StoreError>;

    /// Finds the installed tenant whose Forge installation is `installation_id` (at most one
    /// installed tenant holds an id).
    async fn find_by_installation_id(
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

    /// Every tenant's client key, whatever its state.
    async fn client_keys(&self) -> Result<Vec<String>, StoreError>;

    /// Every tenant, by client key.
    async fn list(&self) -> Result<Vec<Arc<TenantRecord>>, StoreError>;

    /// Inserts or replaces a tenant (a reinstall rotates its secret), marking it installed and
    /// enabled, unless `token` was applied to the tenant before (a replay) or is older (`iat`)
    /// than the last one applied, or another installed tenant holds its `installationId`.
    async fn save(
        &self,
        tenant: &Installation,
        token: &LifecycleToken,
    ) -> Result<SaveOutcome, StoreError>;

    /// Installs or revives the tenant of a verified Forge installation: the one holding its
    /// `installationId`, else the one site and product its cloud id names (a reinstall that
    /// brought a new id, or a Connect tenant installed without one), else a new tenant keyed by
    /// the id. Refused like [`save`](Self::save) for a replayed or older token.
    async fn save_forge_installation(
        &self,
        installation: &ForgeInstallation,
        token: &LifecycleToken,
    ) -> Result<ForgeSaved, StoreError>;

    /// Marks a tenant uninstalled, keeping its data for the retention window; false when there is
    /// no such tenant, or `token` is a replay or older than the last one applied.
    async fn mark_uninstalled(
        &self,
        key: &ClientKey,
        token: &LifecycleToken,
    ) -> Result<bool, StoreError>;

    /// Sets a tenant's enabled flag, unless `token` was applied to the tenant before (a replay)
    /// or is older (`iat`) than the last lifecycle token applied; false when nothing changed
    /// (also when there is no such tenant).
    async fn set_enabled(
        &self,
        key: &ClientKey,
        enabled: bool,
        token: &LifecycleToken,
    ) -> Result<bool, StoreError>;

    /// Deletes every tenant uninstalled before `before`, with all its data, and forgets the
    /// lifecycle tokens that can no longer be replayed.
    async fn purge_uninstalled(&self, before: DateTime<Utc>) -> Result<Vec<Purged>, StoreError>;

    /// Seals every sharedSecret not sealed with the keyring's current key (older keys, or plain
    /// text from before sealing) with it; returns how many were sealed again.
    async fn reencrypt_secrets(&self) -> Result<u64, StoreError>;
}

/// The registry's SQL, written once in the dialect common to Postgres and SQLite.
///
/// Statements on tenant data run in the backend's tenant transaction, which on Postgres puts
/// row-level security in force for that one tenant.
pub(super) struct Registry {
    pub(super) db: Database,
    pub(super) keyring: Arc<Keyring>,
}

#[async_trait]
impl Tenants for Registry {
    async fn save(
        &self,
        t: &Installation,
        token: &LifecycleToken,
    ) -> Result<SaveOutcome, StoreError> {
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
            Err(e) if e.is_unique_violation() => {
                return Ok(SaveOutcome::InstallationIdTaken);
            }
            saved => saved?,
        };
        Ok(
            match commit_applied(tx, saved, &t.client_key, token).await? {
                true => SaveOutcome::Saved,
                false => SaveOutcome::Stale,
            },
        )
    }

    async fn find(&self, client_key: &str) -> Result<Option<Arc<TenantRecord>>, StoreError> {
        let sql = format!("{} where client_key = $1", *SELECT_TENANT);
        self.db
            .connection()
            .await?
            .query(&sql)
            .bind(client_key)
            .fetch_optional::<TenantRow>()
            .await?
            .map(|row| row.open(&self.keyring))
            .transpose()
    }

    async fn find_by_installation_id(
        &self,
        installation_id: &str,
    ) -> Result<Option<Arc<TenantRecord>>, StoreError> {
        let sql = format!(
            "{} where installation_id = $1 and uninstalled_at is null",
            *SELECT_TENANT
        );
        self.db
            .connection()
            .await?
            .query(&sql)
            .bind(installation_id)
            .fetch_optional::<TenantRow>()
            .await?
            .map(|row| row.open(&self.keyring))
            .transpose()
    }

    async fn client_keys(&self) -> Result<Vec<String>, StoreError> {
        let keys: Vec<(String,)> = self
            .db
            .connection()
            .await?
            .query("select client_key from tenant")
            .fetch_all()
            .await?;
        Ok(keys.into_iter().map(|(key,)| key).collect())
    }

    async fn find_installed_by_cloud_id(
        &self,
        cloud_id: &str,
        product: Option<&str>,
    ) -> Result<Vec<Arc<TenantRecord>>, StoreError> {
        let sql = format!(
            "{} where cloud_id = $1 and cloud_id_verified and uninstalled_at is null \
             and ($2 is null or product_type is null or product_type = $2) \
             order by client_key limit 2",
            *SELECT_TENANT
        );
        self.db
            .connection()
            .await?
            .query(&sql)
            .bind(cloud_id)
            .bind(product)
            .fetch_all::<TenantRow>()
            .await?
            .into_iter()
            .map(|row| row.open(&self.keyring))
            .collect()
    }

    async fn list(&self) -> Result<Vec<Arc<TenantRecord>>, StoreError> {
        let sql = format!("{} order by client_key", *SELECT_TENANT);
        self.db
            .connection()
            .await?
            .query(&sql)
            .fetch_all::<TenantRow>()
            .await?
            .into_iter()
            .map(|row| row.open(&self.keyring))
            .collect()
    }

    async fn mark_uninstalled(
        &self,
        key: &ClientKey,
        token: &LifecycleToken,
    ) -> Result<bool, StoreError> {
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
        commit_applied(tx, done, key, token).await
    }

    async fn reencrypt_secrets(&self) -> Result<u64, StoreError> {
        let rows: Vec<(String, String, Option<String>)> = self
            .db
            .connection()
            .await?
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
            let secret = open_secret(&self.keyring, &client_key, key_id.as_deref(), &stored)?;
            let sealed = self.keyring.seal(&client_key, &secret);
            // Only if no install replaced the secret since it was read.
            sealed_again += self
                .db
                .connection()
                .await?
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

    async fn purge_uninstalled(&self, before: DateTime<Utc>) -> Result<Vec<Purged>, StoreError> {
        let due: Vec<(String, DateTime<Utc>)> = self
            .db
            .connection()
            .await?
            .query(
                "select client_key, uninstalled_at from tenant \
                 where uninstalled_at is not null and uninstalled_at < $1 order by client_key",
            )
            .bind(before)
            .fetch_all()
            .await?;
        self.db
            .connection()
            .await?
            .query("delete from lifecycle_token where expires_at < $1")
            .bind(now().timestamp())
            .execute()
            .await?;
        let mut purged = Vec::with_capacity(due.len());
        for (client_key, uninstalled_at) in due {
            let key = ClientKey::new(client_key);
            let mut tx = self.db.tenant_transaction(&key).await?;
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
        &self,
        key: &ClientKey,
        enabled: bool,
        token: &LifecycleToken,
    ) -> Result<bool, StoreError> {
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
        commit_applied(tx, done, key, token).await
    }

    async fn save_forge_installation(
        &self,
        installation: &ForgeInstallation,
        token: &LifecycleToken,
    ) -> Result<ForgeSaved, StoreError> {
        super::forge::save_installation(&self.db, &self.keyring, installation, token).await
    }
}
