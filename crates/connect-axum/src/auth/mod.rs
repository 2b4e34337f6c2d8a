//! Authentication of every request that is not public, one door per folder: [`connect`] (the
//! product's JWTs with their query string hash, session tokens, signed installs) and [`forge`]
//! (Forge Invocation Tokens). What the doors share is here: the [`Authenticator`] and its limits,
//! the reason codes ([`AuthError`]), and the verified [`Tenant`] handlers take, which says how the
//! request was authenticated ([`TokenKind`]) and what its token may reach ([`Access`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::Error;
use crate::slots::{Slot, Slots};
use crate::store::{ClientKey, LifecycleToken, Store};

pub mod connect;
pub mod container;
pub mod forge;
mod invocation;
pub use crate::protocol::{jwt, qsh};
use crate::store::StoreError;
mod tenant;

pub use connect::install::{self, InstallKeys, SignedInstall};
pub use connect::{
    AuthMode, ContextJwt, DEFAULT_SESSION_MAX_LIFETIME, LifecycleJwt, ProductJwt,
    SESSION_TOKEN_HEADER, SESSION_TOKEN_TTL, is_form, require_jwt,
};
pub use forge::{ForgeInvocation, ForgeKeys, ForgeSettings, ForgeToken, require_forge};
pub use invocation::Invocation;
pub use tenant::{Access, IssueRef, License, Owner, Tenant, TokenKind};

