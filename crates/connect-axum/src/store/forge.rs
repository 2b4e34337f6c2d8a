//! The registry's Forge side: tenants born of a Forge installation, the permissions of their
//! latest upgrade, and the app's stored system token.

use chrono::{DateTime, Utc};

use super::StoreError;
use super::lifecycle::commit_applied;
use super::{ClientKey, Database, Keyring, LifecycleToken, SaveOutcome, SharedSecret, now};
use crate::protocol::ForgeToken;

/// A Forge installation as a verified invocation token describes it.
#[derive(Debug, Clone)]
pub struct ForgeInstallation {
    /// `app.installationId`.
    pub installation_id: String,
    /// `app.id`, the app's ARI.
    pub app_id: String,
    /// `app.appVersion`.
    pub app_version: Option<String>,
    /// The one site the token names (`app.installation.contexts[].cloudId`, `context.cloudId`).
    pub cloud_id: Option<String>,
    /// The product of `app.apiBaseUrl` (`jira`, `confluence`, …).
    pub product: Option<String>,
    /// `app.apiBaseUrl`.
    pub api_base_url: Option<String>,
    /// `context.siteUrl`, when the token carries it.
    pub site_url: Option<String>,
    /// Make a new tenant when no existing one takes the installation; when false, such an
    /// installation changes nothing ([`ForgeSaved::existing`] is false).
    pub create_if_new: bool,
}

/// What became of a Forge install, and the tenant it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeSaved {
    /// Whether the install was saved, stale, or refused for its installationId.
    pub outcome: SaveOutcome,
    /// The tenant installed or revived (for [`SaveOutcome::InstallationIdTaken`], the one that
    /// was asked for).
    pub client_key: ClientKey,
    /// Whether an existing tenant took the installation (false: a new one was made, or none
    /// when [`ForgeInstallation::create_if_new`] was false).
    pub existing: bool,
}

/// The app's system token as stored for a tenant.
#[derive(Debug, Clone)]
pub struct StoredSystemToken {
    /// The token, opened from its sealed form.
    pub token: ForgeToken,
    /// Where product calls with it go (`app.apiBaseUrl`).
    pub api_base_url: String,
    /// When the token stops working: its own `exp`, at most four hours after it was stored.
    pub expires_at: DateTime<Utc>,
}

/// The AAD a system token is sealed with: never interchangeable with the tenant's sharedSecret.
fn token_aad(key: &ClientKey) -> String {
    format!("{}#forge-system-token", key.as_str())
}

/// Installs or revives the tenant of a verified Forge installation; see
/// [`Tenants::save_forge_installation`](super::Tenants::save_forge_installation).
pub(super) async fn save_installation(
    db: &Database,
    keyring: &Keyring,
    install: &ForgeInstallation,
    token: &LifecycleToken,
) -> Result<ForgeSaved, StoreError> {
    let now = now();
    let mut tx = db.begin().await?;
    let by_installation: Option<(String,)> = tx
        .query(
            "select client_key from tenant where installation_id = $1 \
                 order by case when uninstalled_at is null then 0 else 1 end, updated_at desc \
                 limit 1",
        )
        .bind(&install.installation_id)
        .fetch_optional()
        .await?;
    let existing = match (by_installation, &install.cloud_id) {
        (Some((key,)), _) => Some(key),
        // A reinstall brings a new installationId for the same site: a tenant of the site
        // and product whose cloud id a verified token gave is found by it, a Forge-born one
        // even uninstalled within its retention, a Connect one only while installed and only
        // when it is the one of the site and product, as for invocations. A cloud id that
        // only a Connect install body claimed leads nowhere: a Connect tenant joins a Forge
        // installation by the installationId of its own install.
        (None, Some(cloud_id)) => {
            let found: Vec<(String, bool)> = tx
                .query(
                    "select client_key, cloud_id_verified from tenant where cloud_id = $1 \
                         and ($2 is null or product_type is null or product_type = $2) \
                         and (origin = 'forge' or uninstalled_at is null) \
                         order by client_key limit 8",
                )
                .bind(cloud_id)
                .bind(&install.product)
                .fetch_all()
                .await?;
            let (verified, claimed): (Vec<_>, Vec<_>) =
                found.into_iter().partition(|(_, verified)| *verified);
            for (key, _) in &claimed {
                tracing::warn!(
                    client_key = key.as_str(),
                    installation_id = install.installation_id.as_str(),
                    "a Connect install claimed the cloud id of this Forge installation; \
                         not adopted"
                );
            }
            match verified.as_slice() {
                [(key, _)] => Some(key.clone()),
                _ => None,
            }
        }
        (None, None) => None,
    };
    let client_key = ClientKey::new(
        existing
            .clone()
            .unwrap_or_else(|| install.installation_id.clone()),
    );
    if existing.is_none() && !install.create_if_new {
        return Ok(ForgeSaved {
            outcome: SaveOutcome::Stale,
            client_key,
            existing: false,
        });
    }
    let found = existing.is_some();
    let saved = match existing {
        Some(_) => {
            tx.query(
                "update tenant set installation_id = $2, cloud_id = coalesce($3, cloud_id), \
                     cloud_id_verified = ($3 is not null or cloud_id_verified), \
                     product_type = coalesce(product_type, $4), \
                     api_base_url = coalesce($5, api_base_url), \
                     app_version = coalesce($6, app_version), \
                     base_url = case when origin = 'forge' then coalesce($7, base_url) \
                         else base_url end, \
                     display_url = case when origin = 'forge' then coalesce($7, display_url) \
                         else display_url end, \
                     enabled = true, uninstalled_at = null, updated_at = $8, lifecycle_iat = $9 \
                     where client_key = $1 and (lifecycle_iat is null or lifecycle_iat <= $9)",
            )
            .bind(client_key.as_str())
            .bind(&install.installation_id)
            .bind(&install.cloud_id)
            .bind(&install.product)
            .bind(&install.api_base_url)
            .bind(&install.app_version)
            .bind(&install.site_url)
            .bind(now)
            .bind(token.issued_at)
            .execute()
            .await
        }
        None => {
            // Never used: a Forge-born tenant is refused for Connect JWTs. Random all the
            // same, so that nothing could sign with a guessable one.
            let secret = SharedSecret::new(hex::encode(rand::random::<[u8; 32]>()));
            let sealed = keyring.seal(client_key.as_str(), &secret);
            let base_url = install
                .site_url
                .as_deref()
                .or(install.api_base_url.as_deref())
                .unwrap_or_default();
            tx.query(
                "insert into tenant (client_key, app_key, shared_secret, secret_key_id, \
                     base_url, display_url, product_type, cloud_id, installation_id, \
                     api_base_url, app_version, origin, enabled, installed_at, updated_at, \
                     lifecycle_iat, cloud_id_verified) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'forge', true, $12, \
                     $12, $13, $8 is not null)",
            )
            .bind(client_key.as_str())
            .bind(&install.app_id)
            .bind(&sealed.ciphertext)
            .bind(&sealed.key_id)
            .bind(base_url)
            .bind(&install.site_url)
            .bind(&install.product)
            .bind(&install.cloud_id)
            .bind(&install.installation_id)
            .bind(&install.api_base_url)
            .bind(&install.app_version)
            .bind(now)
            .bind(token.issued_at)
            .execute()
            .await
        }
    };
    let outcome = match saved {
        Err(e) if e.is_unique_violation() => SaveOutcome::InstallationIdTaken,
        Err(e) => return Err(e),
        Ok(changed) => match commit_applied(tx, changed, &client_key, token).await? {
            true => SaveOutcome::Saved,
            false => SaveOutcome::Stale,
        },
    };
    Ok(ForgeSaved {
        outcome,
        client_key,
        existing: found,
    })
}

