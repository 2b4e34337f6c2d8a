//! Authentication of every request that is not public: the product's HS256 JWTs with their query
//! string hash, the app's own session tokens, and the RS256 signed install of lifecycle hooks.
//!
//! Routes choose a mode by type ([`ProductJwt`], [`ContextJwt`], [`LifecycleJwt`]) when the router
//! layers [`require_jwt`] on them; handlers then take the verified [`Tenant`], which says how the
//! request was authenticated ([`TokenKind`]) and what its token may reach ([`Access`]).
//!
//! Session tokens are minted only for one issue ([`Authenticator::session_token_for_issue`]) and
//! renewed only from a context or session token, with its scope and the time its chain began; a
//! chain ends `SESSION_MAX_LIFETIME_SECS` after it began.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, request::Parts};
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Serialize;

use crate::error::Error;
use crate::slots::{Slot, Slots};
use crate::store::{ClientKey, LifecycleToken, Origin, TenantStore};

pub mod forge;
pub use crate::protocol::{jwt, qsh};
pub mod install;
pub mod system_tokens;
mod tenant;

pub use forge::{ForgeInvocation, ForgeKeys, ForgeSettings, ForgeToken, require_forge};
pub use install::{InstallKeys, SignedInstall};
pub use tenant::{Access, IssueRef, License, Owner, Tenant, TokenKind};

/// The response header that carries the renewed session token for the iframe's later calls.
pub const SESSION_TOKEN_HEADER: &str = "x-acpt";

/// How long a session token lives.
pub const SESSION_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// How long a chain of renewed session tokens lasts by default: a working day.
pub const DEFAULT_SESSION_MAX_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// Why a request was not authenticated; each has a stable reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no JWT in the Authorization header, the jwt query parameter or the jwt form field")]
    MissingToken,
    #[error("the JWT was sent in more than one place")]
    MultipleTokens,
    #[error("the Authorization header must use the JWT scheme")]
    UnsupportedScheme,
    #[error("the JWT could not be decoded")]
    MalformedToken,
    #[error("the JWT's algorithm is not accepted here")]
    UnsupportedAlgorithm,
    #[error("the JWT lacks a required claim")]
    MissingClaim,
    #[error("the JWT's signature does not verify")]
    BadSignature,
    #[error("the JWT has expired")]
    Expired,
    #[error("the JWT is not valid yet")]
    NotYetValid,
    #[error("the JWT was issued in the future")]
    IssuedInFuture,
    #[error("the JWT lives longer than this app accepts (MAX_TOKEN_LIFETIME_SECS)")]
    LifetimeTooLong,
    #[error("the JWT's issuer is not an installed tenant")]
    UnknownTenant,
    #[error("the tenant has uninstalled the app")]
    TenantUninstalled,
    #[error("the tenant has disabled the app")]
    TenantDisabled,
    #[error("the JWT has no qsh claim")]
    MissingQsh,
    #[error("the JWT's qsh does not match this request")]
    QshMismatch,
    #[error("this route does not accept context tokens")]
    ContextTokenNotAllowed,
    #[error("the JWT's audience is not this app")]
    InvalidAudience,
    #[error("the JWT's issuer does not match the payload's clientKey")]
    IssuerMismatch,
    #[error("the signed install has no usable key id")]
    InvalidKeyId,
    #[error("no public key is published for the signed install's key id")]
    UnknownKeyId,
    #[error("the key server could not be reached")]
    KeyServerUnavailable,
    #[error("the JWT's issuer is not the one this route accepts")]
    InvalidIssuer,
    #[error("no tenant is installed with the invocation's installationId")]
    UnmappedInstallation,
    #[error("Forge Remote is not configured (FORGE_APP_ID)")]
    ForgeNotConfigured,
    #[error("the invocation token's icLabel is not an Isolated Cloud label")]
    InvalidIcLabel,
    #[error(
        "the invocation token comes from an Isolated Cloud this app is not set up for (FORGE_IC_JWKS_URL_TEMPLATE)"
    )]
    IsolatedCloudNotConfigured,
    #[error("the tenant's stored secret cannot be used; the operator has been told")]
    SecretUnavailable,
    #[error("the session began too long ago; get a fresh token from the product")]
    SessionExpired,
}