/// Why a request was not authenticated: a 401 whose body's `error` is the stable reason code
/// ([`AuthError::code`]); a verified Forge invocation whose tenant is refused gets 403 instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carries no token where its route looks for one (`missing_token`).
    #[error("no JWT in the Authorization header, the jwt query parameter or the jwt form field")]
    MissingToken,
    /// The token came in more than one place, or twice in one (`multiple_tokens`).
    #[error("the JWT was sent in more than one place")]
    MultipleTokens,
    /// The `Authorization` header uses another scheme than the route's `JWT` or `Bearer`
    /// (`unsupported_scheme`).
    #[error("the Authorization header must use the JWT scheme")]
    UnsupportedScheme,
    /// The token is not a decodable JWT, or one of its ids is empty or too long to store
    /// (`malformed_token`).
    #[error("the JWT could not be decoded")]
    MalformedToken,
    /// The token's `alg` is not the one its door takes: HS256 for Connect JWTs, RS256 for signed
    /// installs and Forge tokens (`unsupported_algorithm`).
    #[error("the JWT's algorithm is not accepted here")]
    UnsupportedAlgorithm,
    /// The token lacks a claim its door requires: `iss`, `exp`, `iat`, a session's `aud` or
    /// `auth_time` (`missing_claim`).
    #[error("the JWT lacks a required claim")]
    MissingClaim,
    /// The signature does not verify with the tenant's sharedSecret or the published RSA key
    /// (`bad_signature`).
    #[error("the JWT's signature does not verify")]
    BadSignature,
    /// `exp` is past, beyond the leeway (`expired`).
    #[error("the JWT has expired")]
    Expired,
    /// `nbf` is still ahead, beyond the leeway (`not_yet_valid`).
    #[error("the JWT is not valid yet")]
    NotYetValid,
    /// `iat` (or a session's `auth_time`) is ahead of now, beyond the leeway
    /// (`issued_in_future`).
    #[error("the JWT was issued in the future")]
    IssuedInFuture,
    /// `exp` is further from `iat` (or from now) than `MAX_TOKEN_LIFETIME_SECS`
    /// (`lifetime_too_long`).
    #[error("the JWT lives longer than this app accepts (MAX_TOKEN_LIFETIME_SECS)")]
    LifetimeTooLong,
    /// No Connect tenant is installed with the token's `iss` (a session token's `aud`)
    /// (`unknown_tenant`).
    #[error("the JWT's issuer is not an installed tenant")]
    UnknownTenant,
    /// The tenant is known but has uninstalled the app (`tenant_uninstalled`).
    #[error("the tenant has uninstalled the app")]
    TenantUninstalled,
    /// The tenant has disabled the app and the route does not serve disabled tenants
    /// (`tenant_disabled`).
    #[error("the tenant has disabled the app")]
    TenantDisabled,
    /// A Connect JWT or signed install without its `qsh` claim (`missing_qsh`).
    #[error("the JWT has no qsh claim")]
    MissingQsh,
    /// The `qsh` is not the hash of this request's method, path and query (`qsh_mismatch`).
    #[error("the JWT's qsh does not match this request")]
    QshMismatch,
    /// A context token (`qsh` `context-qsh`) on a route that takes only tokens bound to the
    /// request, such as [`ProductJwt`] (`context_token_not_allowed`).
    #[error("this route does not accept context tokens")]
    ContextTokenNotAllowed,
    /// The token's `aud` is not this app: its base URL for a signed install, its app ARI for a
    /// Forge token (`invalid_audience`).
    #[error("the JWT's audience is not this app")]
    InvalidAudience,
    /// A lifecycle payload's `clientKey` is not the token's issuer (`issuer_mismatch`).
    #[error("the JWT's issuer does not match the payload's clientKey")]
    IssuerMismatch,
    /// A signed install or Forge token without a usable `kid` header (`invalid_kid`).
    #[error("the signed install has no usable key id")]
    InvalidKeyId,
    /// The key server publishes no usable key for the token's `kid` (`unknown_kid`).
    #[error("no public key is published for the signed install's key id")]
    UnknownKeyId,
    /// The install key server or the Forge JWKS could not be fetched, or fetches are at their limit
    /// (`key_server_unavailable`).
    #[error("the key server could not be reached")]
    KeyServerUnavailable,
    /// The token's `iss` is not the issuer its door takes, such as `forge/invocation-token`
    /// (`invalid_issuer`).
    #[error("the JWT's issuer is not the one this route accepts")]
    InvalidIssuer,
    /// A verified Forge token whose `installationId` (or cloud id) leads to no installed tenant
    /// (`unmapped_installation`).
    #[error("no tenant is installed with the invocation's installationId")]
    UnmappedInstallation,
    /// A Forge token reached an app without `FORGE_APP_ID` (`forge_not_configured`).
    #[error("Forge Remote is not configured (FORGE_APP_ID)")]
    ForgeNotConfigured,
    /// A container request without `x-forge-invocation-id` (`missing_invocation_id`).
    #[error("no x-forge-invocation-id header: Forge's sidecar sends one with every invocation")]
    MissingInvocationId,
    /// An invocation id that could not stand in the egress header (`invalid_invocation_id`).
    #[error("the x-forge-invocation-id header is not an invocation id")]
    InvalidInvocationId,
    /// A container route in an app that does not run as a Forge Container
    /// (`container_not_configured`).
    #[error("the app does not run as a Forge Container (FORGE_EGRESS_PROXY_URL)")]
    ContainerNotConfigured,
    /// A Forge token's `icLabel` is not a valid Isolated Cloud label (`invalid_ic_label`).
    #[error("the invocation token's icLabel is not an Isolated Cloud label")]
    InvalidIcLabel,
    /// A Forge token from an Isolated Cloud while `FORGE_IC_JWKS_URL_TEMPLATE` is unset
    /// (`isolated_cloud_not_configured`).
    #[error(
        "the invocation token comes from an Isolated Cloud this app is not set up for (FORGE_IC_JWKS_URL_TEMPLATE)"
    )]
    IsolatedCloudNotConfigured,
    /// The tenant's stored sharedSecret does not open (sealed with a key not configured, corrupt,
    /// or plain text not allowed); logged as an error (`secret_unavailable`).
    #[error("the tenant's stored secret cannot be used; the operator has been told")]
    SecretUnavailable,
    /// The session chain began longer ago than `SESSION_MAX_LIFETIME_SECS` (`session_expired`).
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
            AuthError::MissingInvocationId => "missing_invocation_id",
            AuthError::InvalidInvocationId => "invalid_invocation_id",
            AuthError::ContainerNotConfigured => "container_not_configured",
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

/// Everything needed to authenticate requests; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
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
    container: Option<container::InvocationContexts>,
    system_tokens: crate::auth::forge::system_tokens::SystemTokens,
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
        store: Store,
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
                container: None,
                system_tokens: crate::auth::forge::system_tokens::SystemTokens::new(store.clone()),
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

    /// Where the system tokens of verified Forge calls are kept.
    pub fn system_tokens(&self) -> &crate::auth::forge::system_tokens::SystemTokens {
        &self.inner.system_tokens
    }

    /// The concurrency limits this authenticator admits requests within.
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

pub(crate) fn usable<T>(found: Result<T, StoreError>) -> Result<T, Error> {
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
