//! Configuration from the environment, validated once at start-up.

use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::store::Keyring;

mod values;

pub use values::{ConfigError, HostPatterns, LogFormat};
use values::{days, http_url, parse, path_var, url_var};

/// The service's configuration. Tests build it with [`Config::from_vars`].
#[derive(Debug, Clone)]
pub struct Config {
    /// BIND: the address to listen on (default `127.0.0.1`).
    pub bind: IpAddr,
    /// PORT: the port to listen on (default 3000).
    pub port: u16,
    /// BASE_URL: the app's public URL (default `http://localhost:$PORT`): the descriptor's
    /// baseUrl, the `aud` of signed installs, and the base QSH paths are relative to.
    pub base_url: Url,
    /// DATABASE_URL: `postgres://…` or `sqlite:…` (default `sqlite://connect-axum.db`).
    pub database_url: String,
    /// MIGRATION_DATABASE_URL: a `postgres://…` login that owns the tables and runs the
    /// migrations; `DATABASE_URL` is then a serving login that owns nothing, a member of
    /// `connect_axum_app` (unset: `DATABASE_URL`'s login does both).
    pub migration_database_url: Option<String>,
    /// DB_POOL_SIZE: database connections per process (default 10).
    pub db_pool_size: u32,
    /// DB_ACQUIRE_TIMEOUT_MS: how long a request waits for a Postgres connection, connecting
    /// included, before it is answered 503 `store_unavailable`; it bounds connecting at start-up
    /// too (default 1500).
    pub db_acquire_timeout: Duration,
    /// TENANT_CACHE_SIZE: tenants kept in memory (default 100 000).
    pub tenant_cache_size: u64,
    /// INSTALL_KEYS_URL: where signed-install public keys are fetched as `GET {url}/{kid}`.
    pub install_keys_url: Url,
    /// INSTALL_KEYS_TIMEOUT_MS: how long a key fetch may take (default 5000).
    pub install_keys_timeout: Duration,
    /// ALLOWED_BASE_URLS: host patterns an installing site's baseUrl must match.
    pub allowed_base_urls: HostPatterns,
    /// OAUTH_AUTH_SERVER_URL: the authorization server of user tokens (acting as a user).
    pub oauth_auth_server_url: Url,
    /// PRODUCT_TIMEOUT_SECS: the time limit of one call to a tenant's product (default 20).
    pub product_timeout: Duration,
    /// JWT_LEEWAY_SECS: clock skew tolerated on `exp`, `nbf` and `iat` (default 30, at most 600).
    pub jwt_leeway: Duration,
    /// SESSION_MAX_LIFETIME_SECS: how long a chain of renewed session tokens lasts from the page
    /// load (or context token) that began it (default 28 800, 8 hours: a working day with the
    /// panel open, while a captured token is dead by the end of it). Past it the panel gets a
    /// fresh context token from the product, which needs the user's live product session.
    pub session_max_lifetime: Duration,
    /// MAX_TOKEN_LIFETIME_SECS: the longest a token may live, `exp − iat` (or `exp − now` for a
    /// token without `iat`), for product, context, session and signed-install tokens and Forge
    /// Invocation Tokens alike; longer ones are refused 401 `lifetime_too_long` (default 3600,
    /// from 900, the app's own session tokens' lifetime, to 86 400).
    pub max_token_lifetime: Duration,
    /// MAX_BODY_BYTES: the largest request body accepted (default 1 MiB).
    pub max_body_bytes: usize,
    /// MAX_HEADER_BYTES: the most bytes of header names and values a request may carry
    /// (default 32 KiB; 431 above it).
    pub max_header_bytes: usize,
    /// METRICS_TOKEN: when set, `GET /metrics` needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<crate::store::SharedSecret>,
    /// METRICS_PORT: when set, `GET /metrics` is served on this port only (an internal listener)
    /// and answers 404 on `PORT`.
    pub metrics_port: Option<u16>,
    /// METRICS_BIND: the address of the metrics listener (default: `BIND`).
    pub metrics_bind: IpAddr,
    /// MAX_CONCURRENT_REQUESTS: verified tenants' requests handled at once, from authentication
    /// to response; more are answered 503 (default 1024).
    pub max_concurrent_requests: usize,
    /// MAX_ANONYMOUS_REQUESTS: work done at once for clients not yet authenticated (public routes
    /// other than `/healthz` and `/readyz`, form bodies read to find their token); more is answered
    /// 503 (default a quarter of MAX_CONCURRENT_REQUESTS, at least 1).
    pub max_anonymous_requests: usize,
    /// MAX_CONCURRENT_REQUESTS_PER_TENANT: how many of MAX_CONCURRENT_REQUESTS one tenant may hold
    /// at once; more are answered 429 `tenant_busy` (default an eighth of
    /// MAX_CONCURRENT_REQUESTS, at least 1).
    pub max_concurrent_requests_per_tenant: usize,
    /// BODY_READ_TIMEOUT_SECS: how long a verified request's body may take to arrive once its
    /// headers have; a slower one is answered 408 `body_timeout` (default 10, 1 to 30).
    pub body_read_timeout: Duration,
    /// HEADER_READ_TIMEOUT_SECS: how long a connection may take to send a request's headers
    /// before it is closed (default 10, 1 to 30).
    pub header_read_timeout: Duration,
    /// TENANT_RATE_LIMIT: requests per second one tenant may make, with bursts of twice that;
    /// more are answered 429 with `Retry-After` (default 0: no limit).
    pub tenant_rate_limit: u32,
    /// TENANT_WRITE_RATE_LIMIT: writes (methods other than GET, HEAD, OPTIONS) per second that a
    /// tenant's users may make with their own tokens (context, session and Forge UI tokens), with
    /// bursts of twice that; more are answered 429 with `Retry-After` (default 20; 0: no limit).
    /// The product's own calls are not counted.
    pub tenant_write_rate_limit: u32,
    /// LOG_FORMAT: `pretty` (default) or `json`.
    pub log_format: LogFormat,
    /// REQUEST_TIMEOUT_SECS: how long a request may take before it is answered 408 (default 30).
    pub request_timeout: Duration,
    /// SECRETS_KEY: base64 of the 32-byte key that seals sharedSecrets at rest, with
    /// SECRETS_OLD_KEYS (comma-separated, same form) still accepted for reading. Required with
    /// Postgres; the embedded store keeps a generated key in SECRETS_KEY_FILE when it is unset.
    pub secrets: Option<Arc<Keyring>>,
    /// SECRETS_KEY_FILE: where the embedded store keeps its generated key (default
    /// `connect-axum.secrets.key`).
    pub secrets_key_file: PathBuf,
    /// SECRETS_ALLOW_PLAINTEXT: also read sharedSecrets stored in plain text, as written before
    /// secrets were sealed, so that start-up (or `secrets rotate`) seals them (default false:
    /// a plain-text secret, which anyone able to write the table could plant, is refused).
    pub secrets_allow_plaintext: bool,
    /// UNINSTALL_RETENTION_DAYS: how long an uninstalled tenant's data is kept before it is
    /// purged (default 30; fractions allowed).
    pub uninstall_retention: Duration,
    /// FORGE_APP_ID: the Forge app's id (`ari:cloud:ecosystem::app/<uuid>`, or the bare uuid);
    /// unset turns Forge Remote routes off (they answer 401 `forge_not_configured`).
    pub forge_app_ari: Option<String>,
    /// FORGE_JWKS_URL: where Forge's token signing keys are published (default Atlassian's
    /// production JWKS).
    pub forge_jwks_url: Url,
    /// FORGE_STAGING_JWKS_URL: the JWKS of Forge's staging environment, for tokens whose
    /// `app.apiBaseUrl` is on `https://api.stg.atlassian.com/` (default Atlassian's staging JWKS;
    /// `off`: such tokens are verified with production's keys, and fail).
    pub forge_staging_jwks_url: Option<Url>,
    /// FORGE_IC_JWKS_URL_TEMPLATE: the JWKS URL of an Isolated Cloud, `{icLabel}` standing for
    /// the token's label (given when the app is onboarded there); unset refuses tokens with an
    /// `icLabel` (401 `isolated_cloud_not_configured`).
    pub forge_ic_jwks_template: Option<String>,
    /// FORGE_JWKS_REFRESH_SECS: a token naming an unknown key refetches the JWKS at most this
    /// often (default 30).
    pub forge_jwks_refresh: Duration,
    /// PERSONAL_DATA_REPORT_URL: Atlassian's personal data reporting API (default
    /// `https://api.atlassian.com/app/report-accounts/`).
    pub personal_data_report_url: Url,
    /// PERSONAL_DATA_INTERVAL_DAYS: how often each tenant's account ids are reported (default 7;
    /// fractions allowed).
    pub personal_data_interval: Duration,
    /// DATA_RESIDENCY_PATH: where the realm migration hooks are served and declared
    /// (`lifecycle."dare-migration"`, default `/migration`).
    pub data_residency_path: String,
    /// DATA_RESIDENCY_REALMS: the realms tenants' data may move to (default
    /// `US,EU,DE,AU,CA,IN,JP,KR,SG,UK,CH`).
    pub data_residency_realms: Vec<String>,
    /// PURGE_INTERVAL_SECS: how often uninstalled tenants past retention are looked for (default 3600).
    pub purge_interval: Duration,
    /// FORGE_EVENTS_PATH: where Forge trigger deliveries (lifecycle and product events) are
    /// received (default `/forge/events`).
    pub forge_events_path: String,
    /// FORGE_PRE_UNINSTALL_PATH: where the preUninstall hook is received (default
    /// `/forge/pre-uninstall`).
    pub forge_pre_uninstall_path: String,
    /// FORGE_SCHEDULED_PATH: where the scheduled trigger that refreshes the stored system token is
    /// received (default `/forge/scheduled`).
    pub forge_scheduled_path: String,
    /// FORGE_MIGRATION_PATH: where Forge's `migration:dataResidency` hooks are served (default
    /// `/forge/migration`: `…/schedule`, `/start`, `/status`, `/commit`, `/rollback`).
    pub forge_migration_path: String,
    /// The `app.module.key`s each app-level Forge endpoint takes (FORGE_EVENTS_MODULE_KEYS,
    /// FORGE_PRE_UNINSTALL_MODULE_KEYS, FORGE_SCHEDULED_MODULE_KEYS, FORGE_MIGRATION_MODULE_KEYS:
    /// comma-separated; empty, the default, takes any endpoint module's call as the app).
    pub forge_module_keys: ForgeModuleKeys,
    /// FORGE_CORS_ORIGINS: comma-separated origins whose browsers may call the Forge routes
    /// directly (`requestRemote`): `https://host` exactly, or `https://*.suffix` for any
    /// subdomain. Their preflight is answered without a token; the real request still needs one.
    /// Empty (default): no CORS.
    pub forge_cors_origins: Vec<crate::cors::OriginPattern>,
    /// FORGE_API_BASE_URL: Atlassian's API host, for Forge hosted storage (default
    /// `https://api.atlassian.com`).
    pub forge_api_base_url: Url,
    /// FORGE_GRAPHQL_URL: Atlassian's GraphQL API, for offline user impersonation (default
    /// `https://api.atlassian.com/graphql`).
    pub forge_graphql_url: Url,
    /// FORGE_IMPERSONATION_CONTEXT_ID: the `contextIds` entry of an offline user token request,
    /// with `{product}`, `{cloudId}`, `{installationId}` (default
    /// `ari:cloud:{product}::site/{cloudId}`; the form is contested, hence a setting).
    pub forge_impersonation_context_id: String,
    /// FORGE_EVENT_MAX_ATTEMPTS: how many times the app's handlers run a queued event before it
    /// is given up (default 8).
    pub forge_event_attempts: u32,
    /// FORGE_CONNECT_ON_FORGE: the app is Connect on Forge, so every site's Connect install
    /// (`/installed`, with the installationId) makes its tenant: a Forge install event for an
    /// installation no tenant has yet is answered 409 `connect_install_pending` (Forge delivers
    /// it again 60 s later) until its last retry, which makes a Forge-born tenant after all
    /// (default false: a Forge install event makes the tenant at once).
    pub forge_connect_on_forge: bool,
    /// FORGE_EVENT_POLL_MS: how often the event worker looks for due events queued by other
    /// replicas or due for a retry (default 1000; events this replica queues run at once).
    pub forge_event_poll: Duration,
}

