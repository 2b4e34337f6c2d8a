//! Calls from the app into a tenant's product (Jira, Confluence): JWT-signed as the app, with
//! an OAuth 2.0 bearer token acting as a user, with a Forge token, or in a Forge Container
//! through Forge's egress proxy.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::outbound::{self, Failure, Policy, Transport};
use crate::protocol::egress::{PROXY_AUTHORIZATION_HEADER, ProxyAuthorization};
use crate::protocol::{ForgeToken, jwt, qsh};
use crate::store::{Installation, StoredSystemToken};

/// How long an app token is valid (Atlassian's recommendation).
const APP_TOKEN_TTL_SECS: u64 = 180;
/// How long a user-grant assertion is valid.
const ASSERTION_TTL_SECS: u64 = 60;
/// The most of an error body kept in [`ProductError::Status`].
const MAX_ERROR_BODY: usize = 4 * 1024;
/// A 429 whose `Retry-After` is at most 5 s is waited out and retried once.
const CALLS: Policy = Policy {
    retries: 1,
    longest_wait: Duration::from_secs(5),
    backoff: None,
    // Three more bytes finish a character begun within the kept part, as a whole read would.
    error_body: MAX_ERROR_BODY + 3,
};

/// Why a call to the product failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProductError {
    /// The product answered with an error status.
    #[error("the product answered {status}")]
    Status {
        /// The status the product answered, not a 2xx.
        status: StatusCode,
        /// The start of the product's error body, at most 4 KiB of whole characters.
        body: String,
    },
    /// The product asked to slow down for longer than the client waits.
    #[error("the product is rate limiting; retry after {retry_after:?}")]
    RateLimited {
        /// The product's last `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// No answer within the client's timeout.
    #[error("the product did not answer in time")]
    Timeout,
    /// The product could not be reached.
    #[error("the product could not be reached: {0}")]
    Transport(String),
    /// The answer was not the JSON expected.
    #[error("the product's answer could not be decoded: {0}")]
    Decode(String),
    /// In a Forge Container, the call's host is not among the app's egress hosts (refused
    /// before anything was sent).
    #[error("{host} is not among the app's egress hosts")]
    EgressRefused {
        /// The host refused.
        host: String,
    },
    /// The path is not a path on the tenant's site.
    #[error("the path must start with / and stay on the tenant's site")]
    InvalidPath,
    /// The tenant sent no `oauthClientId`, so the app cannot act as its users.
    #[error("the tenant has no oauthClientId")]
    NoOAuthClient,
    /// The authorization server refused the user grant.
    #[error("the authorization server refused the user token grant ({status})")]
    Grant {
        /// The authorization server's status.
        status: StatusCode,
    },
    /// The Forge invocation carried no system token (`appSystemToken` unset in the manifest)
    /// or no `apiBaseUrl`.
    #[error("the Forge invocation carried no system token or apiBaseUrl")]
    NoForgeSystemToken,
    /// The invocation carried no user token: the manifest's endpoint lacks
    /// `auth.appUserToken`, or no user is in session.
    #[error("the Forge invocation carried no user token or apiBaseUrl")]
    NoForgeUserToken,
    /// No system token was ever stored for the tenant (no delivery carried one).
    #[error("no Forge system token is stored for the tenant")]
    NoStoredSystemToken,
    /// A call through Forge's egress proxy from an app that does not run as a Forge Container.
    #[error("the app does not run as a Forge Container: there is no egress proxy")]
    NotInContainer,
    /// The stored system token has expired, or is about to.
    #[error("the stored Forge system token expired at {expired_at}")]
    SystemTokenExpired {
        /// When the stored token expires (or expired).
        expired_at: chrono::DateTime<chrono::Utc>,
    },
}

/// A stored system token this close to its expiry is not used.
pub const SYSTEM_TOKEN_MARGIN: Duration = Duration::from_secs(30);

/// The stored system token, if one is stored and lives longer than [`SYSTEM_TOKEN_MARGIN`].
///
/// # Errors
/// [`ProductError::NoStoredSystemToken`], [`ProductError::SystemTokenExpired`].
pub fn usable_system_token<T: std::borrow::Borrow<StoredSystemToken>>(
    token: Option<T>,
) -> Result<T, ProductError> {
    let token = token.ok_or(ProductError::NoStoredSystemToken)?;
    let expires_at = token.borrow().expires_at;
    if expires_at <= crate::store::now() + SYSTEM_TOKEN_MARGIN {
        return Err(ProductError::SystemTokenExpired {
            expired_at: expires_at,
        });
    }
    Ok(token)
}

