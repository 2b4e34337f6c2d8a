//! A fake Forge: the JWKS Forge publishes its signing keys at (served on loopback, with key
//! rotation and outages), Forge Invocation Tokens (FITs) signed with those keys, and requests as
//! Forge sends them to an app's remote.
//!
//! The [crate] documentation shows it in use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, StatusCode, header};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connect_axum::auth::forge::FIT_ISSUER;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::app::{TestApp, TestResponse};
use crate::site::{TestTenant, now, with_overrides};

/// How many signing keys the fake Forge has; keys are named by index, `0..KEYS`.
pub const KEYS: usize = 2;

/// How long a FIT lives by default, in seconds (Forge's are short-lived).
pub const FIT_LIFETIME_SECS: i64 = 25;

struct SigningKey {
    public: rsa::RsaPublicKey,
    encoding: EncodingKey,
}

/// The signing keys, made once per test process: RSA key generation takes a while.
fn signing_keys() -> &'static [SigningKey; KEYS] {
    static MADE: OnceLock<[SigningKey; KEYS]> = OnceLock::new();
    MADE.get_or_init(|| {
        std::array::from_fn(|_| {
            let private = RsaPrivateKey::new(&mut rand08::rngs::OsRng, 2048).expect("an RSA key");
            let pem = private.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM");
            SigningKey {
                public: private.to_public_key(),
                encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("a PEM key"),
            }
        })
    })
}

/// The key id the JWKS publishes signing key `index` under.
pub fn kid(index: usize) -> String {
    format!("forge-key-{index}")
}

/// `claims` signed RS256 with signing key `index`, under key id `kid` (none when `None`): for
/// tokens a [`Fit`] would not make.
///
/// # Panics
/// When `index` is not below [`KEYS`].
pub fn sign(claims: &Value, index: usize, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &signing_keys()[index].encoding).expect("claims encode")
}

#[derive(Clone)]
struct Shared {
    published: Arc<Mutex<Vec<usize>>>,
    hits: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
}

/// Forge for one app: its JWKS on a free loopback port, publishing the signing keys named by
/// index, and the invocation tokens of that app.
pub struct FakeForge {
    /// The JWKS URL (`FORGE_JWKS_URL`).
    pub url: String,
    /// The app's ARI (`FORGE_APP_ID`), the `aud` and `app.id` of its tokens.
    pub app_id: String,
    shared: Shared,
}

impl FakeForge {
    /// Starts the JWKS of the app `app_id`, publishing the keys in `published`.
    pub async fn start(app_id: &str, published: &[usize]) -> Self {
        let shared = Shared {
            published: Arc::new(Mutex::new(published.to_vec())),
            hits: Arc::default(),
            failures: Arc::default(),
        };
        let router = Router::new()
            .route("/.well-known/jwks.json", get(serve_jwks))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("bound")
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            app_id: app_id.to_owned(),
            shared,
        }
    }

    /// Publishes the keys in `published` from now on, withdrawing the others (a rotation).
    pub fn publish(&self, published: &[usize]) {
        *self.shared.published.lock().expect("not poisoned") = published.to_vec();
    }

    /// Answers the next `n` fetches 503 Service Unavailable.
    pub fn fail_next(&self, n: usize) {
        self.shared.failures.store(n, Ordering::SeqCst);
    }

    /// How many times the JWKS was fetched, failed fetches included.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// The app's Forge settings: `FORGE_APP_ID`, `FORGE_JWKS_URL`, and a refresh interval
    /// (`FORGE_JWKS_REFRESH_SECS`) of 1 s so that a rotation is seen within a test.
    pub fn vars(&self) -> impl Fn(&str) -> Option<String> + use<> {
        let (app_id, url) = (self.app_id.clone(), self.url.clone());
        move |name| match name {
            "FORGE_APP_ID" => Some(app_id.clone()),
            "FORGE_JWKS_URL" => Some(url.clone()),
            "FORGE_JWKS_REFRESH_SECS" => Some("1".to_owned()),
            _ => None,
        }
    }

    /// A FIT of this app for `tenant`'s installation; see [`Fit::new`].
    pub fn fit(&self, tenant: &TestTenant) -> Fit {
        Fit::new(&self.app_id, tenant)
    }

    /// A site that installs the app through Forge alone, with ids of its own.
    pub fn site(&self, name: &str) -> ForgeSite {
        ForgeSite::random(name)
    }

    /// A user's FIT from `site`'s issue panel on PROJ-1; see [`Fit::new`].
    pub fn fit_on(&self, site: &ForgeSite) -> Fit {
        Fit::for_installation(&self.app_id, &site.installation_id, &site.cloud_id)
            .site_url(&site.url())
    }

    /// A FIT of the app itself for `site`, as a trigger, scheduled trigger or preUninstall
    /// delivery carries: the `core:endpoint` module `lifecycle`, no `context`, no `principal`.
    pub fn trigger(&self, site: &ForgeSite) -> Fit {
        Fit::for_installation(&self.app_id, &site.installation_id, &site.cloud_id)
            .module("core:endpoint", "lifecycle")
            .no_context()
            .principal(None)
    }
}

