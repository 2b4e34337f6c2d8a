//! A fake product API (a Jira or Confluence site) and Atlassian's OAuth authorization server, on
//! loopback: they check the app's outbound calls as a site does — the app's JWT (HS256 with the
//! tenant's sharedSecret, `iss` the app key, the QSH of the request as received), the user
//! tokens the authorization server granted, and the JWT-bearer grant itself — and record them.
//!
//! The [crate] documentation shows it in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use connect_axum::protocol::qsh;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::site::{Site, TestTenant};

/// The lifetime (`exp - iat`, in seconds) of the JWT connect-axum signs its calls with; the
/// fake refuses any other, so that a change of it is noticed.
pub const APP_TOKEN_LIFETIME_SECS: i64 = 180;

/// The `grant_type` of the OAuth 2.0 JWT-bearer grant the app asks user tokens with.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How the product answers a call.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status answered.
    pub status: StatusCode,
    /// The headers answered, as name and value.
    pub headers: Vec<(String, String)>,
    /// The body answered.
    pub body: Vec<u8>,
}

impl Reply {
    /// `value` as JSON, with `status`.
    pub fn json(status: StatusCode, value: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: value.to_string().into_bytes(),
        }
    }

    /// `text` as plain text, with `status`.
    pub fn text(status: StatusCode, text: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_owned(), "text/plain".to_owned())],
            body: text.as_bytes().to_vec(),
        }
    }

    /// With the header `name: value` as well.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name),
                HeaderValue::try_from(value.as_str()),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// Who made a call, as the product authenticated it.
#[derive(Clone, Debug, PartialEq)]
pub enum Caller {
    /// The app, by its JWT; with the token's claims.
    App {
        /// The verified claims of the app's JWT (`iss`, `qsh`, `exp`, …).
        claims: Value,
    },
    /// A user, by a bearer token the authorization server granted (or one given to
    /// [`FakeProduct::bearer`]).
    User {
        /// The account id the bearer token was granted for.
        account_id: String,
    },
    /// No one: the call was answered 401 for `reason`.
    Refused {
        /// Why the product refused the caller, also the 401's body.
        reason: String,
    },
}

/// A call the product received.
#[derive(Clone, Debug)]
pub struct Call {
    /// The HTTP method, `GET`, `POST`, ….
    pub method: String,
    /// The path relative to the site's base path.
    pub path: String,
    /// The query string without its `?`; `None` when there was none.
    pub query: Option<String>,
    /// Who the product took the caller for.
    pub caller: Caller,
    /// The request body as sent.
    pub body: Vec<u8>,
}

impl Call {
    /// The body as JSON (null when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

type Handler = Arc<dyn Fn(&Call) -> Reply + Send + Sync>;

struct Route {
    method: String,
    path: String,
    handler: Handler,
}

/// The site's tenant, as the fake knows it once trusted.
struct Trusted {
    secret: String,
    oauth_client_id: Option<String>,
}

#[derive(Default)]
struct Knobs {
    trusted: Option<Trusted>,
    /// The latest token granted to each account; an older one is stale.
    user_tokens: HashMap<String, String>,
    /// Fixed bearer tokens and their accounts.
    bearers: HashMap<String, String>,
    grants: usize,
    routes: Vec<Route>,
    rate_limited: (usize, Option<Duration>),
    failing: (usize, StatusCode),
    received: Vec<Call>,
}

struct Shared {
    app_key: String,
    base_path: String,
    base_url: String,
    auth_server: String,
    token_lifetime: Duration,
    users: Vec<String>,
    scope: Option<String>,
    knobs: Mutex<Knobs>,
}

impl Shared {
    fn knobs(&self) -> MutexGuard<'_, Knobs> {
        self.knobs.lock().expect("not poisoned")
    }
}

/// The options of a [`FakeProduct`], from [`FakeProduct::builder`].
pub struct ProductBuilder {
    app_key: String,
    base_path: String,
    token_lifetime: Duration,
    users: Vec<String>,
    scope: Option<String>,
}

impl ProductBuilder {
    /// The site under a base path, as Confluence's `/wiki`: QSHs are of the path relative to it.
    pub fn base_path(mut self, base_path: &str) -> Self {
        self.base_path = base_path.trim_end_matches('/').to_owned();
        self
    }

    /// The `expires_in` of granted user tokens (by default 15 minutes).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// An account the authorization server grants user tokens for; any other's grant is refused.
    pub fn user(mut self, account_id: &str) -> Self {
        self.users.push(account_id.to_owned());
        self
    }

    /// The only `scope` a grant may ask (e.g. `READ WRITE`); by default any but none.
    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = Some(scope.to_owned());
        self
    }

    /// Listens on a free loopback port.
    pub async fn start(self) -> FakeProduct {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let origin = format!("http://{}", listener.local_addr().expect("bound"));
        let shared = Arc::new(Shared {
            app_key: self.app_key,
            base_url: format!("{origin}{}", self.base_path),
            base_path: self.base_path,
            auth_server: origin,
            token_lifetime: self.token_lifetime,
            users: self.users,
            scope: self.scope,
            knobs: Mutex::default(),
        });
        let router = Router::new()
            .route("/oauth2/token", axum::routing::post(grant))
            .fallback(product_api)
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        FakeProduct { shared }
    }
}

