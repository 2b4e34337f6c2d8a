//! Forge Remote: requests from a Forge app's remote backend, authenticated by the Forge
//! Invocation Token (FIT), an RS256 JWT verified with Atlassian's published JWKS. The FIT's
//! `app.installationId` resolves the same tenant a Connect install stored, so one site reaches the
//! same rows through either door. A FIT from a user's UI is scoped like a Jira context token
//! ([`TokenKind::ForgeUser`](crate::auth::TokenKind::ForgeUser)); one of the app itself reaches the whole site ([`TokenKind::ForgeApp`](crate::auth::TokenKind::ForgeApp)).

use std::sync::Arc;

use crate::product::{Caller, ProductClient, ProductError};
pub use crate::protocol::ForgeToken;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use super::{AuthError, Authenticator};
use crate::error::Error;

mod claims;
mod keys;
pub mod system_tokens;
mod verify;

pub use crate::config::APP_ARI_PREFIX;
pub use claims::{
    APP_MODULE_TYPE, AppClaims, EnvironmentClaims, ForgeLicense, InstallationClaims,
    InstallationContext, InvocationClaims, ModuleClaims,
};
pub use keys::{
    ForgeKeys, ForgeSettings, IC_LABEL_PLACEHOLDER, IsolatedClouds, JWKS_RETRY_BACKOFF,
    NEW_ISOLATED_CLOUDS_PER_MINUTE, STAGING_API_PREFIX, is_valid_ic_label,
};
pub use verify::VerifiedFit;

/// The `iss` of every Forge Invocation Token.
pub const FIT_ISSUER: &str = "forge/invocation-token";

/// The header that carries the app's system token, when the manifest asks for one.
pub const SYSTEM_TOKEN_HEADER: &str = "x-forge-oauth-system";

/// The header that carries the invoking user's token, when the manifest asks for one.
pub const USER_TOKEN_HEADER: &str = "x-forge-oauth-user";

/// What a verified Forge invocation carries besides the tenant. It lives as long as the request;
/// the system token it brings is also stored for the tenant (see [`crate::auth::forge::system_tokens`]).
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
/// installation, and puts the verified [`Tenant`](crate::auth::Tenant) and the [`ForgeInvocation`] in the request.
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
