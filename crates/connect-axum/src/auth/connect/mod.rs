//! The Connect door: the product's HS256 JWTs with their query string hash, the app's own session
//! tokens, and the RS256 signed install of lifecycle hooks ([`install`]).
//!
//! Routes choose a mode by type ([`ProductJwt`], [`ContextJwt`], [`LifecycleJwt`]) when the router
//! layers [`require_jwt`] on them. Session tokens are minted only for one issue
//! ([`Authenticator::session_token_for_issue`]) and renewed only from a context or session token,
//! with its scope and the time its chain began; a chain ends `SESSION_MAX_LIFETIME_SECS` after it
//! began.

pub mod install;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, request::Parts};
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Serialize;

use super::{
    AuthError, Authenticator, License, Tenant, TokenKind, credentials, fits_id_column,
    is_plausible_client_key, jwt, lifecycle_token, qsh, usable,
};
pub use crate::config::{DEFAULT_SESSION_MAX_LIFETIME, SESSION_TOKEN_TTL};
use crate::error::Error;
use crate::slots::Slot;
use crate::store::{LifecycleToken, Origin};

/// The response header that carries the renewed session token for the iframe's later calls.
pub const SESSION_TOKEN_HEADER: &str = "x-acpt";

/// What a route accepts; chosen by type where the router layers [`require_jwt`].
pub trait AuthMode: Send + Sync + 'static {
    /// Also accept context tokens (`qsh = context-qsh`) and the app's session tokens.
    const CONTEXT_TOKENS: bool;
    /// Admit a tenant that has disabled the app (the `enabled` hook must reach it).
    const DISABLED_TENANTS: bool;
    /// Answer a context or session token, on success, with a renewed session token of the same
    /// scope and chain. Product JWTs are never answered with one.
    const ISSUE_SESSION_TOKEN: bool;
    /// Put the token's [`LifecycleToken`] in the request, by which the store refuses a
    /// replayed or older lifecycle event.
    const LIFECYCLE_TOKEN: bool = false;
}

/// A product JWT bound to this very request by its QSH: the default for pages, webhooks and APIs.
pub struct ProductJwt;
/// A product JWT, or a context token / session token, for the iframe's AJAX routes.
pub struct ContextJwt;
/// A product JWT with the QSH of an `enabled`/`disabled` hook; never a context token.
pub struct LifecycleJwt;

impl AuthMode for ProductJwt {
    const CONTEXT_TOKENS: bool = false;
    const DISABLED_TENANTS: bool = false;
    const ISSUE_SESSION_TOKEN: bool = false;
}

impl AuthMode for ContextJwt {
    const CONTEXT_TOKENS: bool = true;
    const DISABLED_TENANTS: bool = false;
    const ISSUE_SESSION_TOKEN: bool = true;
}

impl AuthMode for LifecycleJwt {
    const CONTEXT_TOKENS: bool = false;
    const DISABLED_TENANTS: bool = true;
    const ISSUE_SESSION_TOKEN: bool = false;
    const LIFECYCLE_TOKEN: bool = true;
}

impl Authenticator {
    /// The QSH of a request as it reached this app.
    pub fn request_qsh(&self, parts: &Parts) -> String {
        qsh::qsh(
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query(),
            &self.inner.base_path,
        )
    }

    async fn authenticate<M: AuthMode>(
        &self,
        parts: &Parts,
        token: &str,
    ) -> Result<(Tenant, Option<LifecycleToken>), Error> {
        let (header, peeked) = jwt::peek(token)?;
        if header.alg != "HS256" {
            return Err(AuthError::UnsupportedAlgorithm.into());
        }
        let iss = peeked.iss.ok_or(AuthError::MissingClaim)?;
        // The app's own session tokens carry the app key as issuer and the tenant as audience.
        let session = iss == self.inner.app_key;
        let client_key = if session {
            let aud = peeked.aud.ok_or(AuthError::MissingClaim)?;
            aud.as_slice()
                .first()
                .cloned()
                .ok_or(AuthError::MissingClaim)?
        } else {
            iss
        };
        if !is_plausible_client_key(&client_key) {
            return Err(AuthError::UnknownTenant.into());
        }
        let record = usable(self.inner.store.tenants().find(&client_key).await)?
            .filter(|record| record.origin == Origin::Connect)
            .ok_or(AuthError::UnknownTenant)?;
        let key = DecodingKey::from_secret(record.installation.shared_secret.expose().as_bytes());
        let claims = jwt::verify(token, &key, Algorithm::HS256, self.inner.limits)?;

        let kind = match claims.qsh.as_deref() {
            None => return Err(AuthError::MissingQsh.into()),
            Some(qsh::CONTEXT_QSH) if !M::CONTEXT_TOKENS => {
                return Err(AuthError::ContextTokenNotAllowed.into());
            }
            Some(qsh::CONTEXT_QSH) if session => TokenKind::Session,
            Some(qsh::CONTEXT_QSH) => TokenKind::Context,
            Some(_) if session => return Err(AuthError::QshMismatch.into()),
            Some(claimed) => {
                if claimed != self.request_qsh(parts) {
                    return Err(AuthError::QshMismatch.into());
                }
                TokenKind::Product
            }
        };
        let chain_start = self.chain_start(kind, &claims)?;
        // The account id is stored with what the user writes; refuse what no store can hold.
        if claims
            .sub
            .as_deref()
            .is_some_and(|sub| !fits_id_column(sub))
        {
            return Err(AuthError::MalformedToken.into());
        }
        if !record.is_installed() {
            return Err(AuthError::TenantUninstalled.into());
        }
        if !record.enabled && !M::DISABLED_TENANTS {
            return Err(AuthError::TenantDisabled.into());
        }
        let lifecycle = M::LIFECYCLE_TOKEN
            .then(|| lifecycle_token(claims.iat, claims.exp, claims.jti.as_deref(), token))
            .transpose()?;
        Ok((
            Tenant::new(record, claims.sub, claims.context, kind, chain_start)
                .with_license(connect_license(kind, parts)),
            lifecycle,
        ))
    }