/// The Forge records of a [`Store`](super::Store), from [`Store::forge`](super::Store::forge):
/// the permissions of a tenant's latest upgrade and the app's system token.
#[derive(Clone, Copy)]
pub struct ForgeRecords<'s> {
    pub(super) db: &'s Database,
    pub(super) keyring: &'s Keyring,
}

impl ForgeRecords<'_> {
    /// Records the permissions (JSON) of the tenant's latest Forge upgrade.
    pub async fn save_permissions(
        &self,
        key: &ClientKey,
        permissions: &str,
    ) -> Result<(), StoreError> {
        self.db
            .connection()
            .await?
            .query(
                "update tenant set forge_permissions = $2, updated_at = $3 where client_key = $1",
            )
            .bind(key.as_str())
            .bind(permissions)
            .bind(now())
            .execute()
            .await?;
        Ok(())
    }

    /// Stores the app's system token for the tenant, sealed, unless the stored one came with a
    /// later invocation token (`issued_at`, the FIT's `iat`); true when stored.
    pub async fn save_system_token(
        &self,
        key: &ClientKey,
        token: &ForgeToken,
        api_base_url: &str,
        expires_at: DateTime<Utc>,
        issued_at: i64,
    ) -> Result<bool, StoreError> {
        let sealed = self
            .keyring
            .seal(&token_aad(key), &SharedSecret::new(token.expose()));
        // The newest invocation's token wins: Forge rotates tokens, and a longer claimed life
        // says nothing of which one Forge handed out last.
        let saved = self
            .db
            .connection()
            .await?
            .query(
                "insert into forge_system_token (client_key, token, key_id, api_base_url, \
                 expires_at, updated_at, issued_at) values ($1, $2, $3, $4, $5, $6, $7) \
                 on conflict (client_key) do update set token = excluded.token, \
                 key_id = excluded.key_id, api_base_url = excluded.api_base_url, \
                 expires_at = excluded.expires_at, updated_at = excluded.updated_at, \
                 issued_at = excluded.issued_at \
                 where forge_system_token.issued_at is null \
                 or forge_system_token.issued_at <= excluded.issued_at",
            )
            .bind(key.as_str())
            .bind(&sealed.ciphertext)
            .bind(&sealed.key_id)
            .bind(api_base_url)
            .bind(expires_at)
            .bind(now())
            .bind(issued_at)
            .execute()
            .await?;
        Ok(saved > 0)
    }

    /// The tenant's stored system token, whether or not it has expired.
    pub async fn system_token(
        &self,
        key: &ClientKey,
    ) -> Result<Option<StoredSystemToken>, StoreError> {
        let row: Option<(String, String, String, DateTime<Utc>)> = self
            .db
            .connection()
            .await?
            .query(
                "select token, key_id, api_base_url, expires_at from forge_system_token \
                 where client_key = $1",
            )
            .bind(key.as_str())
            .fetch_optional()
            .await?;
        let Some((sealed, key_id, api_base_url, expires_at)) = row else {
            return Ok(None);
        };
        match self.keyring.open(&token_aad(key), Some(&key_id), &sealed) {
            Ok(token) => Ok(Some(StoredSystemToken {
                token: ForgeToken::new(token.expose()),
                api_base_url,
                expires_at,
            })),
            // A token lives hours: one sealed with a key no longer configured is as good as
            // gone, and the next delivery brings a fresh one.
            Err(e) => {
                tracing::warn!(
                    tenant.client_key = %key,
                    "the stored Forge system token does not open: {e}"
                );
                Ok(None)
            }
        }
    }
}