impl Config {
    /// Whether `GET /metrics` is served on the public port: not when it has a port of its own,
    /// nor on Postgres (a deployment) unless a token guards it.
    pub fn metrics_on_public_port(&self) -> bool {
        self.metrics_port.is_none()
            && (self.metrics_token.is_some()
                || !matches!(
                    self.database_url.parse(),
                    Ok(crate::store::Backend::Postgres)
                ))
    }

    /// How to reach the store, with the keyring that seals its secrets: `SECRETS_KEY`, or the
    /// embedded store's key file, made (and logged) on first use.
    pub fn store_options(&self) -> Result<crate::store::StoreOptions, KeyFileError> {
        let keyring = match &self.secrets {
            Some(keyring) => keyring.clone(),
            None => {
                let path = &self.secrets_key_file;
                let (keyring, created) =
                    Keyring::load_or_create(path).map_err(|error| KeyFileError {
                        path: path.clone(),
                        error,
                    })?;
                if created {
                    tracing::warn!(
                        "generated a secrets key in {} for the embedded store; set SECRETS_KEY in production",
                        path.display()
                    );
                } else {
                    tracing::info!("sharedSecrets sealed with the key in {}", path.display());
                }
                Arc::new(keyring.allowing_plaintext(self.secrets_allow_plaintext))
            }
        };
        Ok(crate::store::StoreOptions {
            database_url: self.database_url.clone(),
            migration_url: self.migration_database_url.clone(),
            pool_size: self.db_pool_size,
            acquire_timeout: self.db_acquire_timeout,
            tenant_cache_size: self.tenant_cache_size,
            keyring,
            app_migrations: Default::default(),
        })
    }
}

