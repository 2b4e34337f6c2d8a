//! Forge Remote: requests from a Forge app's remote backend, authenticated by the Forge
//! Invocation Token (FIT), an RS256 JWT verified with Atlassian's published JWKS. The FIT's
//! `app.installationId` resolves the same tenant a Connect install stored, so one site reaches the
//! same rows through either door. A FIT from a user's UI is scoped like a Jira context token
//! ([`TokenKind::ForgeUser`]); one of the app itself reaches the whole site ([`TokenKind::ForgeApp`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::product::{Caller, ProductClient, ProductError};
pub use crate::protocol::ForgeToken;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::{AuthError, Authenticator, Tenant, TokenKind, jwt};
use crate::error::Error;
use crate::store::{LifecycleToken, TenantRecord};

/// The `iss` of every Forge Invocation Token.
pub const FIT_ISSUER: &str = "forge/invocation-token";

/// The header that carries the app's system token, when the manifest asks for one.
pub const SYSTEM_TOKEN_HEADER: &str = "x-forge-oauth-system";

/// The header that carries the invoking user's token, when the manifest asks for one.
pub const USER_TOKEN_HEADER: &str = "x-forge-oauth-user";

/// The prefix of a Forge app's ARI, the `aud` of its invocation tokens.
pub const APP_ARI_PREFIX: &str = "ari:cloud:ecosystem::app/";

/// A JWKS larger than this is not read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// How long after a failed JWKS fetch the next may start; it doubles with each failure in a
/// row, up to the refresh interval.
pub const JWKS_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// Forge's signing keys by `kid`, fetched from the JWKS URL and refetched when a token names a
/// key not seen yet (key rotation): at most once per `min_refresh` after a fetch that worked,
/// after a short backoff when one failed, and never two at once.
#[derive(Clone)]
pub struct ForgeKeys {
    url: String,
    min_refresh: Duration,
    http: reqwest::Client,
    keys: Arc<RwLock<HashMap<String, Arc<DecodingKey>>>>,
    gate: Arc<tokio::sync::Mutex<FetchGate>>,
}

/// When the next JWKS fetch may start; its lock is held for the whole of a fetch.
#[derive(Default)]
struct FetchGate {
    not_before: Option<Instant>,
    /// The wait after the next failure.
    backoff: Duration,
    /// The refusal while waiting: the last fetch failed, or it worked and lacked the key.
    failed: bool,
}

impl ForgeKeys {
    /// Keys come from `GET url` (a JWKS), fetched at most once per `min_refresh`, or
    /// [`JWKS_RETRY_BACKOFF`] (doubling) after a failed fetch; each fetch gives up after
    /// `timeout`.
    pub fn new(url: &url::Url, min_refresh: Duration, timeout: Duration) -> Self {
        let http = crate::outbound::http_client(timeout);
        Self {
            url: url.to_string(),
            min_refresh,
            http,
            keys: Arc::default(),
            gate: Arc::new(tokio::sync::Mutex::new(FetchGate {
                backoff: JWKS_RETRY_BACKOFF.min(min_refresh),
                ..FetchGate::default()
            })),
        }
    }

    fn cached(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(kid)
            .cloned()
    }