impl ForgeSite {
    /// A Jira site named `name` with a random installation id and cloud id.
    pub(crate) fn random(name: &str) -> Self {
        ForgeSite {
            name: name.to_owned(),
            installation_id: format!(
                "ari:cloud:ecosystem::installation/{}",
                uuid_like(rand08::random())
            ),
            cloud_id: uuid_like(rand08::random()),
            product: "jira".to_owned(),
        }
    }
}

/// A site with the app installed through Forge: its installation and site ids.
#[derive(Clone, Debug)]
pub struct ForgeSite {
    /// The name the test gave the site.
    pub name: String,
    /// `app.installationId`: `ari:cloud:ecosystem::installation/<uuid>`.
    pub installation_id: String,
    /// The site's cloud id, a random UUID, which its FITs carry.
    pub cloud_id: String,
    /// The product of its `apiBaseUrl`.
    pub product: String,
}

impl ForgeSite {
    /// `https://<name>.atlassian.net`.
    pub fn url(&self) -> String {
        format!("https://{}.atlassian.net", self.name)
    }

    /// The same site after `forge uninstall` and `forge install`: a new installationId.
    pub fn reinstalled(&self) -> ForgeSite {
        ForgeSite {
            installation_id: format!(
                "ari:cloud:ecosystem::installation/{}",
                uuid_like(rand08::random())
            ),
            ..self.clone()
        }
    }
}

