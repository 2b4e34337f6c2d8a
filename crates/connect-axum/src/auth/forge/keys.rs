//! Forge's signing keys: the JWKS of production, staging and each Isolated Cloud, fetched on a
//! kid not seen, at most once a refresh interval, with backoff after a failed fetch.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use crate::auth::{AuthError, jwt};
pub use crate::config::IC_LABEL_PLACEHOLDER;
use crate::config::check_ic_jwks_template;
use crate::outbound::{self, Policy, Transport};

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
    transport: Transport,
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
        Self {
            url: url.to_string(),
            min_refresh,
            transport: Transport::new(timeout),
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
            .transport
            .send(&Policy::ONCE, |http| http.get(&self.url))
            .await
            .map_err(|e| unavailable(&e))?;
        let body = outbound::read_limited(&mut response, MAX_JWKS_BYTES)
            .await
            .map_err(|e| unavailable(&e))?;
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

/// Forge Remote settings of an [`Authenticator`](crate::auth::Authenticator).
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
        check_ic_jwks_template(template)?;
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
    pub(super) fn keys_for(&self, token: &str) -> Result<ForgeKeys, AuthError> {
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