    /// The RSA key `kid`, from memory or from a fresh JWKS.
    pub async fn get(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        let mut gate = self.gate.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.cached(kid) {
            return Ok(key);
        }
        if gate.not_before.is_some_and(|at| Instant::now() < at) {
            return Err(if gate.failed {
                AuthError::KeyServerUnavailable
            } else {
                AuthError::UnknownKeyId
            });
        }
        match self.fetch().await {
            Ok(keys) => {
                // Only a fetch that worked starts the refresh interval: at a cold start, a failed
                // one must not leave every token refused for all of it.
                *gate = FetchGate {
                    not_before: Some(Instant::now() + self.min_refresh),
                    backoff: JWKS_RETRY_BACKOFF.min(self.min_refresh),
                    failed: false,
                };
                let found = keys.get(kid).cloned();
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
                found.ok_or(AuthError::UnknownKeyId)
            }
            Err(e) => {
                let wait = gate.backoff;
                *gate = FetchGate {
                    not_before: Some(Instant::now() + wait),
                    backoff: wait.saturating_mul(2).min(self.min_refresh),
                    failed: true,
                };
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<DecodingKey>>, AuthError> {
        let unavailable = |e: &dyn fmt::Display| {
            tracing::warn!(error = %e, "the Forge JWKS could not be fetched");
            AuthError::KeyServerUnavailable
        };
        let mut response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        if !response.status().is_success() {
            return Err(unavailable(&response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(unavailable(&"the JWKS is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| unavailable(&e))?;
        Ok(set
            .keys
            .iter()
            .filter(|jwk| {
                matches!(
                    jwk.algorithm,
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
                )
            })
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, Arc::new(key)))
            })
            .collect())
    }
}

/// Forge Remote settings of an [`Authenticator`].
#[derive(Clone)]
pub struct ForgeSettings {
    /// The app's ARI, `ari:cloud:ecosystem::app/<uuid>`: the `aud` tokens must carry.
    pub app_ari: String,
    /// Production's keys: every token not chosen for another set below.
    pub keys: ForgeKeys,
    /// Staging's keys, for tokens whose (unverified) `app.apiBaseUrl` is on [`STAGING_API_PREFIX`];
    /// `None` refuses those tokens with production's keys.
    pub staging_keys: Option<ForgeKeys>,
    /// The JWKS URL template of Isolated Clouds (`{icLabel}` replaced by the token's label), and
    /// how their keys are fetched; `None` refuses tokens with an `icLabel`.
    pub isolated_clouds: Option<IsolatedClouds>,
}

/// Where a staging app's calls say their product API is (ACE and atlassian-connect-play choose
/// staging's JWKS by it).
pub const STAGING_API_PREFIX: &str = "https://api.stg.atlassian.com/";

/// The keys of each Isolated Cloud, by label, fetched from a URL template.
#[derive(Clone)]
pub struct IsolatedClouds {
    template: String,
    min_refresh: Duration,
    timeout: Duration,
    keys: moka::sync::Cache<String, ForgeKeys>,
    /// The label is read before the token is verified: anyone can name new ones, so new key
    /// sets (each a fetch) are made at most [`NEW_ISOLATED_CLOUDS_PER_MINUTE`] a minute.
    new_clouds: Arc<governor::DefaultDirectRateLimiter>,
}

/// How many Isolated Clouds not seen before may have their keys fetched per minute.
pub const NEW_ISOLATED_CLOUDS_PER_MINUTE: u32 = 6;

impl IsolatedClouds {
    /// `template` holds `{icLabel}` exactly where the label goes, e.g.
    /// `https://forge.cdn.{icLabel}.example/.well-known/jwks.json`.
    pub fn new(template: &str, min_refresh: Duration, timeout: Duration) -> Result<Self, String> {
        if template.matches(IC_LABEL_PLACEHOLDER).count() != 1 {
            return Err(format!(
                "{template:?} must hold {IC_LABEL_PLACEHOLDER} once"
            ));
        }
        url::Url::parse(&template.replace(IC_LABEL_PLACEHOLDER, "label"))
            .map_err(|e| format!("{template:?}: {e}"))?;
        Ok(Self {
            template: template.to_owned(),
            min_refresh,
            timeout,
            keys: moka::sync::Cache::builder().max_capacity(64).build(),
            new_clouds: Arc::new(governor::RateLimiter::direct(governor::Quota::per_minute(
                std::num::NonZeroU32::new(NEW_ISOLATED_CLOUDS_PER_MINUTE).expect("not zero"),
            ))),
        })
    }

    /// The keys of the cloud `label`, which must be a valid label ([`is_valid_ic_label`]).
    fn of(&self, label: &str) -> Result<ForgeKeys, AuthError> {
        if let Some(keys) = self.keys.get(label) {
            return Ok(keys);
        }
        if self.new_clouds.check().is_err() {
            return Err(AuthError::KeyServerUnavailable);
        }
        let url = url::Url::parse(&self.template.replace(IC_LABEL_PLACEHOLDER, label))
            .map_err(|_| AuthError::InvalidIcLabel)?;
        let keys = ForgeKeys::new(&url, self.min_refresh, self.timeout);
        self.keys.insert(label.to_owned(), keys.clone());
        Ok(keys)
    }
}

/// What an Isolated Cloud URL template holds where the label goes.
pub const IC_LABEL_PLACEHOLDER: &str = "{icLabel}";

/// Whether `label` is an Isolated Cloud label a URL may be built from: `^[a-z0-9_-]{1,50}$`.
pub fn is_valid_ic_label(label: &str) -> bool {
    (1..=50).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The unverified claims that choose the keys a token is verified with.
#[derive(Deserialize)]
struct KeyChoice {
    #[serde(default)]
    app: Option<KeyChoiceApp>,
    #[serde(default, rename = "icLabel")]
    ic_label: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyChoiceApp {
    #[serde(default)]
    api_base_url: Option<serde_json::Value>,
}

impl ForgeSettings {
    /// The key set a token is verified with: an Isolated Cloud's by its label, staging's when its
    /// `app.apiBaseUrl` is on staging's API host, else production's. Chosen from claims not yet
    /// verified; the token must still verify with a key of the set chosen.
    fn keys_for(&self, token: &str) -> Result<ForgeKeys, AuthError> {
        let choice: KeyChoice = jwt::peek_payload(token)?;
        if let Some(label) = choice.ic_label {
            let label = label.as_str().filter(|l| is_valid_ic_label(l));
            let label = label.ok_or(AuthError::InvalidIcLabel)?;
            return self
                .isolated_clouds
                .as_ref()
                .ok_or(AuthError::IsolatedCloudNotConfigured)?
                .of(label);
        }
        let staging = choice
            .app
            .and_then(|a| a.api_base_url)
            .as_ref()
            .and_then(|u| u.as_str())
            .is_some_and(|u| u.starts_with(STAGING_API_PREFIX));
        Ok(match (&self.staging_keys, staging) {
            (Some(staging), true) => staging.clone(),
            _ => self.keys.clone(),
        })
    }
}

/// What a verified Forge invocation carries besides the tenant. It lives as long as the request;
/// the system token it brings is also stored for the tenant (see [`crate::auth::system_tokens`]).
#[derive(Debug, Clone)]
pub struct ForgeInvocation {
    /// `app.installationId`.
    pub installation_id: String,
    /// `app.apiBaseUrl`: where calls to the product go, e.g. `https://api.atlassian.com/ex/jira/<cloudId>`.
    pub api_base_url: Option<String>,
    /// The invoking user's account id (`principal`), for UI invocations.
    pub principal: Option<String>,
    /// The app's system token (`x-forge-oauth-system`), when the manifest asks for it.
    pub system_token: Option<ForgeToken>,
    /// The invoking user's token (`x-forge-oauth-user`), when the manifest asks for it and a
    /// user is in session; never on events, scheduled triggers or preUninstall.
    pub user_token: Option<ForgeToken>,
    /// Every claim of the invocation token, typed.
    pub claims: Arc<InvocationClaims>,
}

/// Product calls with an invocation's own tokens.
impl ProductClient {
    /// Calls the product as the Forge app, with the system token of this invocation, at its
    /// `apiBaseUrl` (`https://api.atlassian.com/ex/jira/<cloudId>`).
    ///
    /// # Errors
    /// [`ProductError::NoForgeSystemToken`] when the invocation has no system token or apiBaseUrl.
    pub fn as_forge_app<'a>(
        &'a self,
        invocation: &'a ForgeInvocation,
    ) -> Result<Caller<'a>, ProductError> {
        match (&invocation.system_token, &invocation.api_base_url) {
            (Some(token), Some(base_url)) => Ok(self.with_forge_token(token, base_url)),
            _ => Err(ProductError::NoForgeSystemToken),
        }
    }

    /// Calls the product as the invoking user, with the user token of this invocation
    /// (`x-forge-oauth-user`), at its `apiBaseUrl`.
    ///
    /// # Errors
    /// [`ProductError::NoForgeUserToken`] when the invocation has no user token or apiBaseUrl.
    pub fn as_forge_user<'a>(
        &'a self,
        invocation: &'a ForgeInvocation,
    ) -> Result<Caller<'a>, ProductError> {
        match (&invocation.user_token, &invocation.api_base_url) {
            (Some(token), Some(base_url)) => Ok(self.with_forge_token(token, base_url)),
            _ => Err(ProductError::NoForgeUserToken),
        }
    }
}

/// The claims of a verified Forge Invocation Token (PROTOCOL.md F1). Unknown fields are ignored;
/// only `app.installationId` is required beyond the registered claims.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InvocationClaims {
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub jti: Option<String>,
    pub app: AppClaims,
    /// The view the call comes from: UI invocations only.
    #[serde(default)]
    pub context: Option<serde_json::Value>,
    /// The invoking user's account id: UI invocations only.
    #[serde(default)]
    pub principal: Option<String>,
    /// Set only on calls from an Isolated Cloud.
    #[serde(default, rename = "icLabel")]
    pub ic_label: Option<String>,
}

/// `app` of a Forge Invocation Token.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppClaims {
    /// The app's ARI.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub app_version: Option<String>,
    pub installation_id: String,
    #[serde(default)]
    pub api_base_url: Option<String>,
    #[serde(default)]
    pub environment: Option<EnvironmentClaims>,
    #[serde(default)]
    pub module: Option<ModuleClaims>,
    #[serde(default)]
    pub installation: Option<InstallationClaims>,
    /// Paid apps in production only.
    #[serde(default)]
    pub license: Option<serde_json::Value>,
}