impl From<crate::protocol::jwt::TokenError> for AuthError {
    fn from(e: crate::protocol::jwt::TokenError) -> Self {
        use crate::protocol::jwt::TokenError;
        match e {
            TokenError::Malformed => AuthError::MalformedToken,
            TokenError::UnsupportedAlgorithm => AuthError::UnsupportedAlgorithm,
            TokenError::MissingClaim => AuthError::MissingClaim,
            TokenError::BadSignature => AuthError::BadSignature,
            TokenError::Expired => AuthError::Expired,
            TokenError::NotYetValid => AuthError::NotYetValid,
            TokenError::IssuedInFuture => AuthError::IssuedInFuture,
            TokenError::LifetimeTooLong => AuthError::LifetimeTooLong,
            TokenError::InvalidIssuer => AuthError::InvalidIssuer,
            TokenError::InvalidAudience => AuthError::InvalidAudience,
        }
    }
}

impl From<crate::protocol::jwt::TokenError> for Error {
    fn from(e: crate::protocol::jwt::TokenError) -> Self {
        AuthError::from(e).into()
    }
}

impl AuthError {
    /// The stable reason code sent in the error body.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::MultipleTokens => "multiple_tokens",
            AuthError::UnsupportedScheme => "unsupported_scheme",
            AuthError::MalformedToken => "malformed_token",
            AuthError::UnsupportedAlgorithm => "unsupported_algorithm",
            AuthError::MissingClaim => "missing_claim",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::LifetimeTooLong => "lifetime_too_long",
            AuthError::UnknownTenant => "unknown_tenant",
            AuthError::TenantUninstalled => "tenant_uninstalled",
            AuthError::TenantDisabled => "tenant_disabled",
            AuthError::MissingQsh => "missing_qsh",
            AuthError::QshMismatch => "qsh_mismatch",
            AuthError::ContextTokenNotAllowed => "context_token_not_allowed",
            AuthError::InvalidAudience => "invalid_audience",
            AuthError::IssuerMismatch => "issuer_mismatch",
            AuthError::InvalidKeyId => "invalid_kid",
            AuthError::UnknownKeyId => "unknown_kid",
            AuthError::KeyServerUnavailable => "key_server_unavailable",
            AuthError::InvalidIssuer => "invalid_issuer",
            AuthError::UnmappedInstallation => "unmapped_installation",
            AuthError::ForgeNotConfigured => "forge_not_configured",
            AuthError::InvalidIcLabel => "invalid_ic_label",
            AuthError::IsolatedCloudNotConfigured => "isolated_cloud_not_configured",
            AuthError::SecretUnavailable => "secret_unavailable",
            AuthError::SessionExpired => "session_expired",
        }
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        metrics::counter!("auth_failures_total", "reason" => e.code()).increment(1);
        Error::Unauthorized {
            reason: e.code(),
            message: e.to_string(),
        }
    }
}

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

/// Everything needed to authenticate requests; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn TenantStore>,
    app_key: String,
    base_url: String,
    base_path: String,
    limits: jwt::TimeLimits,
    session_max_lifetime: u64,
    max_body_bytes: usize,
    install_keys: InstallKeys,
    rate_limit: Option<TenantRateLimiter>,
    write_rate_limit: Option<TenantRateLimiter>,
    body_read_timeout: Duration,
    forge: Option<ForgeSettings>,
    system_tokens: crate::auth::system_tokens::SystemTokens,
    slots: Slots,
}

type TenantRateLimiter = governor::DefaultKeyedRateLimiter<ClientKey>;

/// A limiter of `per_second` per tenant, with bursts of twice that; none for 0.
fn rate_limiter(per_second: u32) -> Option<TenantRateLimiter> {
    std::num::NonZeroU32::new(per_second).map(|rate| {
        let burst = rate.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
        governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
    })
}

/// Refuses (429) a request of `key` beyond what `limiter` allows.
fn check(limiter: Option<&TenantRateLimiter>, key: &ClientKey) -> Result<(), Error> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
        Error::RateLimited {
            retry_after: wait.as_secs() + 1,
        }
    })
}