    /// Authenticates a request for mode `M` and admits it: its tenant, its body (read only when a
    /// form may hold a token), and the tenant slot it holds until answered.
    async fn verify_request<M: AuthMode>(
        &self,
        parts: &Parts,
        body: Body,
    ) -> Result<(Tenant, Option<LifecycleToken>, Body, Slot), Error> {
        let limit = self.inner.max_body_bytes;
        if let Some(token) = token_outside_body(parts)? {
            // Verified before a byte of the body is read: a client that sends its headers and
            // stalls is refused at once, and holds nothing while it stalls.
            let (tenant, lifecycle) = self.authenticate::<M>(parts, &token).await?;
            let slot = self.admit(&tenant, &parts.method)?;
            let (body, in_form) = form_tokens(parts, body, limit).await?;
            if !in_form.is_empty() {
                return Err(AuthError::MultipleTokens.into());
            }
            return Ok((tenant, lifecycle, body, slot));
        }
        let (body, token) = {
            let _anonymous = is_form(&parts.headers)
                .then(|| self.inner.slots.anonymous())
                .transpose()?;
            let (body, mut in_form) = form_tokens(parts, body, limit).await?;
            match (in_form.pop(), in_form.is_empty()) {
                (None, _) => return Err(AuthError::MissingToken.into()),
                (Some(token), true) => (body, token),
                (Some(_), false) => return Err(AuthError::MultipleTokens.into()),
            }
        };
        let (tenant, lifecycle) = self.authenticate::<M>(parts, &token).await?;
        let slot = self.admit(&tenant, &parts.method)?;
        Ok((tenant, lifecycle, body, slot))
    }

    /// When the chain of a context or session token began: a session token's `auth_time`
    /// (required), a context token's `iat`. A chain older than the session lifetime is over.
    fn chain_start(&self, kind: TokenKind, claims: &jwt::Claims) -> Result<Option<u64>, Error> {
        let now = jsonwebtoken::get_current_timestamp();
        let start = match kind {
            TokenKind::Session => claims.auth_time.ok_or(AuthError::MissingClaim)?,
            TokenKind::Context => claims.iat.unwrap_or(now as i64),
            _ => return Ok(None),
        };
        let start = u64::try_from(start).map_err(|_| AuthError::MalformedToken)?;
        if start > now + self.inner.limits.leeway {
            return Err(AuthError::IssuedInFuture.into());
        }
        if now.saturating_sub(start) > self.inner.session_max_lifetime {
            return Err(AuthError::SessionExpired.into());
        }
        Ok(Some(start))
    }

    /// Signs the first session token of a page's iframe, limited to the issue `issue_key`:
    /// `qsh = context-qsh`, `context` naming the issue, `auth_time` now (or the chain the
    /// presented token belongs to), 15 minutes.
    ///
    /// # Errors
    /// 403 when the request's own token may not reach that issue: a session never widens.
    pub fn session_token_for_issue(
        &self,
        tenant: &Tenant,
        issue_key: &str,
    ) -> Result<String, Error> {
        tenant.require_issue(issue_key)?;
        let context = serde_json::json!({ "jira": { "issue": { "key": issue_key } } });
        let chain_start = tenant
            .chain_start()
            .unwrap_or_else(jsonwebtoken::get_current_timestamp);
        self.sign_session(tenant, Some(&context), chain_start)
            .ok_or_else(|| AuthError::SessionExpired.into())
    }

