//! Outbound calls, against a fake product on loopback that checks what a real site checks: the
//! app's JWT and its QSH, and the bearer token of user calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use connect_axum::auth::qsh;
use connect_axum::product::ProductError;
use connect_axum::store::Installation;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::helpers::*;

/// A stand-in for a Jira site (optionally under a base path, as Confluence's `/wiki`) and for
/// Atlassian's authorization server.
#[derive(Clone)]
struct FakeProduct {
    secret: Arc<Mutex<String>>,
    base_path: String,
    auth_server: String,
    grants: Arc<AtomicUsize>,
    token_lifetime: u64,
    rate_limited: Arc<AtomicUsize>,
}

impl FakeProduct {
    /// Starts the fake; returns it with the site's base URL.
    async fn start(base_path: &str, token_lifetime: u64) -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeProduct {
            secret: Arc::default(),
            base_path: base_path.to_owned(),
            auth_server: origin.clone(),
            grants: Arc::default(),
            token_lifetime,
            rate_limited: Arc::default(),
        };
        let router = Router::new()
            .route("/oauth2/token", axum::routing::post(grant))
            .fallback(product_api)
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (fake, format!("{origin}{base_path}"))
    }

    /// Checks an app JWT as a site does: HS256 with the secret, iss = app key, and the QSH of
    /// the request as received.
    fn check_app_jwt(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Value, String> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("JWT "))
            .ok_or("no JWT")?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_aud = false;
        let secret = self.secret.lock().unwrap().clone();
        let claims = jsonwebtoken::decode::<Value>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .map_err(|e| e.to_string())?
        .claims;
        if claims["iss"] != APP_KEY {
            return Err("iss".into());
        }
        if claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() != 180 {
            return Err("exp".into());
        }
        let expected = qsh::qsh(method.as_str(), uri.path(), uri.query(), &self.base_path);
        if claims["qsh"] != expected {
            return Err(format!("qsh: expected {expected}, got {}", claims["qsh"]));
        }
        Ok(claims)
    }
}

async fn grant(
    State(fake): State<FakeProduct>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[fake.auth_server.as_str()]);
    let secret = fake.secret.lock().unwrap().clone();
    let Ok(assertion) = jsonwebtoken::decode::<Value>(
        &form["assertion"],
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    ) else {
        return (StatusCode::BAD_REQUEST, "bad assertion").into_response();
    };
    let c = assertion.claims;
    let ok = form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        && c["iss"] == "urn:atlassian:connect:clientid:oauth-client"
        && c["sub"] == "urn:atlassian:connect:useraccountid:user-1"
        && c["tnt"]
            .as_str()
            .is_some_and(|t| t.starts_with("http://127.0.0.1"))
        && form["scope"] == "READ WRITE";
    if !ok {
        return (StatusCode::BAD_REQUEST, "bad grant").into_response();
    }
    let n = fake.grants.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(json!({
        "access_token": format!("user-token-{n}"),
        "expires_in": fake.token_lifetime,
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn product_api(
    State(fake): State<FakeProduct>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path()
        .strip_prefix(&fake.base_path)
        .unwrap_or("")
        .to_owned();
    if path == "/rest/api/3/myself" {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let n = fake.grants.load(Ordering::SeqCst);
        return if bearer == format!("Bearer user-token-{n}") {
            axum::Json(json!({ "accountId": "user-1", "token": bearer })).into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "stale or missing user token").into_response()
        };
    }
    if let Err(why) = fake.check_app_jwt(&method, &uri, &headers) {
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "/rest/api/3/issue/PROJ-1") => axum::Json(json!({
            "key": "PROJ-1",
            "query": uri.query(),
        }))
        .into_response(),
        ("POST", "/rest/api/3/issue/PROJ-1/comment") => {
            let posted: Value = serde_json::from_slice(&body).unwrap();
            (
                StatusCode::CREATED,
                axum::Json(json!({ "id": "10000", "body": posted["body"] })),
            )
                .into_response()
        }
        ("GET", "/rest/api/3/busy") => {
            if fake.rate_limited.fetch_add(1, Ordering::SeqCst) == 0 {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1")],
                    "slow down",
                )
                    .into_response()
            } else {
                axum::Json(json!({ "ok": true })).into_response()
            }
        }
        ("GET", "/rest/api/3/overloaded") => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "3600")],
            "later",
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "no such resource").into_response(),
    }
}

/// An app whose tenant lives on `fake`.
async fn app_on(fake: &FakeProduct, base_url: &str) -> (TestApp, Installation) {
    let auth_server = fake.auth_server.clone();
    let app = TestApp::sqlite_with(move |name| match name {
        "ALLOWED_BASE_URLS" => Some("127.0.0.1".to_owned()),
        "OAUTH_AUTH_SERVER_URL" => Some(auth_server.clone()),
        "PRODUCT_TIMEOUT_SECS" => Some("5".to_owned()),
        _ => None,
    })
    .await;
    let mut tenant = TestTenant::new("site");
    tenant.base_url = base_url.to_owned();
    *fake.secret.lock().unwrap() = tenant.secret.clone();
    let tenant = app.install_tenant(tenant).await;
    let record = app
        .store
        .find_tenant(&tenant.client_key)
        .await
        .unwrap()
        .unwrap();
    (app, record.installation.clone())
}

// The client touches the store only through the installation it is given, so these run on
// one backend; the webhook and page tests run on both.

#[tokio::test]
async fn a_get_with_a_query_as_the_app_is_accepted_by_the_product() {
    let (fake, base_url) = FakeProduct::start("", 900).await;
    let (app, site) = app_on(&fake, &base_url).await;
    let issue: Value = app
        .state
        .product
        .as_app(&site)
        .get("/rest/api/3/issue/PROJ-1?fields=summary,status&expand=names&q=a%20b+c*")
        .await
        .unwrap();
    assert_eq!(issue["key"], "PROJ-1");
}

