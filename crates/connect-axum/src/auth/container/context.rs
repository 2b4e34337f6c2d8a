//! An invocation's context, as Forge's sidecar gives it to a container, and the tenant it makes.
//!
//! The sidecar checks the invocation before it forwards it; the app asks it for the context
//! (`GET {FORGE_EGRESS_PROXY_URL}/invocation/context` with `forge-proxy-authorization: Forge
//! id=<invocation id>`). Atlassian publishes no schema for the answer yet: [`InvocationContext`]
//! reads the fields Atlassian's Java bridge reads (`app.id`, `app.installationId`,
//! `app.environment`, `app.module`, `context.cloudId`, `context.siteUrl`, `context.accountId`,
//! `context.moduleKey`) and `context.extension` as Forge Remote invocations carry it, and ignores
//! the rest; this file is the one place that changes when the schema is published.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::auth::{Tenant, TokenKind};
use crate::error::Error;
use crate::outbound::{Failure, Policy, Transport, read_limited};
use crate::protocol::SharedSecret;
use crate::protocol::egress::{PROXY_AUTHORIZATION_HEADER, ProxyAuthorization};
use crate::store::{ClientKey, Installation, Origin, TenantRecord};

/// Contexts kept, one an invocation id.
pub const CONTEXT_CACHE_SIZE: u64 = 10_000;

/// How long a context is kept: an invocation lasts seconds, and its context does not change.
pub const CONTEXT_TTL: Duration = Duration::from_secs(300);

/// The largest context answer read.
const MAX_CONTEXT_BYTES: usize = 64 * 1024;

/// An invocation's context as the sidecar answers it.
#[derive(Debug, Clone, Deserialize)]
pub struct InvocationContext {
    /// The app and its installation.
    pub app: ContextApp,
    /// Where and for whom the invocation runs.
    #[serde(default)]
    pub context: Value,
}

/// The `app` of an invocation's context.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextApp {
    /// The app's ARI, `ari:cloud:ecosystem::app/<uuid>`.
    pub id: String,
    /// The installation's ARI, `ari:cloud:ecosystem::installation/<uuid>`: the tenant's key.
    pub installation_id: String,
    /// The environment the app runs in, as Forge names it.
    #[serde(default)]
    pub environment: Option<Value>,
    /// The module invoked (`{key, type}`).
    #[serde(default)]
    pub module: Option<Value>,
}

impl InvocationContext {
    /// The user the invocation runs for; none for one of the app's own (a trigger).
    pub fn account_id(&self) -> Option<&str> {
        self.context
            .get("accountId")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
    }

    /// The key of the invoked module (`app.module.key`, else `context.moduleKey`).
    pub fn module_key(&self) -> Option<&str> {
        self.app
            .module
            .as_ref()
            .and_then(|m| m.get("key"))
            .or_else(|| self.context.get("moduleKey"))
            .and_then(Value::as_str)
    }

