//! The app's system token, kept per tenant: Forge sends it (`x-forge-oauth-system`) on the calls
//! whose manifest entry asks for it and mints none on demand, so the library stores the latest
//! one, sealed, with its expiry, for product calls "as the app" outside any request.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

use super::InvocationClaims;
use crate::protocol::ForgeToken;
use crate::store::{ClientKey, Store};

/// The lifetime assumed for a token whose `exp` cannot be read: Forge documents at least two
/// hours left on delivery only for calls straight from a trigger.
pub const UNREADABLE_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// No token lives longer than this (Forge's stated maximum), whatever its `exp` says.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(4 * 60 * 60);

/// When a token stops working: its `exp` when the token is a JWT whose payload reads (Forge calls
/// the format opaque, so nothing else is read from it), else [`UNREADABLE_TOKEN_LIFETIME`] from
/// `now`; never beyond [`MAX_TOKEN_LIFETIME`]. `None` for a token already expired.
pub fn expires_at(token: &ForgeToken, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let ceiling = now + MAX_TOKEN_LIFETIME;
    let exp = token
        .expose()
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok())
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .and_then(|claims| claims.get("exp")?.as_i64())
        .and_then(|exp| DateTime::from_timestamp(exp, 0));
    match exp {
        Some(exp) if exp <= now => None,
        Some(exp) => Some(exp.min(ceiling)),
        None => Some(now + UNREADABLE_TOKEN_LIFETIME),
    }
}

/// Writes each tenant's system token to the store when a call of the app (never a user's: the
/// header is not covered by the FIT) brings one it has not stored yet: a token comes on many
/// calls in a row, and each is written once per replica. The token of the newest FIT wins.
#[derive(Clone)]
pub struct SystemTokens {
    store: Store,
    written: moka::sync::Cache<ClientKey, [u8; 32]>,
}

impl SystemTokens {
    /// Writes to `store`, skipping a token this replica wrote in the last 15 minutes.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            written: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(15 * 60))
                .build(),
        }
    }

    /// Stores `token` for `key` unless this replica stored it already. A store failure is
    /// logged and does not fail the call that brought the token.
    pub async fn remember(&self, key: &ClientKey, token: &ForgeToken, claims: &InvocationClaims) {
        let Some(api_base_url) = claims.app.api_base_url.as_deref() else {
            return;
        };
        let digest: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        if self.written.get(key) == Some(digest) {
            return;
        }
        let Some(expires_at) = expires_at(token, crate::store::now()) else {
            return;
        };
        // A FIT without `iat` is ordered by its `exp`, as its lifecycle changes are.
        let Some(issued_at) = claims.iat.or(claims.exp) else {
            return;
        };
        match self
            .store
            .forge()
            .save_system_token(key, token, api_base_url, expires_at, issued_at)
            .await
        {
            Ok(_) => self.written.insert(key.clone(), digest),
            Err(e) => tracing::warn!(
                tenant.client_key = %key,
                error = %e,
                "could not store the Forge system token"
            ),
        }
    }
}