impl From<ProductError> for crate::error::Error {
    fn from(e: ProductError) -> Self {
        let (status, reason) = match e {
            ProductError::Timeout => (axum::http::StatusCode::GATEWAY_TIMEOUT, "product_timeout"),
            ProductError::NotInContainer => (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "not_in_container",
            ),
            ProductError::EgressRefused { .. } => {
                (axum::http::StatusCode::BAD_GATEWAY, "egress_refused")
            }
            ProductError::NoStoredSystemToken | ProductError::SystemTokenExpired { .. } => (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "system_token_unavailable",
            ),
            _ => (axum::http::StatusCode::BAD_GATEWAY, "product_error"),
        };
        crate::error::Error::Upstream {
            status,
            reason,
            message: e.to_string(),
        }
    }
}

outbound::from_failure!(ProductError, |status, body| ProductError::Status {
    status,
    body: error_text(&body),
});

/// The start of an error body as text, at most [`MAX_ERROR_BODY`] bytes of whole characters.
fn error_text(body: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if text.len() > MAX_ERROR_BODY {
        let mut end = MAX_ERROR_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The client for product REST calls; shares connections across calls and tenants.
#[derive(Clone)]
pub struct ProductClient {
    transport: Transport,
    app_key: Arc<str>,
    auth_server: Arc<str>,
    user_tokens: Cache<UserTokenKey, UserToken>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct UserTokenKey {
    client_key: String,
    account_id: String,
    scopes: String,
}

/// A user's access token and how long it may be reused.
#[derive(Clone)]
struct UserToken {
    access_token: Arc<str>,
    reuse_for: Duration,
}

impl UserToken {
    /// Reused until a minute before expiry, or half its life when that is shorter.
    fn new(access_token: String, expires_in: u64) -> Self {
        let life = Duration::from_secs(expires_in);
        let margin = (life / 2).min(Duration::from_secs(60));
        Self {
            access_token: access_token.into(),
            reuse_for: life - margin,
        }
    }
}

struct UntilExpiry;

impl Expiry<UserTokenKey, UserToken> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &UserTokenKey,
        value: &UserToken,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.reuse_for)
    }
}

impl ProductClient {
    /// A client for the app `app_key`, getting user tokens from `auth_server`, with a `timeout`
    /// on every call.
    pub fn new(app_key: &str, auth_server: &Url, timeout: Duration) -> Self {
        Self::with_transport(Transport::new(timeout), app_key, auth_server)
    }

    /// [`new`](Self::new) with calls that leave through `transport`.
    pub(crate) fn with_transport(transport: Transport, app_key: &str, auth_server: &Url) -> Self {
        Self {
            transport,
            app_key: app_key.into(),
            auth_server: auth_server.as_str().trim_end_matches('/').into(),
            user_tokens: Cache::builder()
                .max_capacity(10_000)
                .expire_after(UntilExpiry)
                .build(),
        }
    }

    /// Calls the tenant's product as the app itself (JWT signed with the sharedSecret).
    pub fn as_app<'a>(&'a self, tenant: &'a Installation) -> Caller<'a> {
        Caller {
            client: self,
            base_url: Cow::Borrowed(&tenant.base_url),
            auth: CallerAuth::App(tenant),
        }
    }