/// `app.license` (paid apps in production; PROTOCOL.md F1): every field optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForgeLicense {
    #[serde(default)]
    pub active: Option<bool>,
    /// Deprecated for `active`.
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub billing_period: Option<String>,
    /// `capabilityStandard`, `capabilityAdvanced`.
    #[serde(default)]
    pub capability_set: Option<String>,
    #[serde(default)]
    pub ccp_entitlement_id: Option<String>,
    #[serde(default)]
    pub ccp_entitlement_slug: Option<String>,
    #[serde(default)]
    pub is_evaluation: Option<bool>,
    #[serde(default)]
    pub subscription_end_date: Option<String>,
    #[serde(default)]
    pub trial_end_date: Option<String>,
    /// `COMMERCIAL`, `COMMUNITY`, `ACADEMIC`, `DEVELOPER`, … (sources disagree on case).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub modes: Option<Vec<String>>,
}

impl ForgeLicense {
    /// `active`, else the deprecated `isActive`; absent is inactive.
    pub fn is_active(&self) -> bool {
        self.active.or(self.is_active).unwrap_or(false)
    }
}

/// `app.environment`: `type` is `DEVELOPMENT`, `STAGING` or `PRODUCTION`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EnvironmentClaims {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

/// `app.module`: the invoked module's type (`xen:macro`, `core:endpoint`, …) and key.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ModuleClaims {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

