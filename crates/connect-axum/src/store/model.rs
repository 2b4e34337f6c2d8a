//! What the store keeps and answers: tenants and their installations, lifecycle tokens, realm
//! migrations, and the outcomes of the store's writes.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::SharedSecret;

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
    /// `clientKey`: the tenant.
    pub client_key: ClientKey,
    /// `key`: the app key the site installed (for a Forge-born tenant, the app's ARI).
    #[serde(rename = "key")]
    pub app_key: String,
    /// `sharedSecret`: signs the HS256 JWTs of the tenant and of the app's calls to it; a
    /// Forge-born tenant's is random and never used.
    #[serde(skip)]
    pub shared_secret: SharedSecret,
    /// `baseUrl`, without a trailing `/`: the site, `https://acme.atlassian.net`, that product
    /// calls go under (a Forge-born tenant's `siteUrl`, else its `apiBaseUrl`).
    pub base_url: String,
    /// `displayUrl`: the site's custom domain users see, when it has one.
    pub display_url: Option<String>,
    /// `productType`: `jira`, `confluence`, ….
    pub product_type: Option<String>,
    /// `description`: the site's description, as its administrator set it.
    pub description: Option<String>,
    /// `serverVersion`: the product's version on the site.
    pub server_version: Option<String>,
    /// `pluginsVersion`: the version of Connect on the site.
    pub plugins_version: Option<String>,
    /// `oauthClientId`: the app's OAuth client on the site, which acting as its users needs;
    /// `None` when the site sent none.
    pub oauth_client_id: Option<String>,
    /// `serviceEntitlementNumber`: the site's licence of a paid app, when it has one.
    pub service_entitlement_number: Option<String>,
    /// `cloudId`: the site's cloud id; trusted to find the tenant only once a verified Forge
    /// token confirms it.
    pub cloud_id: Option<String>,
    /// `installationId`: the Forge installation (`ari:cloud:ecosystem::installation/<uuid>`)
    /// of a Connect-on-Forge or Forge-born tenant.
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
    pub(super) fn parse(stored: &str) -> Self {
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
    /// The installation as last installed (or as the Forge installation made it).
    pub installation: Installation,
    /// Which door the tenant came in by; a Forge-born tenant is refused for Connect JWTs.
    pub origin: Origin,
    /// `app.apiBaseUrl` of the latest verified Forge install or trigger: where product calls
    /// with a Forge token go.
    pub api_base_url: Option<String>,
    /// `app.appVersion` of the latest verified Forge install or upgrade.
    pub app_version: Option<String>,
    /// False between a `disabled` hook and the next `enabled`; only lifecycle routes serve a
    /// disabled tenant.
    pub enabled: bool,
    /// When the tenant was first installed.
    pub installed_at: DateTime<Utc>,
    /// When the tenant's record last changed.
    pub updated_at: DateTime<Utc>,
    /// When the app was uninstalled; `None` while installed. Its data is purged once the
    /// retention after this runs out.
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
    /// The tenant removed.
    pub client_key: ClientKey,
    /// When it had uninstalled the app.
    pub uninstalled_at: DateTime<Utc>,
}

/// Where a realm migration stands; stored and answered as its text (`ready-to-commit`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    /// `scheduled`: announced by `schedule`; nothing moved yet.
    Scheduled,
    /// `in-progress`: `start` came and the app's [`RealmMover`](crate::data::RealmMover) is
    /// moving the data.
    InProgress,
    /// `ready-to-commit`: the app moved the data; `commit` makes it final, `rollback` undoes it.
    ReadyToCommit,
    /// `committed`: the move is final.
    Committed,
    /// `rolled-back`: the move was undone, or never started.
    RolledBack,
    /// `failed`: the move failed (see the migration's `error_code`); it must be rolled back.
    Failed,
}

impl MigrationState {
    pub(super) const ALL: [MigrationState; 6] = [
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
    /// `migrationId`, the migration service's id of this migration.
    pub migration_id: String,
    /// The realm the data moves to, e.g. `EU`.
    pub location: String,
    /// Where the data was before the move (`None`: the realm it was installed in).
    pub previous_location: Option<String>,
    /// Where the migration stands.
    pub state: MigrationState,
    /// Why it failed, as the migration service's codes (`E0001`…).
    pub error_code: Option<String>,
    /// `startTime` of the scheduled window, the text as the migration service sent it.
    pub start_time: Option<String>,
    /// `endTime` of the scheduled window, the text as the migration service sent it.
    pub end_time: Option<String>,
}
