//! The container door: requests Forge's sidecar forwards to an app running as a Forge Container
//! (`FORGE_EGRESS_PROXY_URL` set). The sidecar checks each invocation before it forwards it and
//! names it in `x-forge-invocation-id`; no token travels with it. The door asks the sidecar for
//! that invocation's context and makes of it the [`Tenant`] a Forge Remote invocation of the same
//! installation makes, so an app's Forge routes run unchanged under the same access rules.
//!
//! The header is all a request shows of its invocation, and anyone who can reach the app's port
//! could write it: the port must be reachable by the sidecar alone (Forge runs the sidecar beside
//! the container and lets nothing else reach it; under `forge tunnel` only the compose network
//! does). An invocation id the sidecar does not know is refused.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{AuthError, Authenticator, Tenant};
use crate::error::Error;
use crate::forge::storage::{ForgeStorage, Storage};
use crate::product::{Caller, ProductClient, ProductError};
use crate::protocol::egress::{INVOCATION_ID_HEADER, ProxyActor, ProxyAuthorization};

mod context;

pub use context::{
    CONTEXT_CACHE_SIZE, CONTEXT_TTL, ContextApp, ContextError, InvocationContext,
    InvocationContexts,
};

/// The invocation a container request serves, beside its [`Tenant`]: what its handlers need to
/// call out through the egress proxy within it.
#[derive(Debug, Clone)]
pub struct ContainerInvocation {
    /// The `x-forge-invocation-id` the sidecar sent.
    pub id: String,
    /// The header that makes an egress call part of this invocation.
    pub proxy_authorization: ProxyAuthorization,
    /// The invocation's context as the sidecar gave it.
    pub context: std::sync::Arc<InvocationContext>,
}

impl ContainerInvocation {
    /// The header of a call within this invocation as the app (`Forge id=…,as=app`).
    pub fn as_app(&self) -> ProxyAuthorization {
        self.acting_as(ProxyActor::App)
    }

    /// The header of a call within this invocation as its user (`Forge id=…,as=user`); `None`
    /// for an invocation of the app itself, which has none.
    pub fn as_user(&self) -> Option<ProxyAuthorization> {
        self.context.account_id()?;
        Some(self.acting_as(ProxyActor::User { account_id: None }))
    }

    fn acting_as(&self, actor: ProxyActor) -> ProxyAuthorization {
        self.proxy_authorization
            .clone()
            .acting_as(actor)
            .expect("an actor without an account id adds no id to check")
    }

    /// The product of the invoked module (`jira` for `jira:issuePanel`), `jira` when the
    /// context names none.
    pub fn product(&self) -> String {
        self.context.product().unwrap_or_else(|| "jira".to_owned())
    }
}

/// Product calls within a container invocation, through Forge's egress proxy.
impl ProductClient {
    /// Calls the invocation's product as the app.
    ///
    /// # Errors
    /// [`ProductError::NotInContainer`] when the client has no egress proxy.
    pub fn as_container_app(
        &self,
        invocation: &ContainerInvocation,
    ) -> Result<Caller<'_>, ProductError> {
        self.through_proxy(&invocation.as_app(), &invocation.product())
    }

    /// Calls the invocation's product as its user.
    ///
    /// # Errors
    /// [`ProductError::NoForgeUserToken`] for an invocation without a user;
    /// [`ProductError::NotInContainer`] when the client has no egress proxy.
    pub fn as_container_user(
        &self,
        invocation: &ContainerInvocation,
    ) -> Result<Caller<'_>, ProductError> {
        let authorization = invocation.as_user().ok_or(ProductError::NoForgeUserToken)?;
        self.through_proxy(&authorization, &invocation.product())
    }
}

/// Forge storage within a container invocation.
impl ForgeStorage {
    /// The storage of the invocation's installation.
    pub fn in_container<'a>(&'a self, invocation: &'a ContainerInvocation) -> Storage<'a> {
        self.through_proxy(&invocation.proxy_authorization)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ContainerInvocation {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ContainerInvocation>()
            .cloned()
            .ok_or_else(|| AuthError::MissingInvocationId.into())
    }
}

impl Authenticator {
    /// Takes container requests on [`require_container`] routes, their contexts from `contexts`.
    pub fn with_container(self, contexts: InvocationContexts) -> Self {
        let inner =
            std::sync::Arc::into_inner(self.inner).expect("set while building the authenticator");
        Self {
            inner: std::sync::Arc::new(super::Inner {
                container: Some(contexts),
                ..inner
            }),
        }
    }

    /// Whether this app runs as a Forge Container: its Forge routes are then the sidecar's.
    pub fn is_container(&self) -> bool {
        self.inner.container.is_some()
    }

    /// Resolves the tenant of a request the sidecar forwarded.
    async fn authenticate_container(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Tenant, ContainerInvocation), Error> {
        let contexts = self
            .inner
            .container
            .as_ref()
            .ok_or(AuthError::ContainerNotConfigured)?;
        let id = headers
            .get(INVOCATION_ID_HEADER)
            .ok_or(AuthError::MissingInvocationId)?
            .to_str()
            .map_err(|_| AuthError::InvalidInvocationId)?;
        let proxy_authorization =
            ProxyAuthorization::invocation(id).map_err(|_| AuthError::InvalidInvocationId)?;
        let context = contexts.get(id, &proxy_authorization).await?;
        Ok((
            context.tenant(),
            ContainerInvocation {
                id: id.to_owned(),
                proxy_authorization,
                context,
            },
        ))
    }
}

/// Middleware, inside [`require_container`], that admits only Forge's calls as the app of the
/// module keys in its state (any when empty), as [`require_app_invocation`](super::forge::require_app_invocation)
/// does for a remote: an invocation with a user is 403 `user_invocation`, one of a module not
/// among the keys 403 `unexpected_module`.
pub async fn require_app_invocation(
    State(module_keys): State<std::sync::Arc<[String]>>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    let invocation = request
        .extensions()
        .get::<ContainerInvocation>()
        .ok_or(AuthError::MissingInvocationId)?;
    let refuse = |reason, message: &str| Error::Forbidden {
        reason,
        message: message.to_owned(),
    };
    if invocation.context.account_id().is_some() {
        return Err(refuse(
            "user_invocation",
            "this endpoint takes only Forge's calls as the app, not a user's",
        ));
    }
    if !module_keys.is_empty()
        && !invocation
            .context
            .module_key()
            .is_some_and(|key| module_keys.iter().any(|k| k == key))
    {
        return Err(refuse(
            "unexpected_module",
            "this endpoint does not take calls of the invoked module",
        ));
    }
    Ok(next.run(request).await)
}

/// Middleware for the routes of an app running as a Forge Container: the sidecar's invocation
/// id resolved to its context and tenant, then the tenant's rate and slots as on every door.
/// Handlers take [`Tenant`] and [`ContainerInvocation`].
pub async fn require_container(
    State(auth): State<Authenticator>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    let (tenant, invocation) = auth.authenticate_container(request.headers()).await?;
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
