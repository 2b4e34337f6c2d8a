//! Key fetching and token limits: install keys fetched once per kid and remembered when refused,
//! a bounded number of key fetches at once, a failed Forge JWKS fetch retried after a short
//! backoff, the longest lifetime a token may claim, and the site URLs an install may name; on the
//! probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use connect_axum::auth::forge::JWKS_RETRY_BACKOFF;
use connect_axum::auth::install::{KEY_SERVER_DOWN_TTL, MAX_KEY_FETCHES};
use connect_axum_testing::FakeForge;
use futures_util::future::join_all;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::probe::*;

/// The probe's Forge app, as the fake Forge signs for it.
const APP_ARI: &str = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-0000000000e1";
/// The probe's route behind a Forge Invocation Token.
const FORGE_PROBE: &str = "/forge/probe";

/// A Forge Invocation Token of the probe for `tenant`'s installation, signed with key 0, with the
/// kit's default claims overridden by `extra` (null removes one).
fn fit(jwks: &FakeForge, tenant: &TestTenant, extra: Value) -> String {
    jwks.fit(tenant).key(0).claims(extra).sign()
}

/// A token expiring in 2126.
const EXP_2126: i64 = 4_923_000_000;

/// The claims of a signed install for `tenant`, whatever key signs them.
fn install_claims(tenant: &TestTenant) -> Value {
    json!({
        "iss": tenant.client_key, "aud": BASE_URL, "iat": now(), "exp": now() + 60,
        "qsh": qsh_of("POST", "/installed"),
    })
}

async fn post_install(app: &TestApp, tenant: &TestTenant, token: &str) -> TestResponse {
    app.call(
        "POST",
        "/installed",
        Some(token),
        Some(&tenant.payload("installed")),
    )
    .await
}

