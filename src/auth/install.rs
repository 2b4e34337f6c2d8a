//! Signed install: the RS256 JWT that Atlassian puts on `installed` and `uninstalled`, verified
//! with a public key fetched by `kid` from the install-keys service.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::header::AUTHORIZATION;
use jsonwebtoken::{Algorithm, DecodingKey};
use moka::future::Cache;

use super::{AuthError, Authenticator, jwt};
use crate::error::Error;
use crate::slots::Slot;
use crate::store::LifecycleToken;

/// Public keys larger than this are not read.
const MAX_KEY_BYTES: usize = 16 * 1024;

/// Fetches and caches the install-keys service's PEM public keys by `kid`.
#[derive(Clone)]
pub struct InstallKeys {
    base: String,
    http: reqwest::Client,
    cache: Cache<String, Arc<DecodingKey>>,
}

impl InstallKeys {
    /// Keys come from `GET {base}/{kid}`; each fetch gives up after `timeout`.
    pub fn new(base: &url::Url, timeout: Duration) -> Self {
        let http = super::key_client(timeout);
        Self {
            base: base.as_str().trim_end_matches('/').to_owned(),
            http,
            cache: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(60 * 60))
                .build(),
        }
    }

    /// The key for `kid`, from the cache or the key server.
    pub async fn get(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        if !is_safe_kid(kid) {
            return Err(AuthError::InvalidKeyId);
        }
        self.cache
            .try_get_with(kid.to_owned(), self.fetch(kid))
            .await
            .map_err(|e| *e)
    }

    async fn fetch(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        let url = format!("{}/{}", self.base, kid);
        let mut response = self.http.get(&url).send().await.map_err(|e| {
            tracing::warn!(kid, error = %e, "install key server unreachable");
            AuthError::KeyServerUnavailable
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(AuthError::UnknownKeyId);
        }
        if !status.is_success() {
            tracing::warn!(kid, %status, "install key server refused the key request");
            return Err(AuthError::KeyServerUnavailable);
        }
        let mut pem = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| AuthError::KeyServerUnavailable)?
        {
            if pem.len() + chunk.len() > MAX_KEY_BYTES {
                return Err(AuthError::UnknownKeyId);
            }
            pem.extend_from_slice(&chunk);
        }
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
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(AuthError::MissingToken)?
            .to_str()
            .map_err(|_| AuthError::MalformedToken)?;
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("JWT") => token.trim(),
            _ => return Err(AuthError::UnsupportedScheme.into()),
        };
        let (peeked, _) = jwt::peek(token)?;
        if peeked.alg != "RS256" {
            return Err(AuthError::UnsupportedAlgorithm.into());
        }
        let kid = peeked.kid.ok_or(AuthError::InvalidKeyId)?;
        let key = auth.inner.install_keys.get(&kid).await?;
        let claims = jwt::verify(token, &key, Algorithm::RS256, auth.inner.leeway)?;
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
        let lifecycle = super::lifecycle_token(&claims, token)?;
        // Atlassian signed it: only now may the body be waited for.
        let slot = auth.slots().tenant()?;
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(Error::from)?;
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
