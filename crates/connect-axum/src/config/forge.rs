//! The Forge section: the app's id, where Forge's signing keys are published, the paths and module
//! keys of the app-level endpoints, CORS of `requestRemote`, Atlassian's APIs, the event queue,
//! and the checks of the settings that are templates.

use std::time::Duration;

use url::Url;

use crate::cors::OriginPattern;

use super::values::{ConfigError, http_url, parse, path_var, url_var};

/// The prefix of a Forge app's ARI, the `aud` of its invocation tokens.
pub const APP_ARI_PREFIX: &str = "ari:cloud:ecosystem::app/";

/// What an Isolated Cloud URL template holds where the label goes.
pub const IC_LABEL_PLACEHOLDER: &str = "{icLabel}";

/// The `contextIds` entry sent for an installation, with the placeholders `{product}` (e.g.
/// `jira`), `{cloudId}` and `{installationId}`.
///
/// It is a setting because the form is unconfirmed: the docs say only "the context ARI of the
/// installation"; Atlassian staff answered `ari:cloud:jira:<cloudId>:workspace/<cloudId>` (CDAC
/// 94615); Atlassian's Spring Boot bridge sends `ari:cloud:jira::site/<cloudId>`, the default.
pub const DEFAULT_CONTEXT_ID_TEMPLATE: &str = "ari:cloud:{product}::site/{cloudId}";

const CONTEXT_ID_PLACEHOLDERS: [&str; 3] = ["product", "cloudId", "installationId"];

/// Whether `template` has only the placeholders [`DEFAULT_CONTEXT_ID_TEMPLATE`] lists.
///
/// # Errors
/// The first unknown or unclosed placeholder.
pub fn check_context_id_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            return Err(format!("unclosed placeholder in {template:?}"));
        };
        let name = &rest[start + 1..start + len];
        if !CONTEXT_ID_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}}: the template may use {{product}}, {{cloudId}} and {{installationId}}"
            ));
        }
        rest = &rest[start + len + 1..];
    }
    Ok(())
}

/// Whether `template` is an Isolated Cloud JWKS URL template: [`IC_LABEL_PLACEHOLDER`] once, e.g.
/// `https://forge.cdn.{icLabel}.example/.well-known/jwks.json`, and a URL with a label in its place.
///
/// # Errors
/// The placeholder is missing or repeated, or the URL does not parse.
pub fn check_ic_jwks_template(template: &str) -> Result<(), String> {
    if template.matches(IC_LABEL_PLACEHOLDER).count() != 1 {
        return Err(format!(
            "{template:?} must hold {IC_LABEL_PLACEHOLDER} once"
        ));
    }
    Url::parse(&template.replace(IC_LABEL_PLACEHOLDER, "label"))
        .map_err(|e| format!("{template:?}: {e}"))?;
    Ok(())
}

/// The manifest's module keys each app-level Forge endpoint takes calls of, when pinned: Forge
/// puts the invoked endpoint's key in `app.module.key` (a user cannot choose it, though a UI call
/// can choose its path). Empty takes any `core:endpoint` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgeModuleKeys {
    /// FORGE_EVENTS_MODULE_KEYS: of the lifecycle and product event deliveries.
    pub events: Vec<String>,
    /// FORGE_PRE_UNINSTALL_MODULE_KEYS: of the preUninstall hook.
    pub pre_uninstall: Vec<String>,
    /// FORGE_SCHEDULED_MODULE_KEYS: of the scheduled trigger.
    pub scheduled: Vec<String>,
    /// FORGE_MIGRATION_MODULE_KEYS: of the `migration:dataResidency` hooks.
    pub migration: Vec<String>,
}