/// The manifest's module keys each app-level Forge endpoint takes calls of, when pinned: Forge
/// puts the invoked endpoint's key in `app.module.key` (a user cannot choose it, though a UI call
/// can choose its path). Empty takes any `core:endpoint` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgeModuleKeys {
    pub events: Vec<String>,
    pub pre_uninstall: Vec<String>,
    pub scheduled: Vec<String>,
    pub migration: Vec<String>,
}

/// The largest clock skew `JWT_LEEWAY_SECS` may allow: more would keep expired tokens alive.
pub const MAX_JWT_LEEWAY_SECS: u64 = 600;

/// The longest `HEADER_READ_TIMEOUT_SECS` may be: a slow client holds its connection that long.
pub const MAX_HEADER_READ_TIMEOUT_SECS: u64 = 30;

/// The longest `BODY_READ_TIMEOUT_SECS` may be: a slow client holds a tenant slot that long.
pub const MAX_BODY_READ_TIMEOUT_SECS: u64 = 30;
/// The bounds of `MAX_TOKEN_LIFETIME_SECS`: the app's own session tokens must pass it, and a
/// cap of more than a day caps nothing a site sends.
pub const TOKEN_LIFETIME_RANGE_SECS: std::ops::RangeInclusive<u64> =
    crate::auth::SESSION_TOKEN_TTL.as_secs()..=86_400;