/// `app.installation`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InstallationClaims {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub contexts: Vec<InstallationContext>,
}

/// One product of `app.installation.contexts`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallationContext {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub api_base_url: Option<String>,
    #[serde(default)]
    pub cloud_id: Option<String>,
    #[serde(default)]
    pub workspace_id: Option<String>,
}

impl InvocationClaims {
    /// The product the invocation calls (`jira`, `confluence`, …), from
    /// `app.apiBaseUrl` = `https://api.atlassian.com/ex/<product>/<cloudId>`.
    pub fn product(&self) -> Option<&str> {
        let url = self.app.api_base_url.as_deref()?;
        let (_, rest) = url.split_once("/ex/")?;
        let product = rest.split('/').next()?;
        (!product.is_empty() && product.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
            .then_some(product)
    }

    /// The one site the invocation names by cloud id, if it names exactly one.
    pub fn cloud_id(&self) -> Option<String> {
        let mut ids: Vec<String> = self
            .app
            .installation
            .iter()
            .flat_map(|i| i.contexts.iter())
            .filter_map(|c| c.cloud_id.clone())
            .chain(self.context_str("cloudId").map(str::to_owned))
            .filter(|id| super::is_plausible_client_key(id))
            .collect();
        ids.sort();
        ids.dedup();
        match ids.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }

    /// `app.license`, typed; a licence whose fields do not read as documented reads as inactive.
    pub fn license(&self) -> Option<ForgeLicense> {
        let license = self.app.license.as_ref()?;
        Some(serde_json::from_value(license.clone()).unwrap_or_default())
    }

    /// Whether the call comes from the app's production environment.
    pub fn is_production(&self) -> bool {
        self.app
            .environment
            .as_ref()
            .and_then(|e| e.kind.as_deref())
            .is_some_and(|k| k.eq_ignore_ascii_case("PRODUCTION"))
    }

    fn tenant_license(&self) -> super::License {
        match self.license() {
            Some(l) if l.is_active() => super::License::Active {
                evaluation: l.is_evaluation.unwrap_or(false),
            },
            Some(_) => super::License::Inactive,
            None => super::License::Unknown,
        }
    }

    /// `context.siteUrl`, when it is an https URL.
    pub fn site_url(&self) -> Option<&str> {
        self.context_str("siteUrl")
            .filter(|u| u.starts_with("https://") && super::fits_id_column(u))
    }

    fn context_str(&self, name: &str) -> Option<&str> {
        self.context.as_ref()?.get(name)?.as_str()
    }

    /// Whether the call comes from a user's view: Forge sends `context` (with the module's
    /// `extension`) and `principal` on UI invocations only, and an anonymous user leaves
    /// `principal` out.
    pub fn is_user_view(&self) -> bool {
        self.principal.is_some()
            || self
                .context
                .as_ref()
                .is_some_and(|c| c.get("extension").is_some())
    }

    /// Whether Forge made the call as the app itself (a trigger, lifecycle event, scheduled
    /// trigger, preUninstall, the migration service): no user and no view, and the invoked module
    /// is an `endpoint` (a UI call names its UI module's type instead).
    pub fn is_app_invocation(&self) -> bool {
        !self.is_user_view() && self.module_type() == Some(APP_MODULE_TYPE)
    }

    /// `app.module.type`.
    pub fn module_type(&self) -> Option<&str> {
        self.app.module.as_ref()?.kind.as_deref()
    }

    /// `app.module.key`.
    pub fn module_key(&self) -> Option<&str> {
        self.app.module.as_ref()?.key.as_deref()
    }

    /// Refuses (403) a call an app-level endpoint must not take: one from a user's view
    /// (`user_invocation`) or of another module type (`not_app_invocation`), or, when
    /// `module_keys` is not empty, of a module key not among them (`unexpected_module`).
    ///
    /// # Errors
    /// [`Error::Forbidden`] with the reason above.
    pub fn require_app(&self, module_keys: &[String]) -> Result<(), Error> {
        let refuse = |reason, message: &str| Error::Forbidden {
            reason,
            message: message.to_owned(),
        };
        if self.is_user_view() {
            return Err(refuse(
                "user_invocation",
                "this endpoint takes only Forge's calls as the app, not a user's",
            ));
        }
        if self.module_type() != Some(APP_MODULE_TYPE) {
            return Err(refuse(
                "not_app_invocation",
                "this endpoint takes only calls of an endpoint module (core:endpoint)",
            ));
        }
        if !module_keys.is_empty()
            && !self
                .module_key()
                .is_some_and(|key| module_keys.iter().any(|k| k == key))
        {
            return Err(refuse(
                "unexpected_module",
                "this endpoint does not take calls of the invoked module",
            ));
        }
        Ok(())
    }
}

/// The `app.module.type` of the calls Forge makes as the app (triggers, lifecycle events,
/// scheduled triggers, preUninstall, functions' `invokeRemote`).
pub const APP_MODULE_TYPE: &str = "core:endpoint";

/// A verified Forge Invocation Token.
#[derive(Debug, Clone)]
pub struct VerifiedFit {
    pub claims: Arc<InvocationClaims>,
    /// Orders and deduplicates the lifecycle changes the token makes.
    pub lifecycle: LifecycleToken,
    pub system_token: Option<ForgeToken>,
}

impl VerifiedFit {
    /// The installation the token describes, for the store.
    pub fn installation(&self) -> crate::store::ForgeInstallation {
        let claims = &self.claims;
        crate::store::ForgeInstallation {
            installation_id: claims.app.installation_id.clone(),
            app_id: claims.app.id.clone().unwrap_or_default(),
            app_version: claims.app.app_version.clone(),
            cloud_id: claims.cloud_id(),
            product: claims.product().map(str::to_owned),
            api_base_url: claims.app.api_base_url.clone(),
            site_url: claims.site_url().map(str::to_owned),
            create_if_new: true,
        }
    }
}

impl Authenticator {
    /// Verifies a Forge Invocation Token: every failure here is a 401, which Forge reads as "the
    /// FIT was rejected".
    pub async fn verify_fit(&self, headers: &HeaderMap) -> Result<VerifiedFit, Error> {
        let Some(forge) = &self.inner.forge else {
            return Err(AuthError::ForgeNotConfigured.into());
        };
        let token = bearer(headers)?;
        let (header, _) = jwt::peek(token)?;
        if header.alg != "RS256" {
            return Err(AuthError::UnsupportedAlgorithm.into());
        }
        let kid = header.kid.ok_or(AuthError::InvalidKeyId)?;
        if kid.is_empty() || kid.len() > 256 {
            return Err(AuthError::InvalidKeyId.into());
        }
        let key = forge.keys_for(token)?.get(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![Algorithm::RS256];
        validation.leeway = self.inner.limits.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[FIT_ISSUER]);
        validation.set_audience(&[&forge.app_ari]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<InvocationClaims>(token, &key, &validation)
            .map_err(|e| jwt::reason(&e))?
            .claims;
        let exp = claims.exp.ok_or(AuthError::MissingClaim)?;
        let now = jsonwebtoken::get_current_timestamp() as i64;
        jwt::check_issued(claims.iat, now, self.inner.limits)?;
        jwt::check_lifetime(exp, claims.iat, now, self.inner.limits)?;
        if !super::is_plausible_client_key(&claims.app.installation_id)
            || claims
                .principal
                .as_deref()
                .is_some_and(|p| !super::fits_id_column(p))
        {
            return Err(AuthError::MalformedToken.into());
        }
        // A FIT without `iat` is ordered by its `exp`.
        let lifecycle = super::lifecycle_token(
            Some(claims.iat.unwrap_or(exp)),
            Some(exp),
            claims.jti.as_deref(),
            token,
        )?;
        let system_token = header_token(headers, SYSTEM_TOKEN_HEADER);
        Ok(VerifiedFit {
            claims: Arc::new(claims),
            lifecycle,
            system_token,
        })
    }

    /// The installed tenant of a verified invocation: the one holding its installationId, else
    /// the one installed tenant of the invoked product on the site its cloud id names (Jira and
    /// Confluence of one site share it), counting only cloud ids that verified tokens gave (a
    /// cloud id in a Connect install body is the installer's claim and leads nowhere).
    pub async fn forge_tenant(&self, fit: &VerifiedFit) -> Result<Arc<TenantRecord>, Error> {
        let claims = &fit.claims;
        let record = match super::usable(
            self.inner
                .store
                .find_tenant_by_installation_id(&claims.app.installation_id)
                .await,
        )
        .map_err(refused)?
        {
            Some(record) => record,
            None => match claims.cloud_id() {
                Some(cloud_id) => {
                    let mut found = super::usable(
                        self.inner
                            .store
                            .find_installed_by_cloud_id(&cloud_id, claims.product())
                            .await,
                    )
                    .map_err(refused)?;
                    match (found.pop(), found.is_empty()) {
                        (Some(record), true) => record,
                        _ => return Err(self.unmapped(claims).await),
                    }
                }
                None => return Err(self.unmapped(claims).await),
            },
        };
        if !record.is_installed() {
            return Err(refused(AuthError::TenantUninstalled.into()));
        }
        if !record.enabled {
            return Err(refused(AuthError::TenantDisabled.into()));
        }
        Ok(record)
    }

    /// The refusal of an invocation no installed tenant takes: a Forge-born tenant (keyed by the
    /// installationId) that has uninstalled is said to be; any other is unmapped.
    async fn unmapped(&self, claims: &InvocationClaims) -> Error {
        let id = &claims.app.installation_id;
        match self.inner.store.find_tenant(id).await {
            Ok(Some(record))
                if record.origin == crate::store::Origin::Forge && !record.is_installed() =>
            {
                refused(AuthError::TenantUninstalled.into())
            }
            _ => refused(AuthError::UnmappedInstallation.into()),
        }
    }

    /// Verifies a Forge Invocation Token and resolves its tenant.
    async fn authenticate_forge(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Tenant, ForgeInvocation), Error> {
        let fit = self.verify_fit(headers).await?;
        let record = self.forge_tenant(&fit).await?;
        let app = fit.claims.is_app_invocation();
        // The header is not covered by the FIT: a user's call may carry any value in it.
        if app && let Some(token) = &fit.system_token {
            self.inner
                .system_tokens
                .remember(&record.installation.client_key, token, &fit.claims)
                .await;
        }
        let user_token = header_token(headers, USER_TOKEN_HEADER);
        let claims = fit.claims;
        let kind = if app {
            TokenKind::ForgeApp
        } else {
            TokenKind::ForgeUser
        };
        let invocation = ForgeInvocation {
            installation_id: claims.app.installation_id.clone(),
            api_base_url: claims.app.api_base_url.clone(),
            principal: claims.principal.clone(),
            system_token: fit.system_token,
            user_token,
            claims: claims.clone(),
        };
        Ok((
            Tenant::new(
                record,
                claims.principal.clone(),
                claims.context.clone(),
                kind,
                None,
            )
            .with_license(claims.tenant_license()),
            invocation,
        ))
    }
}

/// A refusal of a verified invocation, for another reason than its token: 403 with the same
/// JSON body, since Forge reads 401 as "the FIT was rejected". Store outages stay 503.
pub fn refused(e: Error) -> Error {
    match e {
        Error::Unauthorized { reason, message } => Error::Forbidden { reason, message },
        e => e,
    }
}

/// A token Forge sent in the header `name`, if any.
fn header_token(headers: &HeaderMap, name: &str) -> Option<ForgeToken> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
        .map(ForgeToken::new)
}

/// The token of `Authorization: Bearer …`.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    super::credentials(headers, "Bearer")?.ok_or(AuthError::MissingToken)
}