/// A site's product API and Atlassian's authorization server, for the app whose key it was
/// built with. It trusts one tenant at a time ([`trust`](Self::trust)). `GET
/// /rest/api/3/myself` answers the caller's `accountId` (and the `token` it came with); other
/// resources answer as [`on`](Self::on) says, or 404 `no such resource`.
#[derive(Clone)]
pub struct FakeProduct {
    shared: Arc<Shared>,
}

impl FakeProduct {
    /// The options of a fake for the app `app_key`: no base path, 15-minute user tokens, no
    /// users.
    pub fn builder(app_key: &str) -> ProductBuilder {
        ProductBuilder {
            app_key: app_key.to_owned(),
            base_path: String::new(),
            token_lifetime: Duration::from_secs(900),
            users: Vec::new(),
            scope: None,
        }
    }

    /// A fake for the app `app_key` with the default options.
    pub async fn start(app_key: &str) -> Self {
        Self::builder(app_key).start().await
    }

    /// The site's base URL (its origin and base path): the tenant's `baseUrl`.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// The authorization server's URL (`OAUTH_AUTH_SERVER_URL`).
    pub fn auth_server(&self) -> &str {
        &self.shared.auth_server
    }

    /// The app's settings to reach the fake: `ALLOWED_BASE_URLS` (loopback) and
    /// `OAUTH_AUTH_SERVER_URL`.
    pub fn vars(&self) -> impl Fn(&str) -> Option<String> + use<> {
        let auth_server = self.shared.auth_server.clone();
        move |name| match name {
            "ALLOWED_BASE_URLS" => Some("127.0.0.1".to_owned()),
            "OAUTH_AUTH_SERVER_URL" => Some(auth_server.clone()),
            _ => None,
        }
    }

    /// A tenant `name` of `site` living on this fake (its `baseUrl` the fake's), trusted.
    pub fn tenant(&self, site: &Site, name: &str) -> TestTenant {
        let mut tenant = site.tenant(name);
        tenant.base_url = self.base_url().to_owned();
        self.trust(&tenant);
        tenant
    }

    /// Makes `tenant` the site's: its sharedSecret signs the app's calls and grants, and the
    /// `oauthClientId` of its install payload asks grants.
    pub fn trust(&self, tenant: &TestTenant) {
        let oauth_client_id = tenant.payload("installed")["oauthClientId"]
            .as_str()
            .map(str::to_owned);
        self.shared.knobs().trusted = Some(Trusted {
            secret: tenant.secret.clone(),
            oauth_client_id,
        });
    }

    /// Accepts `Authorization: Bearer {token}` as `account_id` (e.g. a Forge system token).
    pub fn bearer(&self, token: &str, account_id: &str) {
        self.shared
            .knobs()
            .bearers
            .insert(token.to_owned(), account_id.to_owned());
    }

    /// Answers authenticated calls of `method path` (relative to the base path, without the
    /// query) with what `handler` makes of them.
    pub fn on(
        &self,
        method: &str,
        path: &str,
        handler: impl Fn(&Call) -> Reply + Send + Sync + 'static,
    ) {
        self.shared.knobs().routes.push(Route {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            handler: Arc::new(handler),
        });
    }

    /// Answers the next `n` authenticated calls 429 Too Many Requests, with `Retry-After` in
    /// whole seconds if given.
    pub fn rate_limit_next(&self, n: usize, retry_after: Option<Duration>) {
        self.shared.knobs().rate_limited = (n, retry_after);
    }

    /// Answers the next `n` authenticated calls with `status` (e.g. a 503 of an outage).
    pub fn fail_next(&self, n: usize, status: StatusCode) {
        self.shared.knobs().failing = (n, status);
    }

    /// Every call the product API received, in order, refused ones included.
    pub fn received(&self) -> Vec<Call> {
        self.shared.knobs().received.clone()
    }

    /// How many user tokens the authorization server granted.
    pub fn grants(&self) -> usize {
        self.shared.knobs().grants
    }
}