impl Authenticator {
    /// Builds an authenticator for the app `app_key` served at `base_url`, accepting tokens
    /// that live at most `max_token_lifetime`.
    pub fn new(
        store: Arc<dyn TenantStore>,
        app_key: String,
        base_url: &url::Url,
        leeway: Duration,
        max_token_lifetime: Duration,
        max_body_bytes: usize,
        install_keys: InstallKeys,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                app_key,
                base_url: base_url.as_str().trim_end_matches('/').to_owned(),
                base_path: base_url.path().trim_end_matches('/').to_owned(),
                limits: jwt::TimeLimits {
                    leeway: leeway.as_secs(),
                    max_lifetime: max_token_lifetime.as_secs(),
                },
                session_max_lifetime: DEFAULT_SESSION_MAX_LIFETIME.as_secs(),
                max_body_bytes,
                install_keys,
                rate_limit: None,
                write_rate_limit: None,
                body_read_timeout: crate::body::DEFAULT_READ_TIMEOUT,
                forge: None,
                system_tokens: crate::auth::system_tokens::SystemTokens::new(store.clone()),
                slots: Slots::unlimited(),
            }),
        }
    }

    /// Limits each tenant to `per_second` requests (bursts of twice that); 0 means no limit.
    pub fn with_rate_limit(self, per_second: u32) -> Self {
        let inner = Arc::into_inner(self.inner).expect("set while building the authenticator");
        Self {
            inner: Arc::new(Inner {
                rate_limit: rate_limiter(per_second),
                ..inner
            }),
        }
    }

    /// Limits the writes (methods other than GET, HEAD, OPTIONS) that a tenant's users make with
    /// their own tokens ([`TokenKind::is_user_view`]) to `per_second` (bursts of twice that); 0
    /// means no limit. The product's own calls are not counted.
    pub fn with_write_rate_limit(self, per_second: u32) -> Self {
        let inner = Arc::into_inner(self.inner).expect("set while building the authenticator");
        Self {
            inner: Arc::new(Inner {
                write_rate_limit: rate_limiter(per_second),
                ..inner
            }),
        }
    }

    /// Gives a verified request's body `timeout` to arrive once its headers have (408
    /// `body_timeout` after that).
    pub fn with_body_read_timeout(self, timeout: Duration) -> Self {
        let inner = Arc::into_inner(self.inner).expect("set while building the authenticator");
        Self {
            inner: Arc::new(Inner {
                body_read_timeout: timeout,
                ..inner
            }),
        }
    }

    /// Ends every chain of session tokens `lifetime` after it began: no renewal beyond it, and a
    /// token of an older chain is refused (`session_expired`).
    pub fn with_session_max_lifetime(self, lifetime: Duration) -> Self {
        let inner = Arc::into_inner(self.inner).expect("set while building the authenticator");
        Self {
            inner: Arc::new(Inner {
                session_max_lifetime: lifetime.as_secs(),
                ..inner
            }),
        }
    }

    /// Admits verified requests within `slots`' tenant pool, and reads form bodies that may hold
    /// the only token within its anonymous pool.
    pub fn with_slots(self, slots: Slots) -> Self {
        let inner = Arc::into_inner(self.inner).expect("set while building the authenticator");
        Self {
            inner: Arc::new(Inner { slots, ..inner }),
        }
    }

    /// The concurrency limits this authenticator admits requests within.
    /// Where the system tokens of verified Forge calls are kept.
    pub fn system_tokens(&self) -> &crate::auth::system_tokens::SystemTokens {
        &self.inner.system_tokens
    }

    pub fn slots(&self) -> &Slots {
        &self.inner.slots
    }

    /// The checks every verified request passes before it runs: its tenant's rate (and for a
    /// user's write, its users' write rate), then a tenant slot within the tenant's share, held
    /// until the response.
    fn admit(&self, tenant: &Tenant, method: &Method) -> Result<Slot, Error> {
        let key = tenant.client_key();
        self.check_rate(key)?;
        if tenant.token_kind().is_user_view() && !method.is_safe() {
            check(self.inner.write_rate_limit.as_ref(), key)?;
        }
        self.inner.slots.tenant(key.as_str())
    }

    /// `body`, to be read within the body read timeout from now.
    pub fn timed_body(&self, body: Body) -> (Body, crate::body::Deadline) {
        crate::body::with_deadline(body, self.inner.body_read_timeout)
    }

    /// Accepts Forge Invocation Tokens for the app `settings.app_ari` on [`require_forge`] routes.
    pub fn with_forge(self, settings: ForgeSettings) -> Self {
        let inner = Arc::into_inner(self.inner).expect("set while building the authenticator");
        Self {
            inner: Arc::new(Inner {
                forge: Some(settings),
                ..inner
            }),
        }
    }

    /// Refuses (429) a request of `key` beyond its `TENANT_RATE_LIMIT`.
    pub(crate) fn check_rate(&self, key: &ClientKey) -> Result<(), Error> {
        check(self.inner.rate_limit.as_ref(), key)
    }

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
        let record = usable(self.inner.store.find_tenant(&client_key).await)?
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