/// Middleware that admits only requests carrying a valid Forge Invocation Token for a mapped
/// installation, and puts the verified [`Tenant`] and the [`ForgeInvocation`] in the request.
pub async fn require_forge(
    State(auth): State<Authenticator>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    let (tenant, invocation) = auth.authenticate_forge(request.headers()).await?;
    let _slot = auth.admit(&tenant, request.method())?;
    tracing::Span::current().record("client_key", tenant.client_key().as_str());
    let (parts, body) = request.into_parts();
    let (body, deadline) = auth.timed_body(body);
    let mut request = Request::from_parts(parts, body);
    request.extensions_mut().insert(tenant);
    request.extensions_mut().insert(invocation);
    let response = next.run(request).await;
    if deadline.passed() {
        return Err(Error::BodyTimeout);
    }
    Ok(response)
}

/// Middleware, inside [`require_forge`], that admits only Forge's calls as the app (see
/// [`InvocationClaims::require_app`]) of the module keys in its state (any when empty): for an
/// app's own routes that Forge's triggers call, as the library's lifecycle and migration routes.
pub async fn require_app_invocation(
    State(module_keys): State<Arc<[String]>>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    let invocation = request
        .extensions()
        .get::<ForgeInvocation>()
        .ok_or(AuthError::MissingToken)?;
    invocation.claims.require_app(&module_keys)?;
    Ok(next.run(request).await)
}