/// The JWT-bearer grant: an assertion signed with the trusted tenant's sharedSecret, for the
/// authorization server, by the tenant's OAuth client, for a known user of this site.
async fn grant(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let mut knobs = shared.knobs();
    let Some(trusted) = &knobs.trusted else {
        return (StatusCode::BAD_REQUEST, "no tenant on this site").into_response();
    };
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[shared.auth_server.as_str()]);
    let Ok(assertion) = jsonwebtoken::decode::<Value>(
        field("assertion"),
        &DecodingKey::from_secret(trusted.secret.as_bytes()),
        &validation,
    ) else {
        return (StatusCode::BAD_REQUEST, "bad assertion").into_response();
    };
    let c = assertion.claims;
    let account_id = c["sub"]
        .as_str()
        .and_then(|s| s.strip_prefix("urn:atlassian:connect:useraccountid:"))
        .filter(|a| shared.users.iter().any(|u| u == a))
        .map(str::to_owned);
    let scope_ok = match &shared.scope {
        Some(scope) => field("scope") == scope,
        None => !field("scope").is_empty(),
    };
    let ok = field("grant_type") == JWT_BEARER_GRANT
        && trusted.oauth_client_id.as_deref().is_some_and(|id| {
            c["iss"].as_str() == Some(&format!("urn:atlassian:connect:clientid:{id}"))
        })
        && c["tnt"] == shared.base_url.as_str()
        && scope_ok;
    let Some(account_id) = account_id.filter(|_| ok) else {
        return (StatusCode::BAD_REQUEST, "bad grant").into_response();
    };
    knobs.grants += 1;
    let token = format!("user-token-{}", knobs.grants);
    knobs.user_tokens.insert(account_id, token.clone());
    axum::Json(json!({
        "access_token": token,
        "expires_in": shared.token_lifetime.as_secs(),
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn product_api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut knobs = shared.knobs();
    let caller = authenticate(&shared, &knobs, &method, &uri, authorization);
    let call = Call {
        method: method.as_str().to_owned(),
        path: uri
            .path()
            .strip_prefix(&shared.base_path)
            .unwrap_or("")
            .to_owned(),
        query: uri.query().map(str::to_owned),
        caller,
        body: body.to_vec(),
    };
    knobs.received.push(call.clone());
    if let Caller::Refused { reason } = &call.caller {
        return (StatusCode::UNAUTHORIZED, reason.clone()).into_response();
    }
    if knobs.failing.0 > 0 {
        knobs.failing.0 -= 1;
        return Reply::text(knobs.failing.1, "failing").into_response();
    }
    if knobs.rate_limited.0 > 0 {
        knobs.rate_limited.0 -= 1;
        let reply = Reply::text(StatusCode::TOO_MANY_REQUESTS, "slow down");
        return match knobs.rate_limited.1 {
            Some(after) => reply.header("retry-after", &after.as_secs().to_string()),
            None => reply,
        }
        .into_response();
    }
    let handler = knobs
        .routes
        .iter()
        .rev()
        .find(|r| r.method == call.method && r.path == call.path)
        .map(|r| r.handler.clone());
    drop(knobs);
    if let Some(handler) = handler {
        return handler(&call).into_response();
    }
    if (call.method.as_str(), call.path.as_str()) == ("GET", "/rest/api/3/myself") {
        let mut me = match &call.caller {
            Caller::User { account_id } => json!({ "accountId": account_id }),
            _ => json!({ "accountType": "app" }),
        };
        me["token"] = authorization.into();
        return axum::Json(me).into_response();
    }
    (StatusCode::NOT_FOUND, "no such resource").into_response()
}

fn authenticate(
    shared: &Shared,
    knobs: &Knobs,
    method: &Method,
    uri: &Uri,
    authorization: &str,
) -> Caller {
    let refused = |reason: String| Caller::Refused { reason };
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        let account = knobs
            .bearers
            .get(token)
            .or_else(|| {
                knobs
                    .user_tokens
                    .iter()
                    .find(|(_, t)| *t == token)
                    .map(|(a, _)| a)
            })
            .cloned();
        return match account {
            Some(account_id) => Caller::User { account_id },
            None => refused("stale or missing user token".to_owned()),
        };
    }
    let Some(token) = authorization.strip_prefix("JWT ") else {
        return refused("no JWT".to_owned());
    };
    let Some(trusted) = &knobs.trusted else {
        return refused("no tenant on this site".to_owned());
    };
    match check_app_jwt(shared, &trusted.secret, method, uri, token) {
        Ok(claims) => Caller::App { claims },
        Err(reason) => refused(reason),
    }
}

/// An app JWT checked as a site does: HS256 with the secret, `iss` the app key, the app's token
/// lifetime, and the QSH of the request as received.
fn check_app_jwt(
    shared: &Shared,
    secret: &str,
    method: &Method,
    uri: &Uri,
    token: &str,
) -> Result<Value, String> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| e.to_string())?
    .claims;
    if claims["iss"] != shared.app_key.as_str() {
        return Err("iss".into());
    }
    match (claims["exp"].as_i64(), claims["iat"].as_i64()) {
        (Some(exp), Some(iat)) if exp - iat == APP_TOKEN_LIFETIME_SECS => {}
        _ => return Err("exp".into()),
    }
    let expected = qsh::qsh(method.as_str(), uri.path(), uri.query(), &shared.base_path);
    if claims["qsh"] != expected {
        return Err(format!("qsh: expected {expected}, got {}", claims["qsh"]));
    }
    Ok(claims)
}