/// Polls `ready` every 50 ms until it holds, failing after `within`.
async fn eventually(within: Duration, what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !ready().await {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An install-key server on loopback that counts fetches, holds each until released, then
/// answers with the test key for [`KID`] (404 for others), or 500 while it is failing.
struct HeldKeyServer {
    url: String,
    hits: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    release: watch::Sender<bool>,
}

type HeldState = (Arc<AtomicUsize>, Arc<AtomicBool>, watch::Receiver<bool>);

async fn serve_held_key(
    State((hits, failing, mut released)): State<HeldState>,
    Path(kid): Path<String>,
) -> Result<String, StatusCode> {
    hits.fetch_add(1, Ordering::SeqCst);
    let _ = released.wait_for(|released| *released).await;
    if failing.load(Ordering::SeqCst) {
        Err(StatusCode::INTERNAL_SERVER_ERROR)
    } else if kid == KID {
        Ok(install_key().public_pem.clone())
    } else {
        Err(StatusCode::NOT_FOUND)
    }
}

impl HeldKeyServer {
    async fn start(released: bool) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let (release, receiver) = watch::channel(released);
        let router = Router::new()
            .route("/{kid}", get(serve_held_key))
            .with_state((hits.clone(), failing.clone(), receiver));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            hits,
            failing,
            release,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The app's configuration: keys from this server, fetches allowed 10 s.
    fn vars(&self) -> impl Fn(&str) -> Option<String> + use<> {
        let url = self.url.clone();
        move |name| match name {
            "INSTALL_KEYS_URL" => Some(url.clone()),
            "INSTALL_KEYS_TIMEOUT_MS" => Some("10000".to_owned()),
            _ => None,
        }
    }
}

fn no_vars(_: &str) -> Option<String> {
    None
}

async fn installs_naming_one_unknown_kid_cost_one_key_fetch(app: TestApp) {
    let tenant = app.tenant("acme");
    let claims = install_claims(&tenant);
    let sequential = rs256(&claims, "unknown-kid-1");
    for _ in 0..40 {
        post_install(&app, &tenant, &sequential)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unknown_kid");
    }
    assert_eq!(app.keys.hits(), 1, "one fetch for 40 sequential installs");

    let concurrent = rs256(&claims, "unknown-kid-2");
    let responses = join_all((0..40).map(|_| post_install(&app, &tenant, &concurrent))).await;
    for response in responses {
        response.assert_error(StatusCode::UNAUTHORIZED, "unknown_kid");
    }
    assert_eq!(app.keys.hits(), 2, "one fetch for 40 concurrent installs");
    assert!(!app.stored(&tenant).await);

    let tenant = app.install_tenant(tenant).await;
    assert!(app.stored(&tenant).await);
    assert_eq!(app.keys.hits(), 3, "the known kid is fetched once");
    app.install("other").await;
    assert_eq!(app.keys.hits(), 3, "and kept");
}

on_both_stores!(
    app = probe(),
    #[multi_thread(vars = no_vars)]
    installs_naming_one_unknown_kid_cost_one_key_fetch
);

async fn a_product_token_that_expires_in_2126_is_refused(app: TestApp) {
    let a = app.install("a").await;
    let path = "/api/probe";
    let qsh = qsh_of("GET", path);
    for claims in [
        json!({ "qsh": qsh, "exp": EXP_2126 }),
        json!({ "qsh": qsh, "iat": now() - 7200, "exp": now() + 60 }),
        json!({ "qsh": qsh, "iat": null, "exp": now() + 7200 }),
        json!({ "qsh": "context-qsh", "exp": EXP_2126 }),
    ] {
        app.call("GET", path, Some(&a.token_with(claims.clone())), None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "lifetime_too_long");
    }
    for claims in [
        json!({ "qsh": qsh }),
        json!({ "qsh": qsh, "exp": now() + 3600 }),
        json!({ "qsh": qsh, "iat": null, "exp": now() + 600 }),
    ] {
        let response = app
            .call("GET", path, Some(&a.token_with(claims.clone())), None)
            .await;
        assert_eq!(response.status, StatusCode::OK, "{claims}");
    }
    // The app's own session token (15 minutes) passes the cap too.
    let response = app
        .call("GET", path, Some(&a.context_token("PROJ-1")), None)
        .await;
    let session = response.headers["x-acpt"].to_str().unwrap();
    assert_eq!(
        app.call("GET", path, Some(session), None).await.status,
        StatusCode::OK
    );
}

async fn a_signed_install_that_lives_too_long_is_refused(app: TestApp) {
    let tenant = app.tenant("acme");
    let token = tenant.install_token("/installed", json!({ "exp": EXP_2126 }));
    post_install(&app, &tenant, &token)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "lifetime_too_long");
    assert!(!app.stored(&tenant).await);
}

async fn an_install_whose_display_url_is_off_the_allowed_hosts_is_refused_and_stores_nothing(
    app: TestApp,
) {
    let tenant = app.tenant("acme");
    for display_url in [
        "https://evil.example",
        "https://acme.atlassian.net.evil.example",
    ] {
        let mut payload = tenant.payload("installed");
        payload["displayUrl"] = display_url.into();
        let token = tenant.install_token("/installed", json!({}));
        app.call("POST", "/installed", Some(&token), Some(&payload))
            .await
            .assert_error(StatusCode::FORBIDDEN, "display_url_not_allowed");
    }
    assert!(!app.stored(&tenant).await);
}

async fn an_install_whose_display_url_carries_csp_syntax_is_refused(app: TestApp) {
    let tenant = app.tenant("acme");
    for display_url in [
        "https://acme.atlassian.net;script-src *",
        "https://acme.atlassian.net;script-src",
        "https://evil;acme.atlassian.net",
        "https://acme.atlassian.net script-src",
        "https://acme'.atlassian.net",
        "http://acme.atlassian.net",
        "https://user:pw@acme.atlassian.net",
        "https://acme.atlassian.net/?a=b",
        "javascript:alert(1)",
    ] {
        let mut payload = tenant.payload("installed");
        payload["displayUrl"] = display_url.into();
        let token = tenant.install_token("/installed", json!({}));
        app.call("POST", "/installed", Some(&token), Some(&payload))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_display_url");
    }
    assert!(!app.stored(&tenant).await);
}

on_both_stores!(
    app = probe(),
    a_product_token_that_expires_in_2126_is_refused,
    a_signed_install_that_lives_too_long_is_refused,
    an_install_whose_display_url_is_off_the_allowed_hosts_is_refused_and_stores_nothing,
    an_install_whose_display_url_carries_csp_syntax_is_refused,
);

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_made_up_kids_opens_a_bounded_number_of_key_fetches() {
    let keys = HeldKeyServer::start(false).await;
    let app = probe().sqlite_with(keys.vars()).await;
    let tenant = app.tenant("acme");
    let claims = install_claims(&tenant);
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let router = app.router.clone();
            let request = Request::post("/installed")
                .header(
                    header::AUTHORIZATION,
                    format!("JWT {}", rs256(&claims, &format!("made-up-{i}"))),
                )
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(tenant.payload("installed").to_string()))
                .unwrap();
            tokio::spawn(async move {
                let response = router.oneshot(request).await.unwrap();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                serde_json::from_slice::<Value>(&body).unwrap()["error"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    eventually(
        Duration::from_secs(10),
        "the fetch limit is reached",
        async || keys.hits() >= MAX_KEY_FETCHES,
    )
    .await;
    let answered = || flood.iter().filter(|f| f.is_finished()).count();
    // Beyond the limit an install is refused at once, without a fetch.
    eventually(
        Duration::from_secs(10),
        "the installs beyond the limit are answered",
        async || answered() == 40 - MAX_KEY_FETCHES,
    )
    .await;
    assert_eq!(keys.hits(), MAX_KEY_FETCHES);
    keys.release.send(true).unwrap();
    let mut reasons: Vec<String> = Vec::new();
    for f in flood {
        reasons.push(f.await.unwrap());
    }
    let unavailable = reasons
        .iter()
        .filter(|r| *r == "key_server_unavailable")
        .count();
    let unknown = reasons.iter().filter(|r| *r == "unknown_kid").count();
    assert_eq!(
        (unavailable, unknown),
        (40 - MAX_KEY_FETCHES, MAX_KEY_FETCHES),
        "{reasons:?}"
    );
    assert_eq!(keys.hits(), MAX_KEY_FETCHES);
    // The limit frees as fetches end: a genuine install goes through.
    app.install_tenant(tenant).await;
    assert_eq!(keys.hits(), MAX_KEY_FETCHES + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_key_server_is_asked_again_only_after_a_few_seconds() {
    let keys = HeldKeyServer::start(true).await;
    keys.failing.store(true, Ordering::SeqCst);
    let app = probe().sqlite_with(keys.vars()).await;
    let tenant = app.tenant("acme");
    let sequential = (0..20).map(|_| tenant.install_token("/installed", json!({})));
    for token in sequential {
        post_install(&app, &tenant, &token)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "key_server_unavailable");
    }
    let tokens: Vec<String> = (0..20)
        .map(|_| tenant.install_token("/installed", json!({})))
        .collect();
    for response in join_all(tokens.iter().map(|t| post_install(&app, &tenant, t))).await {
        response.assert_error(StatusCode::UNAUTHORIZED, "key_server_unavailable");
    }
    assert_eq!(
        keys.hits(),
        1,
        "40 installs while the key server fails cost one fetch"
    );

    keys.failing.store(false, Ordering::SeqCst);
    let started = Instant::now();
    eventually(
        KEY_SERVER_DOWN_TTL + Duration::from_secs(5),
        "the key server is asked again",
        async || {
            let token = tenant.install_token("/installed", json!({}));
            let response = post_install(&app, &tenant, &token).await;
            if response.status == StatusCode::NO_CONTENT {
                return true;
            }
            response.assert_error(StatusCode::UNAUTHORIZED, "key_server_unavailable");
            false
        },
    )
    .await;
    assert!(started.elapsed() < KEY_SERVER_DOWN_TTL + Duration::from_secs(1));
    assert_eq!(keys.hits(), 2);
    assert!(app.stored(&tenant).await);
}

/// Forge settings with the default refresh interval (30 s), far longer than the retry backoff.
fn forge_vars(jwks: &FakeForge) -> impl Fn(&str) -> Option<String> + use<> {
    let vars = jwks.vars();
    move |name| match name {
        "FORGE_JWKS_REFRESH_SECS" => None,
        _ => vars(name),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_jwks_fetch_is_retried_after_a_short_backoff() {
    let jwks = FakeForge::start(APP_ARI, &[0]).await;
    jwks.fail_next(1);
    let app = probe().sqlite_with(forge_vars(&jwks)).await;
    let a = app.install("a").await;
    // A cold start: a burst of invocations shares the one failing fetch.
    let tokens: Vec<String> = (0..40).map(|_| fit(&jwks, &a, json!({}))).collect();
    let burst = join_all(
        tokens
            .iter()
            .map(|t| app.invoke("GET", FORGE_PROBE, t, None)),
    )
    .await;
    for response in burst {
        response.assert_error(StatusCode::UNAUTHORIZED, "key_server_unavailable");
    }
    assert_eq!(jwks.hits(), 1);

    let started = Instant::now();
    eventually(
        JWKS_RETRY_BACKOFF + Duration::from_secs(5),
        "the JWKS is fetched again",
        async || {
            let response = app
                .invoke("GET", FORGE_PROBE, &fit(&jwks, &a, json!({})), None)
                .await;
            if response.status == StatusCode::OK {
                return true;
            }
            response.assert_error(StatusCode::UNAUTHORIZED, "key_server_unavailable");
            false
        },
    )
    .await;
    assert!(started.elapsed() < JWKS_RETRY_BACKOFF + Duration::from_secs(1));
    assert_eq!(jwks.hits(), 2, "one retry once the backoff had passed");

    let tokens: Vec<String> = (0..40).map(|_| fit(&jwks, &a, json!({}))).collect();
    for response in join_all(
        tokens
            .iter()
            .map(|t| app.invoke("GET", FORGE_PROBE, t, None)),
    )
    .await
    {
        assert_eq!(response.status, StatusCode::OK);
    }
    assert_eq!(jwks.hits(), 2, "the keys are kept");
}

#[tokio::test]
async fn a_forge_invocation_token_that_lives_too_long_is_refused() {
    let jwks = FakeForge::start(APP_ARI, &[0]).await;
    let app = probe().sqlite_with(jwks.vars()).await;
    let a = app.install("a").await;
    for claims in [
        json!({ "exp": EXP_2126 }),
        json!({ "iat": null, "exp": now() + 7200 }),
    ] {
        app.invoke("GET", FORGE_PROBE, &fit(&jwks, &a, claims), None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "lifetime_too_long");
    }
    let fine = fit(&jwks, &a, json!({ "exp": now() + 300 }));
    assert_eq!(
        app.invoke("GET", FORGE_PROBE, &fine, None).await.status,
        StatusCode::OK
    );
}