/// The default sites an install may come from.
pub const DEFAULT_ALLOWED_BASE_URLS: &str =
    "*.atlassian.net,*.jira.com,*.jira-dev.com,*.atlassian.com";

/// The embedded store's secrets key file could not be read or made.
#[derive(Debug, thiserror::Error)]
#[error("could not read or create the secrets key file {}: {error}", path.display())]
pub struct KeyFileError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from `lookup`, which returns a variable's value if set.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let port: u16 = parse(&var, "PORT", "3000")?;
        let bind: IpAddr = parse(&var, "BIND", "127.0.0.1")?;
        let base_url = var("BASE_URL").unwrap_or_else(|| format!("http://localhost:{port}"));
        let base_url = http_url("BASE_URL", &base_url)?;
        let install_keys_url = url_var(
            &var,
            "INSTALL_KEYS_URL",
            "https://connect-install-keys.atlassian.com",
        )?;
        let oauth_auth_server_url = url_var(
            &var,
            "OAUTH_AUTH_SERVER_URL",
            "https://oauth-2-authorization-server.services.atlassian.com",
        )?;
        let database_url =
            var("DATABASE_URL").unwrap_or_else(|| "sqlite://connect-axum.db".to_owned());
        let backend = database_url
            .parse::<crate::store::Backend>()
            .map_err(|message| ConfigError {
                var: "DATABASE_URL",
                message,
            })?;
        let secrets_allow_plaintext: bool = parse(&var, "SECRETS_ALLOW_PLAINTEXT", "false")?;
        let migration_database_url = var("MIGRATION_DATABASE_URL");
        if migration_database_url.as_deref().is_some_and(|url| {
            backend != crate::store::Backend::Postgres
                || url.parse::<crate::store::Backend>() != Ok(crate::store::Backend::Postgres)
        }) {
            return Err(ConfigError {
                var: "MIGRATION_DATABASE_URL",
                message: "must be a postgres:// URL, beside a Postgres DATABASE_URL".to_owned(),
            });
        }
        let secrets = match var("SECRETS_KEY") {
            Some(key) => Some(Arc::new(
                Keyring::parse(&key, &var("SECRETS_OLD_KEYS").unwrap_or_default())
                    .map_err(|message| ConfigError {
                        var: "SECRETS_KEY",
                        message,
                    })?
                    .allowing_plaintext(secrets_allow_plaintext),
            )),
            None if backend == crate::store::Backend::Postgres => {
                return Err(ConfigError {
                    var: "SECRETS_KEY",
                    message: "is required with a Postgres DATABASE_URL: sharedSecrets are \
                              encrypted at rest (make one with `openssl rand -base64 32`)"
                        .to_owned(),
                });
            }
            None => None,
        };
        let uninstall_retention = days(&var, "UNINSTALL_RETENTION_DAYS", "30", 36_500.0)?;
        let personal_data_report_url = url_var(
            &var,
            "PERSONAL_DATA_REPORT_URL",
            "https://api.atlassian.com/app/report-accounts/",
        )?;
        let personal_data_interval = days(&var, "PERSONAL_DATA_INTERVAL_DAYS", "7", 365.0)?;
        let data_residency_path = path_var(&var, "DATA_RESIDENCY_PATH", "/migration")?;
        let forge_events_path = path_var(&var, "FORGE_EVENTS_PATH", "/forge/events")?;
        let forge_pre_uninstall_path =
            path_var(&var, "FORGE_PRE_UNINSTALL_PATH", "/forge/pre-uninstall")?;
        let forge_scheduled_path = path_var(&var, "FORGE_SCHEDULED_PATH", "/forge/scheduled")?;
        let forge_migration_path = path_var(&var, "FORGE_MIGRATION_PATH", "/forge/migration")?;
        let module_keys = |name| -> Vec<String> {
            var(name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let forge_module_keys = ForgeModuleKeys {
            events: module_keys("FORGE_EVENTS_MODULE_KEYS"),
            pre_uninstall: module_keys("FORGE_PRE_UNINSTALL_MODULE_KEYS"),
            scheduled: module_keys("FORGE_SCHEDULED_MODULE_KEYS"),
            migration: module_keys("FORGE_MIGRATION_MODULE_KEYS"),
        };
        let forge_cors_origins = var("FORGE_CORS_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| {
                crate::cors::OriginPattern::parse(o).map_err(|message| ConfigError {
                    var: "FORGE_CORS_ORIGINS",
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let forge_api_base_url = url_var(&var, "FORGE_API_BASE_URL", "https://api.atlassian.com")?;
        let forge_graphql_url = url_var(
            &var,
            "FORGE_GRAPHQL_URL",
            "https://api.atlassian.com/graphql",
        )?;
        let forge_impersonation_context_id = var("FORGE_IMPERSONATION_CONTEXT_ID")
            .unwrap_or_else(|| crate::forge::impersonation::DEFAULT_CONTEXT_ID_TEMPLATE.to_owned());
        crate::forge::impersonation::check_context_id_template(&forge_impersonation_context_id)
            .map_err(|message| ConfigError {
                var: "FORGE_IMPERSONATION_CONTEXT_ID",
                message,
            })?;
        let forge_event_attempts: u32 = parse(&var, "FORGE_EVENT_MAX_ATTEMPTS", "8")?;
        let forge_connect_on_forge: bool = parse(&var, "FORGE_CONNECT_ON_FORGE", "false")?;
        if forge_event_attempts == 0 || forge_event_attempts > 100 {
            return Err(ConfigError {
                var: "FORGE_EVENT_MAX_ATTEMPTS",
                message: format!("{forge_event_attempts}: must be 1 to 100"),
            });
        }
        let forge_event_poll = Duration::from_millis(
            parse::<std::num::NonZeroU64>(&var, "FORGE_EVENT_POLL_MS", "1000")?.get(),
        );
        let data_residency_realms: Vec<String> = var("DATA_RESIDENCY_REALMS")
            .unwrap_or_else(|| "US,EU,DE,AU,CA,IN,JP,KR,SG,UK,CH".to_owned())
            .split(',')
            .map(|r| r.trim().to_ascii_uppercase())
            .filter(|r| !r.is_empty())
            .collect();
        let purge_interval = parse::<std::num::NonZeroU64>(&var, "PURGE_INTERVAL_SECS", "3600")?;
        let forge_jwks_url = url_var(
            &var,
            "FORGE_JWKS_URL",
            "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json",
        )?;
        let forge_staging_jwks_url = match var("FORGE_STAGING_JWKS_URL") {
            Some(url) if url.trim().is_empty() || url.trim() == "off" => None,
            url => Some(http_url(
                "FORGE_STAGING_JWKS_URL",
                url.as_deref()
                    .unwrap_or("https://forge.cdn.stg.atlassian-dev.net/.well-known/jwks.json"),
            )?),
        };
        let forge_ic_jwks_template = var("FORGE_IC_JWKS_URL_TEMPLATE")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        if let Some(template) = &forge_ic_jwks_template {
            crate::auth::forge::IsolatedClouds::new(template, Duration::ZERO, Duration::ZERO)
                .map_err(|message| ConfigError {
                    var: "FORGE_IC_JWKS_URL_TEMPLATE",
                    message,
                })?;
        }
        let forge_app_ari = match var("FORGE_APP_ID") {
            None => None,
            Some(id) => {
                let id = id.trim();
                let uuid = id
                    .strip_prefix(crate::auth::forge::APP_ARI_PREFIX)
                    .unwrap_or(id);
                if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(ConfigError {
                        var: "FORGE_APP_ID",
                        message: format!(
                            "{id:?}: must be ari:cloud:ecosystem::app/<uuid> or the uuid"
                        ),
                    });
                }
                Some(format!("{}{uuid}", crate::auth::forge::APP_ARI_PREFIX))
            }
        };
        let leeway: u64 = parse(&var, "JWT_LEEWAY_SECS", "30")?;
        if leeway > MAX_JWT_LEEWAY_SECS {
            return Err(ConfigError {
                var: "JWT_LEEWAY_SECS",
                message: format!("{leeway}: at most {MAX_JWT_LEEWAY_SECS} seconds"),
            });
        }
        let jwt_leeway = Duration::from_secs(leeway);
        let session_max_lifetime = Duration::from_secs(
            parse::<std::num::NonZeroU64>(&var, "SESSION_MAX_LIFETIME_SECS", "28800")?.get(),
        );
        let max_token_lifetime: u64 = parse(&var, "MAX_TOKEN_LIFETIME_SECS", "3600")?;
        if !TOKEN_LIFETIME_RANGE_SECS.contains(&max_token_lifetime) {
            return Err(ConfigError {
                var: "MAX_TOKEN_LIFETIME_SECS",
                message: format!(
                    "{max_token_lifetime}: must be from {} to {} seconds",
                    TOKEN_LIFETIME_RANGE_SECS.start(),
                    TOKEN_LIFETIME_RANGE_SECS.end()
                ),
            });
        }
        let allowed_base_urls = HostPatterns::parse(
            &var("ALLOWED_BASE_URLS").unwrap_or_else(|| DEFAULT_ALLOWED_BASE_URLS.to_owned()),
        )
        .map_err(|message| ConfigError {
            var: "ALLOWED_BASE_URLS",
            message,
        })?;
        let db_pool_size = parse::<NonZeroU32>(&var, "DB_POOL_SIZE", "10")?.get();
        let db_acquire_timeout = Duration::from_millis(
            parse::<std::num::NonZeroU64>(
                &var,
                "DB_ACQUIRE_TIMEOUT_MS",
                &crate::store::DEFAULT_ACQUIRE_TIMEOUT
                    .as_millis()
                    .to_string(),
            )?
            .get(),
        );
        let max_body_bytes = parse::<NonZeroUsize>(&var, "MAX_BODY_BYTES", "1048576")?.get();
        let max_header_bytes = parse::<NonZeroUsize>(&var, "MAX_HEADER_BYTES", "32768")?.get();
        let max_concurrent_requests: usize = parse(&var, "MAX_CONCURRENT_REQUESTS", "1024")?;
        let max_anonymous_requests = parse::<NonZeroUsize>(
            &var,
            "MAX_ANONYMOUS_REQUESTS",
            &(max_concurrent_requests / 4).max(1).to_string(),
        )?
        .get();
        let max_concurrent_requests_per_tenant = parse::<NonZeroUsize>(
            &var,
            "MAX_CONCURRENT_REQUESTS_PER_TENANT",
            &(max_concurrent_requests / 8).max(1).to_string(),
        )?
        .get();
        let body_read_timeout: u64 = parse(&var, "BODY_READ_TIMEOUT_SECS", "10")?;
        if !(1..=MAX_BODY_READ_TIMEOUT_SECS).contains(&body_read_timeout) {
            return Err(ConfigError {
                var: "BODY_READ_TIMEOUT_SECS",
                message: format!(
                    "{body_read_timeout}: from 1 to {MAX_BODY_READ_TIMEOUT_SECS} seconds"
                ),
            });
        }
        let header_read_timeout: u64 = parse(&var, "HEADER_READ_TIMEOUT_SECS", "10")?;
        if !(1..=MAX_HEADER_READ_TIMEOUT_SECS).contains(&header_read_timeout) {
            return Err(ConfigError {
                var: "HEADER_READ_TIMEOUT_SECS",
                message: format!(
                    "{header_read_timeout}: from 1 to {MAX_HEADER_READ_TIMEOUT_SECS} seconds"
                ),
            });
        }
        let metrics_port: Option<u16> = var("METRICS_PORT")
            .map(|_| parse(&var, "METRICS_PORT", ""))
            .transpose()?;
        if metrics_port.is_some_and(|m| m != 0 && m == port) {
            return Err(ConfigError {
                var: "METRICS_PORT",
                message: format!("{port}: must differ from PORT"),
            });
        }
        let metrics_bind: IpAddr = parse(&var, "METRICS_BIND", &bind.to_string())?;
        Ok(Config {
            bind,
            port,
            base_url,
            database_url,
            migration_database_url,
            db_pool_size,
            db_acquire_timeout,
            tenant_cache_size: parse(&var, "TENANT_CACHE_SIZE", "100000")?,
            install_keys_url,
            install_keys_timeout: Duration::from_millis(parse(
                &var,
                "INSTALL_KEYS_TIMEOUT_MS",
                "5000",
            )?),
            allowed_base_urls,
            oauth_auth_server_url,
            product_timeout: Duration::from_secs(parse(&var, "PRODUCT_TIMEOUT_SECS", "20")?),
            jwt_leeway,
            session_max_lifetime,
            max_token_lifetime: Duration::from_secs(max_token_lifetime),
            max_body_bytes,
            max_header_bytes,
            request_timeout: Duration::from_secs(parse(&var, "REQUEST_TIMEOUT_SECS", "30")?),
            log_format: parse(&var, "LOG_FORMAT", "pretty")?,
            max_concurrent_requests,
            max_anonymous_requests,
            max_concurrent_requests_per_tenant,
            body_read_timeout: Duration::from_secs(body_read_timeout),
            header_read_timeout: Duration::from_secs(header_read_timeout),
            tenant_rate_limit: parse(&var, "TENANT_RATE_LIMIT", "0")?,
            tenant_write_rate_limit: parse(&var, "TENANT_WRITE_RATE_LIMIT", "20")?,
            metrics_token: var("METRICS_TOKEN").map(crate::store::SharedSecret::new),
            metrics_port,
            metrics_bind,
            secrets,
            secrets_allow_plaintext,
            secrets_key_file: PathBuf::from(
                var("SECRETS_KEY_FILE").unwrap_or_else(|| "connect-axum.secrets.key".to_owned()),
            ),
            uninstall_retention,
            forge_app_ari,
            data_residency_path,
            data_residency_realms,
            forge_events_path,
            forge_pre_uninstall_path,
            forge_scheduled_path,
            forge_migration_path,
            forge_module_keys,
            forge_cors_origins,
            forge_api_base_url,
            forge_graphql_url,
            forge_impersonation_context_id,
            forge_event_attempts,
            forge_event_poll,
            forge_connect_on_forge,
            personal_data_report_url,
            personal_data_interval,
            forge_jwks_url,
            forge_staging_jwks_url,
            forge_ic_jwks_template,
            forge_jwks_refresh: Duration::from_secs(parse(&var, "FORGE_JWKS_REFRESH_SECS", "30")?),
            purge_interval: Duration::from_secs(purge_interval.get()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_give_a_local_embedded_server() {
        let c = config(&[]).unwrap();
        assert_eq!(c.port, 3000);
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert_eq!(c.base_url.as_str(), "http://localhost:3000/");
        assert_eq!(c.database_url, "sqlite://connect-axum.db");
        assert_eq!(c.jwt_leeway, Duration::from_secs(30));
        assert_eq!(c.max_token_lifetime, Duration::from_secs(3600));
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert!(c.allowed_base_urls.matches("acme.atlassian.net"));
    }

    #[test]
    fn the_tenant_rate_limit_is_off_by_default() {
        assert_eq!(config(&[]).unwrap().tenant_rate_limit, 0);
        assert_eq!(
            config(&[("TENANT_RATE_LIMIT", "500")])
                .unwrap()
                .tenant_rate_limit,
            500
        );
    }

    #[test]
    fn a_tenant_gets_an_eighth_of_the_slots_its_body_ten_seconds_and_its_users_twenty_writes() {
        let c = config(&[]).unwrap();
        assert_eq!(c.max_concurrent_requests_per_tenant, 128);
        assert_eq!(c.body_read_timeout, Duration::from_secs(10));
        assert_eq!(c.tenant_write_rate_limit, 20);
        let c = config(&[("MAX_CONCURRENT_REQUESTS", "4")]).unwrap();
        assert_eq!(c.max_concurrent_requests_per_tenant, 1);
        let c = config(&[("MAX_CONCURRENT_REQUESTS_PER_TENANT", "9")]).unwrap();
        assert_eq!(c.max_concurrent_requests_per_tenant, 9);
        for refused in [
            ("MAX_CONCURRENT_REQUESTS_PER_TENANT", "0"),
            ("BODY_READ_TIMEOUT_SECS", "0"),
            ("BODY_READ_TIMEOUT_SECS", "31"),
        ] {
            assert_eq!(config(&[refused]).unwrap_err().var, refused.0);
        }
    }

    #[test]
    fn anonymous_work_gets_a_quarter_of_the_tenant_slots_unless_set() {
        let c = config(&[]).unwrap();
        assert_eq!(
            (c.max_concurrent_requests, c.max_anonymous_requests),
            (1024, 256)
        );
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        let c = config(&[("MAX_CONCURRENT_REQUESTS", "2")]).unwrap();
        assert_eq!(c.max_anonymous_requests, 1);
        let c = config(&[("MAX_ANONYMOUS_REQUESTS", "7")]).unwrap();
        assert_eq!(c.max_anonymous_requests, 7);
        let c = config(&[("HEADER_READ_TIMEOUT_SECS", "30")]).unwrap();
        assert_eq!(c.header_read_timeout, Duration::from_secs(30));
    }

    #[test]
    fn metrics_are_public_only_on_the_embedded_store_or_behind_a_token() {
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let pg = [("DATABASE_URL", "postgres://db/app"), ("SECRETS_KEY", key)];
        assert!(config(&[]).unwrap().metrics_on_public_port());
        assert!(!config(&pg).unwrap().metrics_on_public_port());
        let with_token = [pg[0], pg[1], ("METRICS_TOKEN", "t")];
        assert!(config(&with_token).unwrap().metrics_on_public_port());
        let c = config(&[("METRICS_PORT", "9100"), ("METRICS_TOKEN", "t")]).unwrap();
        assert!(!c.metrics_on_public_port());
        assert_eq!((c.metrics_port, c.metrics_bind), (Some(9100), c.bind));
        let c = config(&[("BIND", "0.0.0.0"), ("METRICS_BIND", "127.0.0.1")]).unwrap();
        assert_eq!(c.metrics_bind.to_string(), "127.0.0.1");
    }

    #[test]
    fn base_url_follows_the_port_by_default() {
        assert_eq!(
            config(&[("PORT", "8080")]).unwrap().base_url.as_str(),
            "http://localhost:8080/"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("PORT", "http"),
            ("BIND", "localhost:1"),
            ("BASE_URL", "not a url"),
            ("BASE_URL", "ftp://x.example"),
            ("BASE_URL", "https://x.example/?q=1"),
            ("DATABASE_URL", "mysql://x"),
            ("INSTALL_KEYS_URL", "keys"),
            ("OAUTH_AUTH_SERVER_URL", "auth"),
            ("PRODUCT_TIMEOUT_SECS", "soon"),
            ("ALLOWED_BASE_URLS", "*"),
            ("ALLOWED_BASE_URLS", " , "),
            ("JWT_LEEWAY_SECS", "-1"),
            ("JWT_LEEWAY_SECS", "601"),
            ("JWT_LEEWAY_SECS", "18446744073709551615"),
            ("MAX_TOKEN_LIFETIME_SECS", "899"),
            ("MAX_TOKEN_LIFETIME_SECS", "86401"),
            ("MAX_TOKEN_LIFETIME_SECS", "forever"),
            ("MAX_BODY_BYTES", "0"),
            ("DB_POOL_SIZE", "0"),
            ("LOG_FORMAT", "xml"),
            ("DB_POOL_SIZE", "many"),
            ("DB_ACQUIRE_TIMEOUT_MS", "0"),
            ("DB_ACQUIRE_TIMEOUT_MS", "soon"),
            ("MIGRATION_DATABASE_URL", "sqlite://x.db"),
            ("SECRETS_KEY", "c2hvcnQ="),
            ("UNINSTALL_RETENTION_DAYS", "-1"),
            ("UNINSTALL_RETENTION_DAYS", "NaN"),
            ("PURGE_INTERVAL_SECS", "0"),
            ("SECRETS_ALLOW_PLAINTEXT", "sometimes"),
            ("SESSION_MAX_LIFETIME_SECS", "0"),
            ("SESSION_MAX_LIFETIME_SECS", "8h"),
            ("HEADER_READ_TIMEOUT_SECS", "0"),
            ("HEADER_READ_TIMEOUT_SECS", "31"),
            ("MAX_ANONYMOUS_REQUESTS", "0"),
            ("METRICS_PORT", "metrics"),
            ("METRICS_PORT", "3000"),
            ("METRICS_BIND", "everywhere"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{value}");
        }
    }

    #[test]
    fn postgres_needs_a_secrets_key_and_the_embedded_store_does_not() {
        let err = config(&[("DATABASE_URL", "postgres://db/app")]).unwrap_err();
        assert_eq!(err.var, "SECRETS_KEY");
        assert!(err.to_string().contains("required"), "{err}");
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let c = config(&[("DATABASE_URL", "postgres://db/app"), ("SECRETS_KEY", key)]).unwrap();
        assert!(c.secrets.is_some());
        assert!(!format!("{c:?}").contains(key), "Debug shows the key");
        assert!(config(&[]).unwrap().secrets.is_none());
    }

    #[test]
    fn session_chains_last_a_working_day_unless_configured() {
        assert_eq!(
            config(&[]).unwrap().session_max_lifetime,
            crate::auth::DEFAULT_SESSION_MAX_LIFETIME
        );
        let c = config(&[("SESSION_MAX_LIFETIME_SECS", "600")]).unwrap();
        assert_eq!(c.session_max_lifetime, Duration::from_secs(600));
    }

    #[test]
    fn a_migration_login_needs_a_postgres_store() {
        let key = (
            "SECRETS_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        );
        let owner = ("MIGRATION_DATABASE_URL", "postgres://owner@db/app");
        let c = config(&[("DATABASE_URL", "postgres://serving@db/app"), key, owner]).unwrap();
        assert_eq!(
            c.store_options().unwrap().migration_url.as_deref(),
            Some("postgres://owner@db/app")
        );
        assert_eq!(config(&[owner]).unwrap_err().var, "MIGRATION_DATABASE_URL");
        assert_eq!(config(&[]).unwrap().migration_database_url, None);
    }

    #[test]
    fn the_acquire_timeout_keeps_an_outage_under_two_seconds_by_default() {
        assert_eq!(
            config(&[]).unwrap().db_acquire_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(
            config(&[("DB_ACQUIRE_TIMEOUT_MS", "250")])
                .unwrap()
                .db_acquire_timeout,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn retention_is_in_days_and_may_be_a_fraction() {
        assert_eq!(
            config(&[]).unwrap().uninstall_retention,
            Duration::from_secs(30 * 86_400)
        );
        let c = config(&[("UNINSTALL_RETENTION_DAYS", "0.5")]).unwrap();
        assert_eq!(c.uninstall_retention, Duration::from_secs(43_200));
        assert_eq!(
            config(&[("UNINSTALL_RETENTION_DAYS", "0")])
                .unwrap()
                .uninstall_retention,
            Duration::ZERO
        );
    }

    #[test]
    fn host_patterns_match_subdomains_only() {
        let p = HostPatterns::parse("*.atlassian.net, localhost").unwrap();
        assert!(p.matches("acme.atlassian.net"));
        assert!(p.matches("ACME.Atlassian.net"));
        assert!(p.matches("a.b.atlassian.net"));
        assert!(p.matches("localhost"));
        assert!(!p.matches("atlassian.net"));
        assert!(!p.matches("evilatlassian.net"));
        assert!(!p.matches("atlassian.net.evil.com"));
        assert!(!p.matches("localhost.evil.com"));
    }
}