pub(crate) fn uuid_like(n: u128) -> String {
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A system token as Forge hands one (`x-forge-oauth-system`): a JWT whose `exp` is
/// `expires_at` (seconds since the epoch), with an id of its own; its signature is nothing a
/// remote checks.
pub fn system_token(expires_at: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = json!({ "exp": expires_at, "jti": format!("{:032x}", rand08::random::<u128>()) });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(rand08::random::<[u8; 32]>());
    format!("{header}.{payload}.{signature}")
}

/// `body` as Forge redelivers it after a failed delivery: with `payload.retryContext` (at the top
/// level when the body has no `payload`) giving the retry's number and `reason`
/// (`INVALID_REMOTE_INVOCATION_ERROR`, `TIMEOUT_ERROR`, `INVALID_FORGE_INVOCATION_TOKEN`).
pub fn redelivered(body: &Value, retry_count: u32, reason: &str) -> Value {
    let mut body = body.clone();
    let context = json!({ "retryData": null, "retryCount": retry_count, "retryReason": reason });
    match body.get_mut("payload").and_then(Value::as_object_mut) {
        Some(payload) => {
            payload.insert("retryContext".to_owned(), context);
        }
        None => body["retryContext"] = context,
    }
    body
}

/// An opaque system token (not a JWT): the remote cannot read its expiry.
pub fn opaque_system_token() -> String {
    format!("opaque-{:032x}", rand08::random::<u128>())
}

async fn serve_jwks(State(shared): State<Shared>) -> Result<Json<Value>, StatusCode> {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    if shared
        .failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let published = shared.published.lock().expect("not poisoned").clone();
    let keys: Vec<Value> = published
        .iter()
        .map(|&i| {
            let public = &signing_keys()[i].public;
            json!({
                "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid(i),
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            })
        })
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

/// A Forge Invocation Token being built: its claims, and the signing key that signs it.
#[derive(Clone, Debug)]
pub struct Fit {
    claims: Value,
    key: usize,
}

impl Fit {
    /// A FIT of the app `app_id` for `tenant`'s installation, signed with key 0 under
    /// [`kid`]`(0)`: a user's invocation from the
    /// Jira issue panel `notes-panel` on PROJ-1, in a development environment, living
    /// [`FIT_LIFETIME_SECS`] from now, with a `jti` of its own.
    /// Its `app.installation.contexts` is empty: the site is named only by `apiBaseUrl`.
    pub fn new(app_id: &str, tenant: &TestTenant) -> Self {
        Self::for_installation(app_id, &tenant.installation_id(), &tenant.cloud_id())
            .installation_contexts(json!([]))
    }

    /// As [`Fit::new`], for the installation `installation_id` on the site `cloud_id`, which
    /// `app.installation.contexts` names.
    pub fn for_installation(app_id: &str, installation_id: &str, cloud_id: &str) -> Self {
        let api_base_url = format!("https://api.atlassian.com/ex/jira/{cloud_id}");
        let claims = json!({
            "iss": FIT_ISSUER,
            "aud": app_id,
            "iat": now(),
            "nbf": now(),
            "exp": now() + FIT_LIFETIME_SECS,
            "jti": format!("{:032x}", rand08::random::<u128>()),
            "app": {
                "id": app_id,
                "appVersion": "1.0.0",
                "installationId": installation_id,
                "apiBaseUrl": api_base_url,
                "environment": { "type": "DEVELOPMENT", "id": "env-1" },
                "module": { "type": "jira:issuePanel", "key": "notes-panel" },
                "installation": {
                    "id": installation_id,
                    "contexts": [
                        { "name": "jira", "apiBaseUrl": api_base_url, "cloudId": cloud_id },
                    ],
                },
            },
            "principal": "557058:forge-user",
            "context": {
                "localId": "panel-1",
                "moduleKey": "notes-panel",
                "extension": {
                    "type": "jira:issuePanel",
                    "issue": { "key": "PROJ-1", "id": "10000", "type": "Task" },
                    "project": { "key": "PROJ", "id": "10000", "type": "software" },
                },
            },
        });
        Self { claims, key: 0 }
    }

    /// Signed with key `index` under [`kid`]`(index)`.
    pub fn key(mut self, index: usize) -> Self {
        self.key = index;
        self
    }

    /// `app.installationId`.
    pub fn installation_id(self, id: &str) -> Self {
        self.set(&["app", "installationId"], id.into())
    }

    /// `app.apiBaseUrl`, where product calls go (`https://api.atlassian.com/ex/<product>/<cloudId>`).
    pub fn api_base_url(self, url: &str) -> Self {
        self.set(&["app", "apiBaseUrl"], url.into())
    }

    /// `app.environment`: its `type` (`DEVELOPMENT`, `STAGING`, `PRODUCTION`) and `id`.
    pub fn environment(self, kind: &str, id: &str) -> Self {
        self.set(&["app", "environment"], json!({ "type": kind, "id": id }))
    }

    /// `app.module`: the invoked module's `type` and `key`.
    pub fn module(self, kind: &str, key: &str) -> Self {
        self.set(&["app", "module"], json!({ "type": kind, "key": key }))
    }

    /// `context.cloudId`, the site.
    pub fn cloud_id(self, cloud_id: &str) -> Self {
        self.set(&["context", "cloudId"], cloud_id.into())
    }

    /// `context.siteUrl`, the site's URL.
    pub fn site_url(self, url: &str) -> Self {
        self.set(&["context", "siteUrl"], url.into())
    }

    /// `app.appVersion`.
    pub fn app_version(self, version: &str) -> Self {
        self.set(&["app", "appVersion"], version.into())
    }

    /// `app.license`, as Forge sends it for paid apps in production.
    pub fn license(self, license: Value) -> Self {
        self.set(&["app", "license"], license)
    }

    /// `app.installation.contexts`, replaced.
    pub fn installation_contexts(self, contexts: Value) -> Self {
        self.set(&["app", "installation", "contexts"], contexts)
    }

    /// `context.localId`, the module instance.
    pub fn local_id(self, local_id: &str) -> Self {
        self.set(&["context", "localId"], local_id.into())
    }

    /// `context.moduleKey`, the UI module invoking.
    pub fn module_key(self, key: &str) -> Self {
        self.set(&["context", "moduleKey"], key.into())
    }

    /// `context.extension`, what the module is shown on (its `type`, and e.g. `issue`).
    pub fn extension(self, extension: Value) -> Self {
        self.set(&["context", "extension"], extension)
    }

    /// Without `context`: an invocation not from a UI (a trigger, a scheduled one).
    pub fn no_context(self) -> Self {
        self.claims(json!({ "context": null }))
    }

    /// `principal`, the invoking user's account id; `None` for an anonymous viewer or the app.
    pub fn principal(self, account_id: Option<&str>) -> Self {
        self.claims(json!({ "principal": account_id }))
    }

    /// `iat` and `nbf` at `issued_at`, `exp` at `expires_at` (seconds since the epoch).
    pub fn valid(self, issued_at: i64, expires_at: i64) -> Self {
        self.claims(json!({ "iat": issued_at, "nbf": issued_at, "exp": expires_at }))
    }

    /// `jti`, the token's id.
    pub fn jti(self, jti: &str) -> Self {
        self.claims(json!({ "jti": jti }))
    }

    /// Each top-level claim of `extra` set, or removed where `extra` has it as null.
    pub fn claims(mut self, extra: Value) -> Self {
        self.claims = with_overrides(self.claims, extra);
        self
    }

    /// The claims as they stand.
    pub fn to_claims(&self) -> &Value {
        &self.claims
    }

    /// The token.
    pub fn sign(&self) -> String {
        sign(&self.claims, self.key, Some(&kid(self.key)))
    }

    fn set(mut self, path: &[&str], value: Value) -> Self {
        let (last, parents) = path.split_last().expect("a claim's path");
        let mut at = &mut self.claims;
        for name in parents {
            if !at[name].is_object() {
                at[name] = json!({});
            }
            at = &mut at[name];
        }
        at[last] = value;
        self
    }
}

/// A request as Forge sends one to the remote: the FIT as `Authorization: Bearer`, each of
/// `headers` (e.g. [`SYSTEM_TOKEN_HEADER`](connect_axum::auth::forge::SYSTEM_TOKEN_HEADER)),
/// and a JSON body if any.
pub fn invocation(
    method: &str,
    target: &str,
    fit: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("a method"))
        .uri(target)
        .header(header::AUTHORIZATION, format!("Bearer {fit}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    request.body(body).expect("a request")
}

impl TestApp {
    /// POSTs a trigger delivery to `path` as Forge does: `fit` as the bearer token, the system
    /// token (if any) in `x-forge-oauth-system`, and `body` as JSON.
    pub async fn deliver(
        &self,
        path: &str,
        fit: &str,
        system_token: Option<&str>,
        body: &Value,
    ) -> TestResponse {
        let headers: Vec<(&str, &str)> = system_token
            .map(|t| (connect_axum::auth::forge::SYSTEM_TOKEN_HEADER, t))
            .into_iter()
            .collect();
        self.send(invocation("POST", path, fit, &headers, Some(body)))
            .await
    }

    /// Runs the app's Forge event handlers on every queued event due now, as the server's
    /// worker would; returns how many runs were made.
    pub async fn run_forge_events(&self) -> usize {
        connect_axum::ops::forge_queue::run_due(&self.state)
            .await
            .expect("the queue is readable")
    }

    /// Sends `method target` as Forge invokes the remote, with the token `fit`.
    pub async fn invoke(
        &self,
        method: &str,
        target: &str,
        fit: &str,
        body: Option<&Value>,
    ) -> TestResponse {
        self.send(invocation(method, target, fit, &[], body)).await
    }
}