/// The Forge Remote backend: its app, Forge's keys, its endpoints, Atlassian's APIs, the queue.
#[derive(Debug, Clone)]
pub struct ForgeConfig {
    /// FORGE_APP_ID: the Forge app's id (`ari:cloud:ecosystem::app/<uuid>`, or the bare uuid);
    /// unset turns Forge Remote routes off (they answer 401 `forge_not_configured`).
    pub app_ari: Option<String>,
    /// FORGE_JWKS_URL: where Forge's token signing keys are published (default Atlassian's
    /// production JWKS).
    pub jwks_url: Url,
    /// FORGE_STAGING_JWKS_URL: the JWKS of Forge's staging environment, for tokens whose
    /// `app.apiBaseUrl` is on `https://api.stg.atlassian.com/` (default Atlassian's staging JWKS;
    /// `off`: such tokens are verified with production's keys, and fail).
    pub staging_jwks_url: Option<Url>,
    /// FORGE_IC_JWKS_URL_TEMPLATE: the JWKS URL of an Isolated Cloud, `{icLabel}` standing for
    /// the token's label (given when the app is onboarded there); unset refuses tokens with an
    /// `icLabel` (401 `isolated_cloud_not_configured`).
    pub ic_jwks_template: Option<String>,
    /// FORGE_JWKS_REFRESH_SECS: a token naming an unknown key refetches the JWKS at most this
    /// often (default 30).
    pub jwks_refresh: Duration,
    /// FORGE_EVENTS_PATH: where Forge trigger deliveries (lifecycle and product events) are
    /// received (default `/forge/events`).
    pub events_path: String,
    /// FORGE_PRE_UNINSTALL_PATH: where the preUninstall hook is received (default
    /// `/forge/pre-uninstall`).
    pub pre_uninstall_path: String,
    /// FORGE_SCHEDULED_PATH: where the scheduled trigger that refreshes the stored system token is
    /// received (default `/forge/scheduled`).
    pub scheduled_path: String,
    /// FORGE_MIGRATION_PATH: where Forge's `migration:dataResidency` hooks are served (default
    /// `/forge/migration`: `…/schedule`, `/start`, `/status`, `/commit`, `/rollback`).
    pub migration_path: String,
    /// The `app.module.key`s each app-level Forge endpoint takes (FORGE_EVENTS_MODULE_KEYS,
    /// FORGE_PRE_UNINSTALL_MODULE_KEYS, FORGE_SCHEDULED_MODULE_KEYS, FORGE_MIGRATION_MODULE_KEYS:
    /// comma-separated; empty, the default, takes any endpoint module's call as the app).
    pub module_keys: ForgeModuleKeys,
    /// FORGE_CORS_ORIGINS: comma-separated origins whose browsers may call the Forge routes
    /// directly (`requestRemote`): `https://host` exactly, or `https://*.suffix` for any
    /// subdomain. Their preflight is answered without a token; the real request still needs one.
    /// Empty (default): no CORS.
    pub cors_origins: Vec<OriginPattern>,
    /// FORGE_API_BASE_URL: Atlassian's API host, for Forge hosted storage (default
    /// `https://api.atlassian.com`).
    pub api_base_url: Url,
    /// FORGE_GRAPHQL_URL: Atlassian's GraphQL API, for offline user impersonation (default
    /// `https://api.atlassian.com/graphql`).
    pub graphql_url: Url,
    /// FORGE_IMPERSONATION_CONTEXT_ID: the `contextIds` entry of an offline user token request,
    /// with `{product}`, `{cloudId}`, `{installationId}` (default
    /// `ari:cloud:{product}::site/{cloudId}`; the form is contested, hence a setting).
    pub impersonation_context_id: String,
    /// FORGE_EVENT_MAX_ATTEMPTS: how many times the app's handlers run a queued event before it
    /// is given up (default 8).
    pub event_attempts: u32,
    /// FORGE_CONNECT_ON_FORGE: the app is Connect on Forge, so every site's Connect install
    /// (`/installed`, with the installationId) makes its tenant: a Forge install event for an
    /// installation no tenant has yet is answered 409 `connect_install_pending` (Forge delivers
    /// it again 60 s later) until its last retry, which makes a Forge-born tenant after all
    /// (default false: a Forge install event makes the tenant at once).
    pub connect_on_forge: bool,
    /// FORGE_EVENT_POLL_MS: how often the event worker looks for due events queued by other
    /// replicas or due for a retry (default 1000; events this replica queues run at once).
    pub event_poll: Duration,
}