    /// Calls a service outside the tenant's site (for example Atlassian's personal data
    /// reporting API at `https://api.atlassian.com`) as the app, with the tenant's JWT; QSHs are
    /// relative to `base_url`'s path.
    pub fn as_app_at<'a>(&'a self, tenant: &'a Installation, base_url: &'a str) -> Caller<'a> {
        Caller {
            client: self,
            base_url: Cow::Borrowed(base_url),
            auth: CallerAuth::App(tenant),
        }
    }

    /// Calls the product at `api_base_url` with a Forge token: an offline user token
    /// ([`AppState::offline_user_token`](crate::state::AppState::offline_user_token)), or any
    /// other the app holds.
    pub fn with_forge_token<'a>(
        &'a self,
        token: &'a ForgeToken,
        api_base_url: &'a str,
    ) -> Caller<'a> {
        Caller {
            client: self,
            base_url: Cow::Borrowed(api_base_url),
            auth: CallerAuth::Bearer(token.expose()),
        }
    }

    /// Calls the product as the Forge app outside any request (a background job, an event
    /// handler), with the tenant's stored system token
    /// ([`ForgeRecords::system_token`](crate::store::ForgeRecords::system_token)) at the
    /// `apiBaseUrl` it was stored with.
    ///
    /// # Errors
    /// [`ProductError::NoStoredSystemToken`] for `None`; [`ProductError::SystemTokenExpired`] when
    /// the token expires within [`SYSTEM_TOKEN_MARGIN`]: no call made with it could work, and
    /// only the next delivery from Forge (a trigger, the hourly scheduled trigger) brings a new one.
    pub fn as_stored_forge_app<'a>(
        &'a self,
        token: Option<&'a StoredSystemToken>,
    ) -> Result<Caller<'a>, ProductError> {
        let token = usable_system_token(token)?;
        Ok(Caller {
            client: self,
            base_url: Cow::Borrowed(&token.api_base_url),
            auth: CallerAuth::Bearer(token.token.expose()),
        })
    }

    /// Calls `product` through Forge's egress proxy, in a Forge Container, for whom
    /// `authorization` says: within an invocation as its principal, the app or its user; outside
    /// one as the app or a user of an installation. `product` is `jira`, `confluence`, `compass`,
    /// `bitbucket`, or `atlassian` for Atlassian's GraphQL API (`post("/graphql", …)`); paths are
    /// the product's own (`/rest/api/3/myself`).
    ///
    /// # Errors
    /// [`ProductError::NotInContainer`] outside a Forge Container; [`ProductError::InvalidPath`]
    /// for another product.
    pub fn through_proxy(
        &self,
        authorization: &ProxyAuthorization,
        product: &str,
    ) -> Result<Caller<'_>, ProductError> {
        let proxy = self.transport.proxy().ok_or(ProductError::NotInContainer)?;
        if !matches!(
            product,
            "jira" | "confluence" | "compass" | "bitbucket" | "atlassian"
        ) {
            return Err(ProductError::InvalidPath);
        }
        Ok(Caller {
            client: self,
            base_url: Cow::Owned(format!(
                "{}/{product}",
                proxy.as_str().trim_end_matches('/')
            )),
            auth: CallerAuth::Proxy(authorization.to_string()),
        })
    }

    /// Calls the tenant's product as the user `account_id`, with `scopes` such as `["READ", "WRITE"]`.
    pub fn as_user<'a>(
        &'a self,
        tenant: &'a Installation,
        account_id: &'a str,
        scopes: &'a [&'a str],
    ) -> Caller<'a> {
        Caller {
            client: self,
            base_url: Cow::Borrowed(&tenant.base_url),
            auth: CallerAuth::User(tenant, account_id, scopes),
        }
    }

    /// The user's access token: cached per (tenant, user, scopes), at most one fetch at a time.
    async fn user_token(
        &self,
        tenant: &Installation,
        account_id: &str,
        scopes: &[&str],
    ) -> Result<Arc<str>, ProductError> {
        let mut scopes: Vec<String> = scopes.iter().map(|s| s.to_ascii_uppercase()).collect();
        scopes.sort();
        scopes.dedup();
        let key = UserTokenKey {
            client_key: tenant.client_key.as_str().to_owned(),
            account_id: account_id.to_owned(),
            scopes: scopes.join(" "),
        };
        let fetch = self.fetch_user_token(tenant, account_id, key.scopes.clone());
        let token = self
            .user_tokens
            .try_get_with(key, fetch)
            .await
            .map_err(|e| (*e).clone())?;
        Ok(token.access_token)
    }

    async fn fetch_user_token(
        &self,
        tenant: &Installation,
        account_id: &str,
        scopes: String,
    ) -> Result<UserToken, ProductError> {
        #[derive(Serialize)]
        struct Assertion<'a> {
            iss: String,
            sub: String,
            tnt: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        #[derive(Deserialize)]
        struct Grant {
            access_token: String,
            expires_in: u64,
        }
        let client_id = tenant
            .oauth_client_id
            .as_deref()
            .ok_or(ProductError::NoOAuthClient)?;
        let now = jsonwebtoken::get_current_timestamp();
        let assertion = jwt::sign_hs256(
            &Assertion {
                iss: format!("urn:atlassian:connect:clientid:{client_id}"),
                sub: format!("urn:atlassian:connect:useraccountid:{account_id}"),
                tnt: &tenant.base_url,
                aud: &self.auth_server,
                iat: now,
                exp: now + ASSERTION_TTL_SECS,
            },
            tenant.shared_secret.expose().as_bytes(),
        );
        let response = self
            .transport
            .send(&Policy::ONCE, |http| {
                http.post(format!("{}/oauth2/token", self.auth_server))
                    .form(&[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                        ("assertion", assertion.as_str()),
                        ("scope", scopes.as_str()),
                    ])
            })
            .await
            .map_err(|e| match e {
                Failure::Status { status, .. } => ProductError::Grant { status },
                Failure::RateLimited { .. } => ProductError::Grant {
                    status: StatusCode::TOO_MANY_REQUESTS,
                },
                e => e.into(),
            })?;
        let grant: Grant = response.json().await?;
        Ok(UserToken::new(grant.access_token, grant.expires_in))
    }

    fn app_token(
        &self,
        tenant: &Installation,
        method: &Method,
        url: &Url,
        base_path: &str,
    ) -> String {
        #[derive(Serialize)]
        struct AppClaims<'a> {
            iss: &'a str,
            iat: u64,
            exp: u64,
            qsh: String,
        }
        let now = jsonwebtoken::get_current_timestamp();
        let claims = AppClaims {
            iss: &self.app_key,
            iat: now,
            exp: now + APP_TOKEN_TTL_SECS,
            qsh: qsh::qsh(method.as_str(), url.path(), url.query(), base_path),
        };
        jwt::sign_hs256(&claims, tenant.shared_secret.expose().as_bytes())
    }
}

