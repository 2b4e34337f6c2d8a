//! Offline user impersonation: a token to act as a user of an installation when that user is not
//! at the keyboard, asked of Atlassian's GraphQL API with the app's system token, and kept per
//! (installation, user) until shortly before it expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use reqwest::header::AUTHORIZATION;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

pub use crate::config::{DEFAULT_CONTEXT_ID_TEMPLATE, check_context_id_template};
use crate::outbound::{self, Policy, Transport};
use crate::protocol::ForgeToken;

/// Where Atlassian serves the GraphQL API.
pub const DEFAULT_GRAPHQL_URL: &str = "https://api.atlassian.com/graphql";

/// The longest account id asked for.
pub const MAX_ACCOUNT_ID_CHARS: usize = 128;

/// User tokens kept at most.
const MAX_CACHED_TOKENS: u64 = 10_000;

const MUTATION: &str = "mutation forge_remote_offlineUserAuthToken($input: OfflineUserAuthTokenInput!) { offlineUserAuthToken(input: $input) { success errors { message } authToken { token ttl } } }";

/// Why no user token was had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImpersonationError {
    /// Atlassian refused to impersonate the user (`success: false`, or GraphQL errors), with its
    /// messages; a refusal is not remembered, so the next call asks again.
    #[error("Atlassian refused to impersonate the user: {}", messages.join("; "))]
    Refused {
        /// The `errors[].message` texts Atlassian gave; empty when it gave none.
        messages: Vec<String>,
    },
    /// The GraphQL API answered with an error status (401 for a system token it refuses).
    #[error("the GraphQL API answered {0}")]
    Status(u16),
    /// The GraphQL API asked to slow down.
    #[error("the GraphQL API is rate limiting; retry after {retry_after:?}")]
    RateLimited {
        /// The API's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// No answer within the client's timeout.
    #[error("the GraphQL API did not answer in time")]
    Timeout,
    /// The GraphQL API could not be reached.
    #[error("the GraphQL API could not be reached: {0}")]
    Transport(String),
    /// The answer was not the JSON expected.
    #[error("the GraphQL API's answer could not be decoded: {0}")]
    Decode(String),
    /// In a Forge Container, the call's host is not among the app's egress hosts (refused
    /// before anything was sent).
    #[error("{host} is not among the app's egress hosts")]
    EgressRefused {
        /// The host refused.
        host: String,
    },
    /// The account id is empty, longer than 128 characters or has control characters (checked
    /// before any call).
    #[error("invalid account id")]
    InvalidAccountId,
}

outbound::from_failure!(ImpersonationError, |status, _| {
    ImpersonationError::Status(status.as_u16())
});

impl From<ImpersonationError> for crate::error::Error {
    fn from(e: ImpersonationError) -> Self {
        use axum::http::StatusCode as Http;
        let (status, reason) = match e {
            ImpersonationError::InvalidAccountId => {
                return crate::error::Error::bad_request("invalid_account_id", e.to_string());
            }
            ImpersonationError::Refused { .. } => (Http::BAD_GATEWAY, "impersonation_refused"),
            ImpersonationError::Timeout => (Http::GATEWAY_TIMEOUT, "impersonation_timeout"),
            ImpersonationError::EgressRefused { .. } => (Http::BAD_GATEWAY, "egress_refused"),
            _ => (Http::BAD_GATEWAY, "impersonation_error"),
        };
        crate::error::Error::Upstream {
            status,
            reason,
            message: e.to_string(),
        }
    }
}

/// The installation a user is impersonated in.
#[derive(Debug, Clone, Copy)]
pub struct ImpersonationTarget<'a> {
    /// `app.installationId` of the invocation token.
    pub installation_id: &'a str,
    /// The site's cloud id.
    pub cloud_id: &'a str,
    /// The product, as ARIs name it: `jira`, `confluence`.
    pub product: &'a str,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    installation_id: String,
    account_id: String,
}

#[derive(Clone)]
struct UserToken {
    token: ForgeToken,
    reuse_for: Duration,
}

impl UserToken {
    /// Reused until a minute before expiry, or half its life when that is shorter.
    fn new(token: String, ttl: Duration) -> Self {
        let margin = (ttl / 2).min(Duration::from_secs(60));
        Self {
            token: ForgeToken::new(token),
            reuse_for: ttl - margin,
        }
    }
}

struct UntilExpiry;

impl Expiry<TokenKey, UserToken> for UntilExpiry {
    fn expire_after_create(&self, _: &TokenKey, value: &UserToken, _: Instant) -> Option<Duration> {
        Some(value.reuse_for)
    }
}

/// The client of offline user tokens: one fetch at a time per (installation, user), each token
/// reused while it lives.
#[derive(Clone)]
pub struct OfflineUserTokens {
    transport: Transport,
    graphql_url: Arc<str>,
    context_id_template: Arc<str>,
    tokens: Cache<TokenKey, UserToken>,
}

impl OfflineUserTokens {
    /// A client of the GraphQL API at `graphql_url` (normally [`DEFAULT_GRAPHQL_URL`]), sending
    /// `context_id_template` rendered as the `contextIds` (see [`DEFAULT_CONTEXT_ID_TEMPLATE`]),
    /// with a `timeout` on every call. The template is taken as it is: check a configured one
    /// with [`check_context_id_template`] first.
    pub fn new(graphql_url: &Url, context_id_template: &str, timeout: Duration) -> Self {
        Self::with_transport(Transport::new(timeout), graphql_url, context_id_template)
    }