/// Middleware for a route group behind [`require_jwt`] or [`require_forge`]: admits only
/// licensed requests ([`Tenant::require_license`]), else 403 `unlicensed`.
pub async fn require_license(request: Request, next: Next) -> Result<Response, Error> {
    let tenant = request
        .extensions()
        .get::<Tenant>()
        .ok_or(AuthError::MissingToken)?;
    tenant.require_license()?;
    Ok(next.run(request).await)
}

pub(crate) fn usable<T>(found: sqlx::Result<T>) -> Result<T, Error> {
    found.map_err(|e| match crate::store::UnreadableSecret::of(&e) {
        Some(unreadable) => {
            tracing::error!(
                tenant.client_key = %unreadable.client_key,
                "refused a request for tenant {}: {}",
                unreadable.client_key,
                unreadable
            );
            AuthError::SecretUnavailable.into()
        }
        None => e.into(),
    })
}

/// The identity of a verified lifecycle token: `iat` (required), `exp`, and `jti`, or the
/// SHA-256 of the whole token when it has none.
pub(crate) fn lifecycle_token(
    issued_at: Option<i64>,
    expires_at: Option<i64>,
    jti: Option<&str>,
    token: &str,
) -> Result<LifecycleToken, AuthError> {
    use sha2::Digest as _;
    let issued_at = issued_at.ok_or(AuthError::MissingClaim)?;
    let id = match jti {
        Some(jti) if jti.is_empty() || !fits_id_column(jti) => {
            return Err(AuthError::MalformedToken);
        }
        Some(jti) => jti.to_owned(),
        None => hex::encode(sha2::Sha256::digest(token.as_bytes())),
    };
    Ok(LifecycleToken {
        issued_at,
        expires_at: expires_at.unwrap_or(issued_at),
        id,
    })
}

/// Whether a key could be stored at all: never send the store what it would choke on.
pub(crate) fn is_plausible_client_key(key: &str) -> bool {
    !key.is_empty() && fits_id_column(key)
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

/// The credentials of the request's one `Authorization: <scheme> <credentials>` header (the
/// scheme matched without regard to case), or `None` when it has none.
///
/// # Errors
/// `multiple_tokens` for more than one such header, `malformed_token` for one that is not text,
/// `unsupported_scheme` for another scheme.
pub fn credentials<'h>(
    headers: &'h axum::http::HeaderMap,
    scheme: &str,
) -> Result<Option<&'h str>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::MultipleTokens);
    }
    let value = value.to_str().map_err(|_| AuthError::MalformedToken)?;
    let (given, credentials) = value.split_once(' ').unwrap_or((value, ""));
    if !given.eq_ignore_ascii_case(scheme) {
        return Err(AuthError::UnsupportedScheme);
    }
    Ok(Some(credentials.trim()))
}

/// Whether `text` fits an identifier column of the stores (client keys, account ids, token and
/// migration ids): at most 255 bytes, and no NUL, which Postgres text cannot hold.
pub fn fits_id_column(text: &str) -> bool {
    text.len() <= 255 && !text.contains('\0')
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

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn credentials_follow_one_rule_for_every_scheme() {
        assert_eq!(credentials(&headers(&[]), "JWT"), Ok(None));
        for given in ["JWT abc", "jwt abc", "Jwt  abc "] {
            assert_eq!(
                credentials(&headers(&[given]), "JWT"),
                Ok(Some("abc")),
                "{given}"
            );
        }
        assert_eq!(
            credentials(&headers(&["bearer t"]), "Bearer"),
            Ok(Some("t"))
        );
        assert_eq!(
            credentials(&headers(&["Bearer t"]), "JWT"),
            Err(AuthError::UnsupportedScheme)
        );
        assert_eq!(
            credentials(&headers(&["JWT a", "JWT b"]), "JWT"),
            Err(AuthError::MultipleTokens)
        );
        let mut opaque = HeaderMap::new();
        opaque.insert(AUTHORIZATION, HeaderValue::from_bytes(b"JWT \xff").unwrap());
        assert_eq!(credentials(&opaque, "JWT"), Err(AuthError::MalformedToken));
    }

    #[test]
    fn identifier_columns_hold_255_bytes_without_nul() {
        assert!(fits_id_column(&"a".repeat(255)));
        assert!(!fits_id_column(&"a".repeat(256)));
        assert!(!fits_id_column("a\0b"));
        assert!(is_plausible_client_key("k") && !is_plausible_client_key(""));
    }
}
