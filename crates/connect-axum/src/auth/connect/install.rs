//! Signed install: the RS256 JWT that Atlassian puts on `installed` and `uninstalled`, verified
//! with a public key fetched by `kid` from the install-keys service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use jsonwebtoken::{Algorithm, DecodingKey};
use moka::Expiry;
use moka::future::Cache;
use tokio::sync::Semaphore;

use crate::auth::{AuthError, Authenticator, jwt};
use crate::error::Error;
use crate::outbound::{self, Failure, Policy, Transport};
use crate::slots::Slot;
use crate::store::LifecycleToken;

/// Public keys larger than this are not read.
const MAX_KEY_BYTES: usize = 16 * 1024;

/// How long a `kid` the key server does not know is answered `unknown_kid` without asking again.
pub const UNKNOWN_KID_TTL: Duration = Duration::from_secs(60);

/// How long a `kid` whose fetch failed (key server unreachable or erring) is answered
/// `key_server_unavailable` without asking again.
pub const KEY_SERVER_DOWN_TTL: Duration = Duration::from_secs(5);

/// Key fetches in flight at once, over all kids; an install needing one more is refused
/// `key_server_unavailable` at once.
pub const MAX_KEY_FETCHES: usize = 8;

/// Refused kids remembered at most (about 150 bytes each).
const MAX_REFUSED_KIDS: u64 = 10_000;

/// Fetches and caches the install-keys service's PEM public keys by `kid`.
///
/// Concurrent installs naming one kid share one fetch; a kid the server refused is remembered
/// for a while ([`UNKNOWN_KID_TTL`], [`KEY_SERVER_DOWN_TTL`]), so that repeating it costs no
/// fetch; and at most [`MAX_KEY_FETCHES`] fetches run at once, so that a flood of made-up kids
/// cannot open unbounded outbound requests.
#[derive(Clone)]
pub struct InstallKeys {
    base: String,
    transport: Transport,
    cache: Cache<String, Arc<DecodingKey>>,
    refused: Cache<String, AuthError>,
    fetches: Arc<Semaphore>,
}

/// Each refusal is remembered as long as its kind warrants.
struct RefusalTtl;

impl Expiry<String, AuthError> for RefusalTtl {
    fn expire_after_create(&self, _: &String, error: &AuthError, _: Instant) -> Option<Duration> {
        Some(match error {
            AuthError::UnknownKeyId => UNKNOWN_KID_TTL,
            _ => KEY_SERVER_DOWN_TTL,
        })
    }
}

impl InstallKeys {
    /// Keys come from `GET {base}/{kid}`; each fetch gives up after `timeout`.
    pub fn new(base: &url::Url, timeout: Duration) -> Self {
        Self {
            base: base.as_str().trim_end_matches('/').to_owned(),
            transport: Transport::new(timeout),
            cache: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(60 * 60))
                .build(),
            refused: Cache::builder()
                .max_capacity(MAX_REFUSED_KIDS)
                .expire_after(RefusalTtl)
                .build(),
            fetches: Arc::new(Semaphore::new(MAX_KEY_FETCHES)),
        }
    }

    /// The key for `kid`, from the cache or the key server.
    pub async fn get(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        if !is_safe_kid(kid) {
            return Err(AuthError::InvalidKeyId);
        }
        if let Some(error) = self.refused.get(kid).await {
            return Err(error);
        }
        self.cache
            .try_get_with(kid.to_owned(), self.fetch_once(kid))
            .await
            .map_err(|e| *e)
    }

    /// The one fetch of `kid` that concurrent callers share; its refusal is remembered before
    /// it is shared, so that a caller arriving later finds it instead of fetching again.
    async fn fetch_once(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        if let Some(error) = self.refused.get(kid).await {
            return Err(error);
        }
        let Ok(_permit) = self.fetches.try_acquire() else {
            // Not remembered: the kid itself may be fine once the flood is over.
            tracing::debug!(kid, "install key fetches at their limit");
            return Err(AuthError::KeyServerUnavailable);
        };
        let result = self.fetch(kid).await;
        if let Err(error) = result {
            self.refused.insert(kid.to_owned(), error).await;
        }
        result
    }

    async fn fetch(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        let url = format!("{}/{}", self.base, kid);
        let mut response = self
            .transport
            .send(&Policy::ONCE, |http| http.get(&url))
            .await
            .map_err(|e| match e {
                Failure::Status { status, .. } if status == reqwest::StatusCode::NOT_FOUND => {
                    AuthError::UnknownKeyId
                }
                e => {
                    tracing::warn!(kid, error = %e, "the install key server gave no key for {kid}");
                    AuthError::KeyServerUnavailable
                }
            })?;
        let pem = outbound::read_limited(&mut response, MAX_KEY_BYTES)
            .await
            .map_err(|e| match e {
                Failure::TooLarge { .. } => AuthError::UnknownKeyId,
                _ => AuthError::KeyServerUnavailable,
            })?;
        DecodingKey::from_rsa_pem(&pem)
            .map(Arc::new)
            .map_err(|_| AuthError::UnknownKeyId)
    }
}