    /// [`new`](Self::new) with calls that leave through `transport`.
    pub(crate) fn with_transport(
        transport: Transport,
        graphql_url: &Url,
        context_id_template: &str,
    ) -> Self {
        Self {
            transport,
            graphql_url: graphql_url.as_str().into(),
            context_id_template: context_id_template.into(),
            tokens: Cache::builder()
                .max_capacity(MAX_CACHED_TOKENS)
                .expire_after(UntilExpiry)
                .build(),
        }
    }

    /// A token to call the product as `account_id` in `installation`, asked with the app's
    /// `system_token` unless one is kept.
    ///
    /// # Errors
    /// [`ImpersonationError::InvalidAccountId`] before any call; [`ImpersonationError::Refused`]
    /// when Atlassian will not impersonate the user.
    pub async fn token(
        &self,
        system_token: &ForgeToken,
        installation: &ImpersonationTarget<'_>,
        account_id: &str,
    ) -> Result<ForgeToken, ImpersonationError> {
        check_account_id(account_id)?;
        let key = TokenKey {
            installation_id: installation.installation_id.to_owned(),
            account_id: account_id.to_owned(),
        };
        let fetch = self.fetch(system_token, installation, account_id);
        let token = self
            .tokens
            .try_get_with(key, fetch)
            .await
            .map_err(|e| (*e).clone())?;
        Ok(token.token)
    }

    /// Drops the token kept for `account_id` in `installation_id` (say, after the product
    /// refused it), so that the next call asks again.
    pub async fn forget(&self, installation_id: &str, account_id: &str) {
        let key = TokenKey {
            installation_id: installation_id.to_owned(),
            account_id: account_id.to_owned(),
        };
        self.tokens.invalidate(&key).await;
    }

    /// How many tokens are kept now.
    pub async fn cached(&self) -> u64 {
        self.tokens.run_pending_tasks().await;
        self.tokens.entry_count()
    }

    /// The `contextIds` entry of `installation`.
    pub fn context_id(&self, installation: &ImpersonationTarget<'_>) -> String {
        self.context_id_template
            .replace("{product}", installation.product)
            .replace("{cloudId}", installation.cloud_id)
            .replace("{installationId}", installation.installation_id)
    }

    async fn fetch(
        &self,
        system_token: &ForgeToken,
        installation: &ImpersonationTarget<'_>,
        account_id: &str,
    ) -> Result<UserToken, ImpersonationError> {
        #[derive(Deserialize)]
        struct Message {
            message: Option<String>,
        }
        #[derive(Deserialize)]
        struct AuthToken {
            token: String,
            ttl: serde_json::Number,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Payload {
            success: bool,
            errors: Option<Vec<Message>>,
            auth_token: Option<AuthToken>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            offline_user_auth_token: Option<Payload>,
        }
        #[derive(Deserialize)]
        struct Answer {
            data: Option<Data>,
            errors: Option<Vec<Value>>,
        }
        let body = json!({
            "query": MUTATION,
            "variables": { "input": {
                "contextIds": [self.context_id(installation)],
                "userId": account_id,
            }},
        });
        let authorization = format!("Bearer {}", system_token.expose());
        let response = self
            .transport
            .send(&Policy::ONCE, |http| {
                http.post(&*self.graphql_url)
                    .header(AUTHORIZATION, &authorization)
                    .json(&body)
            })
            .await?;
        let answer: Answer = outbound::json(response).await?;
        let payload = answer.data.and_then(|d| d.offline_user_auth_token);
        let Some(payload) = payload else {
            let errors = answer.errors.unwrap_or_default();
            // The gateway reports its own rate limit as a GraphQL error with the HTTP status.
            if errors
                .iter()
                .any(|e| e["extensions"]["statusCode"].as_u64() == Some(429))
            {
                return Err(ImpersonationError::RateLimited { retry_after: None });
            }
            if errors.is_empty() {
                return Err(ImpersonationError::Decode(
                    "no offlineUserAuthToken in the answer".to_owned(),
                ));
            }
            let messages = errors
                .iter()
                .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                .collect();
            return Err(ImpersonationError::Refused { messages });
        };
        let messages = || {
            payload
                .errors
                .iter()
                .flatten()
                .filter_map(|m| m.message.clone())
                .collect()
        };
        match (&payload.auth_token, payload.success) {
            (Some(auth), true) => {
                let ttl = auth
                    .ttl
                    .as_u64()
                    .or_else(|| auth.ttl.as_f64().map(|t| t.max(0.0) as u64))
                    .unwrap_or(0);
                Ok(UserToken::new(auth.token.clone(), Duration::from_secs(ttl)))
            }
            (None, true) => Err(ImpersonationError::Decode(
                "success without an authToken".to_owned(),
            )),
            (_, false) => Err(ImpersonationError::Refused {
                messages: messages(),
            }),
        }
    }
}

fn check_account_id(account_id: &str) -> Result<(), ImpersonationError> {
    if account_id.is_empty()
        || account_id.chars().count() > MAX_ACCOUNT_ID_CHARS
        || account_id.chars().any(char::is_control)
    {
        return Err(ImpersonationError::InvalidAccountId);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_reused_until_shortly_before_they_expire() {
        let reuse = |ttl| UserToken::new("t".into(), Duration::from_secs(ttl)).reuse_for;
        assert_eq!(reuse(3600), Duration::from_secs(3540));
        assert_eq!(reuse(60), Duration::from_secs(30));
        assert_eq!(reuse(0), Duration::ZERO);
    }

    #[test]
    fn account_ids_are_checked_before_any_call() {
        assert!(check_account_id("5b10a2844c20165700ede21g").is_ok());
        assert!(check_account_id(&"a".repeat(128)).is_ok());
        for bad in ["", "a\nb", "a\u{0}", &"a".repeat(129)] {
            assert!(check_account_id(bad).is_err(), "{bad:?}");
        }
    }
}