    /// The renewal of a context or session token: the same user, `context` and chain start, and
    /// never past the chain's end. `None` for any other token, and once the chain is over.
    fn renewed_session_token(&self, tenant: &Tenant) -> Option<String> {
        if !matches!(tenant.token_kind(), TokenKind::Context | TokenKind::Session) {
            return None;
        }
        self.sign_session(tenant, tenant.context(), tenant.chain_start()?)
    }

    fn sign_session(
        &self,
        tenant: &Tenant,
        context: Option<&serde_json::Value>,
        chain_start: u64,
    ) -> Option<String> {
        #[derive(Serialize)]
        struct SessionClaims<'a> {
            iss: &'a str,
            aud: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            sub: Option<&'a str>,
            iat: u64,
            exp: u64,
            qsh: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            context: Option<&'a serde_json::Value>,
            auth_time: u64,
        }
        let now = jsonwebtoken::get_current_timestamp();
        let chain_end = chain_start.saturating_add(self.inner.session_max_lifetime);
        let exp = (now + SESSION_TOKEN_TTL.as_secs()).min(chain_end);
        if exp <= now {
            return None;
        }
        let claims = SessionClaims {
            iss: &self.inner.app_key,
            aud: tenant.client_key().as_str(),
            sub: tenant.account_id(),
            iat: now,
            exp,
            qsh: qsh::CONTEXT_QSH,
            context,
            auth_time: chain_start,
        };
        Some(jwt::sign_hs256(
            &claims,
            tenant
                .record()
                .installation
                .shared_secret
                .expose()
                .as_bytes(),
        ))
    }
}

/// A tenant lookup whose stored secret does not open is refused (401 `secret_unavailable`) and
/// logged for the operator: no token can be checked against it.
/// The licence Connect's `lic` parameter states, on a request whose query the token's QSH binds.
fn connect_license(kind: TokenKind, parts: &Parts) -> License {
    let lic = (kind == TokenKind::Product)
        .then(|| parts.uri.query())
        .flatten()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "lic")
                .map(|(_, v)| v.into_owned())
        });
    match lic.as_deref() {
        Some("active") => License::Active { evaluation: false },
        Some("none") => License::Inactive,
        _ => License::Unknown,
    }
}

/// Middleware that admits only requests carrying a JWT valid for mode `M`, and puts the
/// verified [`Tenant`] in the request for handlers.
pub async fn require_jwt<M: AuthMode>(
    State(auth): State<Authenticator>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    let (body, deadline) = auth.timed_body(body);
    let (tenant, lifecycle, body, _slot) = auth.verify_request::<M>(&parts, body).await?;
    tracing::Span::current().record("client_key", tenant.client_key().as_str());
    let mut request = Request::from_parts(parts, body);
    if let Some(lifecycle) = lifecycle {
        request.extensions_mut().insert(lifecycle);
    }
    request.extensions_mut().insert(tenant.clone());
    let mut response = next.run(request).await;
    if deadline.passed() {
        return Err(Error::BodyTimeout);
    }
    if M::ISSUE_SESSION_TOKEN
        && response.status().is_success()
        && let Some(token) = auth.renewed_session_token(&tenant)
        && let Ok(value) = HeaderValue::from_str(&token)
    {
        response.headers_mut().insert(SESSION_TOKEN_HEADER, value);
    }
    Ok(response)
}

/// The token of `Authorization: JWT …` or `?jwt=`, if the request has one there; two are refused.
/// Only without one may the token be a `jwt` field of a form body.
fn token_outside_body(parts: &Parts) -> Result<Option<String>, Error> {
    let mut found: Vec<String> = Vec::with_capacity(1);
    found.extend(credentials(&parts.headers, "JWT")?.map(str::to_owned));
    if let Some(query) = parts.uri.query() {
        found.extend(
            form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k == "jwt")
                .map(|(_, v)| v.into_owned()),
        );
    }
    match (found.pop(), found.is_empty()) {
        (None, _) => Ok(None),
        (Some(token), true) => Ok(Some(token)),
        (Some(_), false) => Err(AuthError::MultipleTokens.into()),
    }
}

/// Whether a request's body is `application/x-www-form-urlencoded` (parameters ignored).
pub fn is_form(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The `jwt` fields of a form-encoded body; the body is read (within the body limit) and
/// handed back unchanged for the handler.
async fn form_tokens(
    parts: &Parts,
    body: Body,
    limit: usize,
) -> Result<(Body, Vec<String>), Error> {
    if !is_form(&parts.headers) {
        return Ok((body, Vec::new()));
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(Error::from_body)?;
    let tokens = form_urlencoded::parse(&bytes)
        .filter(|(k, _)| k == "jwt")
        .map(|(_, v)| v.into_owned())
        .collect();
    Ok((Body::from(bytes), tokens))
}