#[tokio::test]
async fn a_post_with_a_body_as_the_app_is_accepted_by_the_product() {
    let (fake, base_url) = FakeProduct::start("", 900).await;
    let (app, site) = app_on(&fake, &base_url).await;
    let comment: Value = app
        .state
        .product
        .as_app(&site)
        .post(
            "/rest/api/3/issue/PROJ-1/comment",
            &json!({ "body": "from the app 🦀" }),
        )
        .await
        .unwrap();
    assert_eq!(comment["body"], "from the app 🦀");
}

#[tokio::test]
async fn calls_under_a_base_path_sign_the_path_relative_to_it() {
    let (fake, base_url) = FakeProduct::start("/wiki", 900).await;
    let (app, site) = app_on(&fake, &base_url).await;
    let issue: Value = app
        .state
        .product
        .as_app(&site)
        .get("/rest/api/3/issue/PROJ-1?x=1")
        .await
        .unwrap();
    assert_eq!(issue["query"], "x=1");
}

#[tokio::test]
async fn a_tampered_qsh_is_refused_by_the_product() {
    let (fake, base_url) = FakeProduct::start("", 900).await;
    let (_app, site) = app_on(&fake, &base_url).await;
    let claims = json!({
        "iss": APP_KEY, "iat": now(), "exp": now() + 180,
        "qsh": qsh::qsh("GET", "/rest/api/3/issue/PROJ-2", None, ""),
    });
    let token = hs256(&claims, site.shared_secret.expose());
    let response = reqwest::Client::new()
        .get(format!("{base_url}/rest/api/3/issue/PROJ-1"))
        .header("authorization", format!("JWT {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.text().await.unwrap().starts_with("qsh"));
}

#[tokio::test]
async fn product_errors_come_back_typed() {
    let (fake, base_url) = FakeProduct::start("", 900).await;
    let (app, site) = app_on(&fake, &base_url).await;
    let caller = app.state.product.as_app(&site);
    match caller.get::<Value>("/rest/api/3/nothing-here").await {
        Err(ProductError::Status { status, body }) => {
            assert_eq!(status, 404);
            assert_eq!(body, "no such resource");
        }
        other => panic!("{other:?}"),
    }
    match caller.get::<Value>("/rest/api/3/overloaded").await {
        Err(ProductError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(3600)))
        }
        other => panic!("{other:?}"),
    }
    for path in ["rest/api", "//evil.example/x", "@evil.example/x"] {
        assert!(
            matches!(
                caller.get::<Value>(path).await,
                Err(ProductError::InvalidPath)
            ),
            "{path}"
        );
    }
    let mut unreachable = site.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    unreachable.base_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    assert!(matches!(
        app.state
            .product
            .as_app(&unreachable)
            .get::<Value>("/rest/api/3/issue/PROJ-1")
            .await,
        Err(ProductError::Transport(_))
    ));
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_and_retried() {
    let (fake, base_url) = FakeProduct::start("", 900).await;
    let (app, site) = app_on(&fake, &base_url).await;
    let started = std::time::Instant::now();
    let answer: Value = app
        .state
        .product
        .as_app(&site)
        .get("/rest/api/3/busy")
        .await
        .unwrap();
    assert_eq!(answer["ok"], true);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(fake.rate_limited.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_user_token_is_fetched_once_and_reused() {
    let (fake, base_url) = FakeProduct::start("", 900).await;
    let (app, site) = app_on(&fake, &base_url).await;
    let scopes = ["write", "READ"];
    let calls = (0..5).map(|_| {
        let client = app.state.product.clone();
        let site = site.clone();
        async move {
            client
                .as_user(&site, "user-1", &scopes)
                .get::<Value>("/rest/api/3/myself")
                .await
        }
    });
    for me in futures_util::future::join_all(calls).await {
        assert_eq!(me.unwrap()["accountId"], "user-1");
    }
    let me: Value = app
        .state
        .product
        .as_user(&site, "user-1", &["READ", "WRITE"])
        .get("/rest/api/3/myself")
        .await
        .unwrap();
    assert_eq!(me["token"], "Bearer user-token-1");
    assert_eq!(fake.grants.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_user_token_is_fetched_again_after_it_expires() {
    // A two-second token is reused for one second (half its life).
    let (fake, base_url) = FakeProduct::start("", 2).await;
    let (app, site) = app_on(&fake, &base_url).await;
    let caller = app
        .state
        .product
        .as_user(&site, "user-1", &["READ", "WRITE"]);
    caller.get::<Value>("/rest/api/3/myself").await.unwrap();
    caller.get::<Value>("/rest/api/3/myself").await.unwrap();
    assert_eq!(fake.grants.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let me: Value = caller.get("/rest/api/3/myself").await.unwrap();
    assert_eq!(me["token"], "Bearer user-token-2");
    assert_eq!(fake.grants.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn acting_as_a_user_needs_the_tenants_oauth_client() {
    let (fake, base_url) = FakeProduct::start("", 900).await;
    let (app, mut site) = app_on(&fake, &base_url).await;
    site.oauth_client_id = None;
    assert!(matches!(
        app.state
            .product
            .as_user(&site, "user-1", &["READ"])
            .get::<Value>("/rest/api/3/myself")
            .await,
        Err(ProductError::NoOAuthClient)
    ));
    let (_, site) = app_on(&fake, &base_url).await;
    assert!(matches!(
        app.state
            .product
            .as_user(&site, "user-2", &["READ"])
            .get::<Value>("/rest/api/3/myself")
            .await,
        Err(ProductError::Grant { .. })
    ));
}