/// A `kid` goes into the key server's URL: only a plain path segment is accepted.
fn is_safe_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 128
        && !kid.starts_with('.')
        && !kid.contains("..")
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A lifecycle request whose signed-install JWT verified: RS256 signature by the key its `kid`
/// names, time claims, `aud` = this app's base URL and `qsh` of this request.
///
/// The issuer still has to match the payload's `clientKey`: see [`SignedInstall::check_issuer`].
/// It holds a tenant slot until the handler is done with it.
pub struct SignedInstall {
    issuer: String,
    /// The token's `iat` and `jti`, by which the store refuses a replayed or older hook.
    pub token: LifecycleToken,
    /// The raw request body.
    pub body: Bytes,
    _slot: Slot,
}

impl SignedInstall {
    /// Checks that the token was issued for the tenant the payload names.
    pub fn check_issuer(&self, client_key: &str) -> Result<(), AuthError> {
        if self.issuer == client_key {
            Ok(())
        } else {
            Err(AuthError::IssuerMismatch)
        }
    }
}

impl<S> FromRequest<S> for SignedInstall
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Authenticator::from_ref(state);
        let (parts, body) = request.into_parts();
        let token =
            crate::auth::credentials(&parts.headers, "JWT")?.ok_or(AuthError::MissingToken)?;
        let (peeked, _) = jwt::peek(token)?;
        if peeked.alg != "RS256" {
            return Err(AuthError::UnsupportedAlgorithm.into());
        }
        let kid = peeked.kid.ok_or(AuthError::InvalidKeyId)?;
        let key = auth.inner.install_keys.get(&kid).await?;
        let claims = jwt::verify(token, &key, Algorithm::RS256, auth.inner.limits)?;
        let audience_ok = claims.aud.as_ref().is_some_and(|aud| {
            aud.as_slice()
                .iter()
                .any(|a| a.trim_end_matches('/') == auth.inner.base_url)
        });
        if !audience_ok {
            return Err(AuthError::InvalidAudience.into());
        }
        match claims.qsh {
            None => return Err(AuthError::MissingQsh.into()),
            Some(qsh) if qsh != auth.request_qsh(&parts) => {
                return Err(AuthError::QshMismatch.into());
            }
            Some(_) => {}
        }
        let lifecycle =
            crate::auth::lifecycle_token(claims.iat, claims.exp, claims.jti.as_deref(), token)?;
        // Atlassian signed it: only now may the body be waited for.
        let slot = auth.slots().signed()?;
        let (body, deadline) = auth.timed_body(body);
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| match deadline.passed() {
                true => Error::BodyTimeout,
                false => Error::from(e),
            })?;
        Ok(SignedInstall {
            issuer: claims.iss,
            token: lifecycle,
            body,
            _slot: slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::is_safe_kid;

    #[test]
    fn key_ids_that_could_leave_the_key_path_are_refused() {
        for kid in [
            "", "../x", "a/b", "a?b", "a#b", "..", ".", "a..b", "%2e%2e", "a b",
        ] {
            assert!(!is_safe_kid(kid), "{kid:?}");
        }
        assert!(!is_safe_kid(&"a".repeat(129)));
        for kid in [
            "test-kid-1",
            "5f1b3c2a-0d6e-4c7b-9a1e-2b3c4d5e6f70",
            "connect:key.v2_1",
        ] {
            assert!(is_safe_kid(kid), "{kid:?}");
        }
    }
}