/// Calls to one tenant's product, as the app, as one user, or as a Forge app.
pub struct Caller<'a> {
    client: &'a ProductClient,
    base_url: Cow<'a, str>,
    auth: CallerAuth<'a>,
}

enum CallerAuth<'a> {
    App(&'a Installation),
    User(&'a Installation, &'a str, &'a [&'a str]),
    Bearer(&'a str),
    /// The `forge-proxy-authorization` of a call through Forge's egress proxy.
    Proxy(String),
}

impl Caller<'_> {
    /// `GET path` (with its query), decoding a JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ProductError> {
        Ok(outbound::json(self.send(Method::GET, path, None).await?).await?)
    }

    /// `POST path` with a JSON body, decoding a JSON answer.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ProductError> {
        let body = serde_json::to_vec(body).map_err(|e| ProductError::Decode(e.to_string()))?;
        Ok(outbound::json(self.send(Method::POST, path, Some(body)).await?).await?)
    }

    /// Sends `method path` with an optional JSON body and returns the successful response.
    ///
    /// # Errors
    /// A non-2xx answer is [`ProductError::Status`]; a 429 is retried once when its
    /// `Retry-After` is short, else [`ProductError::RateLimited`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, ProductError> {
        let (url, base_path) = self.url(path)?;
        let (client, body) = (self.client, body.as_ref());
        client
            .transport
            .send_with(&CALLS, |http| {
                let request = http.request(method.clone(), url.clone());
                let (method, url, base_path) = (&method, &url, &base_path);
                async move {
                    let mut request = match &self.auth {
                        CallerAuth::App(tenant) => request.header(
                            AUTHORIZATION,
                            format!("JWT {}", client.app_token(tenant, method, url, base_path)),
                        ),
                        CallerAuth::User(tenant, account_id, scopes) => request.header(
                            AUTHORIZATION,
                            format!(
                                "Bearer {}",
                                client.user_token(tenant, account_id, scopes).await?
                            ),
                        ),
                        CallerAuth::Bearer(token) => {
                            request.header(AUTHORIZATION, format!("Bearer {token}"))
                        }
                        CallerAuth::Proxy(header) => {
                            request.header(PROXY_AUTHORIZATION_HEADER, header)
                        }
                    };
                    if let Some(body) = body {
                        request = request
                            .header(CONTENT_TYPE, "application/json")
                            .body(body.clone());
                    }
                    Ok(request)
                }
            })
            .await
    }

    /// The URL of `path` on the tenant's site, and the site's base path (for the QSH).
    fn url(&self, path: &str) -> Result<(Url, String), ProductError> {
        if !path.starts_with('/') || path.starts_with("//") {
            return Err(ProductError::InvalidPath);
        }
        let base = Url::parse(&self.base_url).map_err(|_| ProductError::InvalidPath)?;
        let url = Url::parse(&format!("{}{path}", self.base_url.trim_end_matches('/')))
            .map_err(|_| ProductError::InvalidPath)?;
        if url.origin() != base.origin() {
            return Err(ProductError::InvalidPath);
        }
        Ok((url, base.path().trim_end_matches('/').to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[test]
    fn user_tokens_are_reused_until_shortly_before_they_expire() {
        assert_eq!(
            UserToken::new("t".into(), 900).reuse_for,
            Duration::from_secs(840)
        );
        assert_eq!(
            UserToken::new("t".into(), 2).reuse_for,
            Duration::from_secs(1)
        );
        assert_eq!(UserToken::new("t".into(), 0).reuse_for, Duration::ZERO);
    }

    #[test]
    fn product_failures_answer_as_a_gateway() {
        let status = |e: ProductError| crate::error::Error::from(e).into_response().status();
        assert_eq!(status(ProductError::Timeout), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            status(ProductError::Status {
                status: StatusCode::NOT_FOUND,
                body: String::new()
            }),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status(ProductError::RateLimited { retry_after: None }),
            StatusCode::BAD_GATEWAY
        );
    }
}
