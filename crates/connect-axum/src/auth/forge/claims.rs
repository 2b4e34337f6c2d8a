//! The claims of a Forge Invocation Token, typed (PROTOCOL.md F1), and what they say of the
//! invocation: the site, the product, the licence, whether it is the app's or a user's.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The claims of a verified Forge Invocation Token (PROTOCOL.md F1). Unknown fields are ignored;
/// only `app.installationId` is required beyond the registered claims.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InvocationClaims {
    /// Expiry (Unix seconds); the verifier refuses a token without it.
    #[serde(default)]
    pub exp: Option<i64>,
    /// When Forge issued the token (Unix seconds); a lifecycle event without it is ordered by
    /// `exp`.
    #[serde(default)]
    pub iat: Option<i64>,
    /// Not valid before (Unix seconds), when present.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// The token's id; a lifecycle event without one is known by the token's SHA-256.
    #[serde(default)]
    pub jti: Option<String>,
    /// What Forge says of the invoked app: its installation, environment, module and licence.
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
    /// `appVersion`: the deployed version that was invoked, `1.0.0`.
    #[serde(default)]
    pub app_version: Option<String>,
    /// `installationId`: `ari:cloud:ecosystem::installation/<uuid>`, which a Forge tenant is
    /// found by; a reinstall gets a new one.
    pub installation_id: String,
    /// `apiBaseUrl`: where the app calls the product back,
    /// `https://api.atlassian.com/ex/<product>/<cloudId>`.
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// `environment`: the Forge environment the app runs in.
    #[serde(default)]
    pub environment: Option<EnvironmentClaims>,
    /// `module`: the manifest module that was invoked.
    #[serde(default)]
    pub module: Option<ModuleClaims>,
    /// `installation`: the installation and the products it spans.
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
    /// `active`: whether the site holds a live licence or trial; absent reads as inactive.
    #[serde(default)]
    pub active: Option<bool>,
    /// Deprecated for `active`.
    #[serde(default)]
    pub is_active: Option<bool>,
    /// `billingPeriod`: how often the subscription is billed, as Forge spells it.
    #[serde(default)]
    pub billing_period: Option<String>,
    /// `capabilityStandard`, `capabilityAdvanced`.
    #[serde(default)]
    pub capability_set: Option<String>,
    /// `ccpEntitlementId`: the entitlement's id in Atlassian's commerce platform.
    #[serde(default)]
    pub ccp_entitlement_id: Option<String>,
    /// `ccpEntitlementSlug`: the entitlement's short readable identifier.
    #[serde(default)]
    pub ccp_entitlement_slug: Option<String>,
    /// `isEvaluation`: whether the licence is a trial ([`License::Active`]'s `evaluation`).
    ///
    /// [`License::Active`]: crate::auth::License::Active
    #[serde(default)]
    pub is_evaluation: Option<bool>,
    /// `subscriptionEndDate`: when the subscription ends, the timestamp text as sent.
    #[serde(default)]
    pub subscription_end_date: Option<String>,
    /// `trialEndDate`: when the trial ends, the timestamp text as sent.
    #[serde(default)]
    pub trial_end_date: Option<String>,
    /// `COMMERCIAL`, `COMMUNITY`, `ACADEMIC`, `DEVELOPER`, … (sources disagree on case).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `modes`, as sent; the library does not read them.
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
    /// `type`: `DEVELOPMENT`, `STAGING` or `PRODUCTION`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `id`: the environment's id, distinct per environment of one app.
    #[serde(default)]
    pub id: Option<String>,
}

/// `app.module`: the invoked module's type (`xen:macro`, `core:endpoint`, …) and key.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ModuleClaims {
    /// `type`: `core:endpoint` for the app's own calls, the UI module's type for a user's.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// `key`: the module's key in the manifest.
    #[serde(default)]
    pub key: Option<String>,
}

/// `app.installation`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InstallationClaims {
    /// `id`: the installation's id.
    #[serde(default)]
    pub id: Option<String>,
    /// `contexts`: each product the installation is in; empty when Forge sends none.
    #[serde(default)]
    pub contexts: Vec<InstallationContext>,
}

/// One product of `app.installation.contexts`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallationContext {
    /// `name`: the product, `jira`, `confluence`, ….
    #[serde(default)]
    pub name: Option<String>,
    /// `apiBaseUrl`: where that product is called back.
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// `cloudId`: the site's cloud id, which an unmapped installation's tenant is looked up by.
    #[serde(default)]
    pub cloud_id: Option<String>,
    /// `workspaceId`: the product's workspace on the site, when it has one.
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
            .filter(|id| crate::auth::is_plausible_client_key(id))
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

    pub(super) fn tenant_license(&self) -> crate::auth::License {
        match self.license() {
            Some(l) if l.is_active() => crate::auth::License::Active {
                evaluation: l.is_evaluation.unwrap_or(false),
            },
            Some(_) => crate::auth::License::Inactive,
            None => crate::auth::License::Unknown,
        }
    }

    /// `context.siteUrl`, when it is an https URL.
    pub fn site_url(&self) -> Option<&str> {
        self.context_str("siteUrl")
            .filter(|u| u.starts_with("https://") && crate::auth::fits_id_column(u))
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