impl<S: Send + Sync> FromRequestParts<S> for ForgeInvocation {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ForgeInvocation>()
            .cloned()
            .ok_or_else(|| AuthError::MissingToken.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback URL where nothing listens: each fetch fails at once.
    fn nowhere() -> url::Url {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        url::Url::parse(&format!("http://127.0.0.1:{port}/jwks.json")).unwrap()
    }

    #[tokio::test]
    async fn failed_fetches_back_off_doubling_up_to_the_refresh_interval() {
        let refresh = Duration::from_secs(30);
        let keys = ForgeKeys::new(&nowhere(), refresh, Duration::from_secs(1));
        let mut waits = Vec::new();
        for _ in 0..7 {
            let before = Instant::now();
            assert_eq!(
                keys.get("k").await.err(),
                Some(AuthError::KeyServerUnavailable)
            );
            let mut gate = keys.gate.lock().await;
            let not_before = gate.not_before.unwrap();
            waits.push((not_before - before).as_secs());
            // Within the backoff a token is refused without a fetch, as unavailable.
            drop(gate);
            assert_eq!(
                keys.get("k").await.err(),
                Some(AuthError::KeyServerUnavailable)
            );
            gate = keys.gate.lock().await;
            assert_eq!(
                gate.not_before,
                Some(not_before),
                "no fetch within the backoff"
            );
            gate.not_before = Some(Instant::now());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    }
}