    fn text(&self, field: &str) -> Option<String> {
        self.context
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The product of the invoked module, from its type (`jira:issuePanel` is Jira's).
    pub(crate) fn product(&self) -> Option<String> {
        let module_type = self.app.module.as_ref()?.get("type")?.as_str()?;
        let (product, _) = module_type.split_once(':')?;
        matches!(product, "jira" | "confluence" | "compass" | "bitbucket")
            .then(|| product.to_owned())
    }

    /// The tenant this invocation runs for: its installation, as a Forge Remote invocation of
    /// the same installation would make it.
    pub fn tenant(&self) -> Tenant {
        let site_url = self.text("siteUrl");
        let now = crate::store::now();
        let record = TenantRecord {
            installation: Installation {
                client_key: ClientKey::new(self.app.installation_id.clone()),
                app_key: self.app.id.clone(),
                // Never used: a container's calls go through the sidecar, not signed by the app.
                shared_secret: SharedSecret::new(hex::encode(rand::random::<[u8; 32]>())),
                base_url: site_url.clone().unwrap_or_default(),
                display_url: site_url,
                product_type: self.product(),
                description: None,
                server_version: None,
                plugins_version: None,
                oauth_client_id: None,
                service_entitlement_number: None,
                cloud_id: self.text("cloudId"),
                installation_id: Some(self.app.installation_id.clone()),
            },
            origin: Origin::Forge,
            api_base_url: None,
            app_version: None,
            enabled: true,
            installed_at: now,
            updated_at: now,
            uninstalled_at: None,
        };
        let account_id = self.account_id().map(str::to_owned);
        let kind = match account_id {
            Some(_) => TokenKind::ForgeUser,
            None => TokenKind::ForgeApp,
        };
        Tenant::new(
            Arc::new(record),
            account_id,
            Some(self.context.clone()),
            kind,
            None,
        )
    }
}

/// Why no context was had for an invocation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ContextError {
    /// The sidecar does not know the invocation, or refuses it (401, 403, 404).
    #[error("the sidecar refused the invocation ({0})")]
    Refused(StatusCode),
    /// The sidecar could not be reached, failed, or answered no context.
    #[error("the sidecar gave no context: {0}")]
    Unavailable(String),
}

impl From<ContextError> for Error {
    fn from(e: ContextError) -> Self {
        match e {
            ContextError::Refused(_) => {
                metrics::counter!("auth_failures_total", "reason" => "invocation_refused")
                    .increment(1);
                Error::Forbidden {
                    reason: "invocation_refused",
                    message: "Forge's sidecar does not know this invocation".to_owned(),
                }
            }
            ContextError::Unavailable(message) => Error::Upstream {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason: "sidecar_unavailable",
                message: format!("Forge's sidecar gave no invocation context: {message}"),
            },
        }
    }
}

/// The contexts of invocations, fetched from the sidecar once an invocation id and kept a while.
#[derive(Clone)]
pub struct InvocationContexts {
    transport: Transport,
    url: Url,
    cache: Cache<String, Arc<InvocationContext>>,
}

impl InvocationContexts {
    /// Contexts from the sidecar at `egress_proxy_url`.
    pub(crate) fn new(transport: Transport, egress_proxy_url: &Url) -> Self {
        let mut url = egress_proxy_url.clone();
        url.path_segments_mut()
            .expect("an http(s) URL")
            .pop_if_empty()
            .extend(["invocation", "context"]);
        Self {
            transport,
            url,
            cache: Cache::builder()
                .max_capacity(CONTEXT_CACHE_SIZE)
                .time_to_live(CONTEXT_TTL)
                .build(),
        }
    }

    /// The context of the invocation `id` (checked by [`ProxyAuthorization::invocation`]);
    /// concurrent requests of one invocation share one fetch.
    pub async fn get(
        &self,
        id: &str,
        auth: &ProxyAuthorization,
    ) -> Result<Arc<InvocationContext>, ContextError> {
        let fetch = async {
            let header = auth.to_string();
            let mut response = self
                .transport
                .send(&Policy::ONCE, |http| {
                    http.get(self.url.clone())
                        .header(PROXY_AUTHORIZATION_HEADER, &header)
                })
                .await
                .map_err(|e| match e {
                    Failure::Status { status, .. }
                        if matches!(
                            status,
                            StatusCode::UNAUTHORIZED
                                | StatusCode::FORBIDDEN
                                | StatusCode::NOT_FOUND
                        ) =>
                    {
                        ContextError::Refused(status)
                    }
                    e => ContextError::Unavailable(e.to_string()),
                })?;
            let body = read_limited(&mut response, MAX_CONTEXT_BYTES)
                .await
                .map_err(|e| ContextError::Unavailable(e.to_string()))?;
            let context: InvocationContext = serde_json::from_slice(&body)
                .map_err(|e| ContextError::Unavailable(format!("not a context: {e}")))?;
            if !crate::protocol::egress::is_valid_id(&context.app.installation_id) {
                return Err(ContextError::Unavailable(
                    "the context's installationId is not one".to_owned(),
                ));
            }
            Ok(Arc::new(context))
        };
        self.cache
            .try_get_with(id.to_owned(), fetch)
            .await
            .map_err(|e: Arc<ContextError>| (*e).clone())
    }
}