impl ForgeConfig {
    /// Reads the section from `var`.
    pub(super) fn from_vars(
        var: &impl Fn(&'static str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let events_path = path_var(var, "FORGE_EVENTS_PATH", "/forge/events")?;
        let pre_uninstall_path = path_var(var, "FORGE_PRE_UNINSTALL_PATH", "/forge/pre-uninstall")?;
        let scheduled_path = path_var(var, "FORGE_SCHEDULED_PATH", "/forge/scheduled")?;
        let migration_path = path_var(var, "FORGE_MIGRATION_PATH", "/forge/migration")?;
        let module_keys = |name| -> Vec<String> {
            var(name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let module_keys = ForgeModuleKeys {
            events: module_keys("FORGE_EVENTS_MODULE_KEYS"),
            pre_uninstall: module_keys("FORGE_PRE_UNINSTALL_MODULE_KEYS"),
            scheduled: module_keys("FORGE_SCHEDULED_MODULE_KEYS"),
            migration: module_keys("FORGE_MIGRATION_MODULE_KEYS"),
        };
        let cors_origins = var("FORGE_CORS_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| {
                OriginPattern::parse(o).map_err(|message| ConfigError {
                    var: "FORGE_CORS_ORIGINS",
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let api_base_url = url_var(var, "FORGE_API_BASE_URL", "https://api.atlassian.com")?;
        let graphql_url = url_var(
            var,
            "FORGE_GRAPHQL_URL",
            "https://api.atlassian.com/graphql",
        )?;
        let impersonation_context_id = var("FORGE_IMPERSONATION_CONTEXT_ID")
            .unwrap_or_else(|| DEFAULT_CONTEXT_ID_TEMPLATE.to_owned());
        check_context_id_template(&impersonation_context_id).map_err(|message| ConfigError {
            var: "FORGE_IMPERSONATION_CONTEXT_ID",
            message,
        })?;
        let event_attempts: u32 = parse(var, "FORGE_EVENT_MAX_ATTEMPTS", "8")?;
        let connect_on_forge: bool = parse(var, "FORGE_CONNECT_ON_FORGE", "false")?;
        if event_attempts == 0 || event_attempts > 100 {
            return Err(ConfigError {
                var: "FORGE_EVENT_MAX_ATTEMPTS",
                message: format!("{event_attempts}: must be 1 to 100"),
            });
        }
        let event_poll = Duration::from_millis(
            parse::<std::num::NonZeroU64>(var, "FORGE_EVENT_POLL_MS", "1000")?.get(),
        );
        let jwks_url = url_var(
            var,
            "FORGE_JWKS_URL",
            "https://forge.cdn.prod.atlassian-dev.net/.well-known/jwks.json",
        )?;
        let staging_jwks_url = match var("FORGE_STAGING_JWKS_URL") {
            Some(url) if url.trim().is_empty() || url.trim() == "off" => None,
            url => Some(http_url(
                "FORGE_STAGING_JWKS_URL",
                url.as_deref()
                    .unwrap_or("https://forge.cdn.stg.atlassian-dev.net/.well-known/jwks.json"),
            )?),
        };
        let ic_jwks_template = var("FORGE_IC_JWKS_URL_TEMPLATE")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        if let Some(template) = &ic_jwks_template {
            check_ic_jwks_template(template).map_err(|message| ConfigError {
                var: "FORGE_IC_JWKS_URL_TEMPLATE",
                message,
            })?;
        }
        Ok(Self {
            app_ari: app_ari(var)?,
            jwks_url,
            staging_jwks_url,
            ic_jwks_template,
            jwks_refresh: Duration::from_secs(parse(var, "FORGE_JWKS_REFRESH_SECS", "30")?),
            events_path,
            pre_uninstall_path,
            scheduled_path,
            migration_path,
            module_keys,
            cors_origins,
            api_base_url,
            graphql_url,
            impersonation_context_id,
            event_attempts,
            connect_on_forge,
            event_poll,
        })
    }
}

/// `FORGE_APP_ID` as the app's ARI: the ARI, or the bare uuid with [`APP_ARI_PREFIX`] put before it.
fn app_ari(var: &impl Fn(&'static str) -> Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(id) = var("FORGE_APP_ID") else {
        return Ok(None);
    };
    let id = id.trim();
    let uuid = id.strip_prefix(APP_ARI_PREFIX).unwrap_or(id);
    if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ConfigError {
            var: "FORGE_APP_ID",
            message: format!("{id:?}: must be ari:cloud:ecosystem::app/<uuid> or the uuid"),
        });
    }
    Ok(Some(format!("{APP_ARI_PREFIX}{uuid}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{config, each_is_refused_by_name};

    #[test]
    fn templates_may_use_only_the_known_placeholders() {
        assert!(check_context_id_template(DEFAULT_CONTEXT_ID_TEMPLATE).is_ok());
        assert!(check_context_id_template("ari:cloud:jira:{cloudId}:workspace/{cloudId}").is_ok());
        assert!(
            check_context_id_template("ari:cloud:ecosystem::installation/{installationId}").is_ok()
        );
        assert!(check_context_id_template("ari:cloud:jira::site/{cloudid}").is_err());
        assert!(check_context_id_template("ari:cloud:jira::site/{cloudId").is_err());
    }

    #[test]
    fn a_bare_forge_app_id_becomes_the_app_ari() {
        let ari = |id| config(&[("FORGE_APP_ID", id)]).unwrap().forge.app_ari;
        let expected = Some("ari:cloud:ecosystem::app/0a1b-2c".to_owned());
        assert_eq!(ari("0a1b-2c"), expected);
        assert_eq!(ari(" ari:cloud:ecosystem::app/0a1b-2c "), expected);
        assert_eq!(config(&[]).unwrap().forge.app_ari, None);
    }

    #[test]
    fn bad_forge_values_name_the_variable() {
        each_is_refused_by_name(&[
            ("FORGE_APP_ID", "ari:cloud:ecosystem::app/"),
            ("FORGE_APP_ID", "app/../x"),
            ("FORGE_EVENTS_PATH", "events"),
            ("FORGE_EVENT_MAX_ATTEMPTS", "0"),
            ("FORGE_EVENT_MAX_ATTEMPTS", "101"),
            (
                "FORGE_IC_JWKS_URL_TEMPLATE",
                "https://forge.cdn.example/jwks.json",
            ),
            (
                "FORGE_IMPERSONATION_CONTEXT_ID",
                "ari:cloud:jira::site/{site}",
            ),
        ]);
    }
}
