//! Forge Remote: invocation tokens verified with the JWKS of the kit's fake Forge, every way a
//! token can be wrong, key rotation, and one site reached through both doors.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router, middleware};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connect_axum::auth::forge::{FIT_ISSUER, SYSTEM_TOKEN_HEADER};
use connect_axum::auth::{self, ForgeInvocation};
use connect_axum_testing::forge::{self as kit, FakeForge, Fit};
use connect_axum_testing::on_both_stores;
use connect_axum_testing::product::FakeProduct;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::helpers::*;

/// The sample's Forge app.
pub(crate) const APP_ARI: &str = "ari:cloud:ecosystem::app/6f6c7a0e-2b8e-4a47-9d7c-1b2f3c4d5e6f";
pub(crate) const NOTES: &str = "/forge/api/issues/PROJ-1/notes";
const CONNECT_NOTES: &str = "/api/issues/PROJ-1/notes";

/// A Forge Invocation Token of the sample for `tenant`'s installation, signed with key `key`,
/// with the kit's default claims overridden by `extra` (null removes one).
pub(crate) fn fit(key: usize, tenant: &TestTenant, extra: Value) -> String {
    Fit::new(APP_ARI, tenant).key(key).claims(extra).sign()
}

/// A fresh fake Forge publishing key 0, and the settings that make the app trust it: the setup of
/// the tests that take `(app: TestApp, jwks: FakeForge)`.
pub(crate) async fn trusting_forge() -> (impl Fn(&str) -> Option<String>, FakeForge) {
    let jwks = FakeForge::start(APP_ARI, &[0]).await;
    (jwks.vars(), jwks)
}

async fn a_forge_invocation_and_a_connect_jwt_reach_the_same_tenant(app: TestApp, jwks: FakeForge) {
    let (a, b) = (app.install("a").await, app.install("b").await);
    let connect = app
        .signed(
            &a,
            "POST",
            CONNECT_NOTES,
            Some(&json!({ "body": "from Connect" })),
        )
        .await;
    assert_eq!(connect.status, StatusCode::CREATED);

    let listed = app.invoke("GET", NOTES, &fit(0, &a, json!({})), None).await;
    assert_eq!(
        listed.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&listed.body)
    );
    assert_eq!(listed.json()["notes"][0]["body"], "from Connect");

    let created = app
        .invoke(
            "POST",
            NOTES,
            &fit(0, &a, json!({})),
            Some(&json!({ "body": "from Forge" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["author"], "557058:forge-user");
    let both = app.signed(&a, "GET", CONNECT_NOTES, None).await.json()["notes"].clone();
    assert_eq!(both.as_array().unwrap().len(), 2);
    assert_eq!(both[1]["body"], "from Forge");

    // Another site's invocation sees none of it.
    assert_eq!(
        app.invoke("GET", NOTES, &fit(0, &b, json!({})), None)
            .await
            .json()["notes"],
        json!([])
    );
    assert_eq!(jwks.hits(), 1, "the keys are fetched once and kept");
}

async fn bad_invocation_tokens_are_refused_with_401(app: TestApp, jwks: FakeForge) {
    let a = app.install("a").await;
    let stranger = TestTenant::new("stranger");
    let hs256 = hs256(
        &json!({ "iss": FIT_ISSUER, "aud": APP_ARI, "exp": now() + 25,
        "app": { "installationId": a.installation_id() } }),
        "guess",
    );
    let valid = fit(0, &a, json!({}));
    let (head, payload, _) = {
        let mut parts = valid.split('.');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
            (),
        )
    };
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    let tampered = format!("{head}.{payload}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]));
    let no_kid = kit::sign(
        &json!({ "iss": FIT_ISSUER, "aud": APP_ARI,
        "exp": now() + 25, "app": { "installationId": a.installation_id() } }),
        0,
        None,
    );
    for (token, code) in [
        (
            fit(
                0,
                &a,
                json!({ "aud": "ari:cloud:ecosystem::app/someone-else" }),
            ),
            "invalid_audience",
        ),
        (
            fit(0, &a, json!({ "iss": "forge/something-else" })),
            "invalid_issuer",
        ),
        (
            fit(
                0,
                &a,
                json!({ "iat": now() - 600, "nbf": now() - 600, "exp": now() - 300 }),
            ),
            "expired",
        ),
        (
            fit(0, &a, json!({ "nbf": now() + 600, "exp": now() + 900 })),
            "not_yet_valid",
        ),
        (fit(0, &a, json!({ "exp": null })), "missing_claim"),
        (
            fit(0, &a, json!({ "app": { "id": APP_ARI } })),
            "malformed_token",
        ),
        (hs256, "unsupported_algorithm"),
        (none, "unsupported_algorithm"),
        (tampered, "bad_signature"),
        (no_kid, "invalid_kid"),
        ("garbage".to_owned(), "malformed_token"),
    ] {
        app.invoke("GET", NOTES, &token, None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, code);
    }
    // A verified token refused for another reason is 403: Forge reads 401 as "FIT rejected".
    app.invoke("GET", NOTES, &fit(0, &stranger, json!({})), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "unmapped_installation");
    app.call("GET", NOTES, None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing_token");
    // Each door takes only its own token.
    app.call("GET", NOTES, Some(&a.token("GET", NOTES)), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unsupported_scheme");
    app.invoke("GET", CONNECT_NOTES, &valid, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unsupported_scheme");
    assert_eq!(
        app.invoke("GET", NOTES, &valid, None).await.status,
        StatusCode::OK
    );
    let _ = jwks;
}

async fn an_install_naming_another_tenants_installation_id_is_refused_and_takes_nothing(
    app: TestApp,
    jwks: FakeForge,
) {
    let a = app.install("a").await;
    app.signed(&a, "POST", CONNECT_NOTES, Some(&json!({ "body": "a's" })))
        .await;
    let b = TestTenant::new("b");
    let with_id = |tenant: &TestTenant, event: &str, id: &str| {
        let mut payload = tenant.payload(event);
        payload["installationId"] = id.into();
        payload
    };
    let path = "/installed";
    let taking = with_id(&b, "installed", &a.installation_id());
    app.call(
        "POST",
        path,
        Some(&install_token(&b, path, json!({}))),
        Some(&taking),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "installation_id_taken");
    assert!(!app.stored(&b).await, "the refused install was stored");

    // b installs with an id of its own; neither its notes nor its uninstall touch a's.
    let b = app.install_tenant(b).await;
    app.invoke(
        "POST",
        NOTES,
        &fit(0, &b, json!({})),
        Some(&json!({ "body": "b's" })),
    )
    .await;
    let as_a = || fit(0, &a, json!({}));
    assert_eq!(
        app.invoke("GET", NOTES, &as_a(), None).await.json(),
        app.signed(&a, "GET", CONNECT_NOTES, None).await.json()
    );
    assert_eq!(
        app.invoke("GET", NOTES, &as_a(), None).await.json()["notes"][0]["body"],
        "a's"
    );
    assert_eq!(
        app.hook(&b, "uninstalled").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.invoke("GET", NOTES, &as_a(), None).await.json()["notes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A reinstall of b naming a's id, after b's uninstall, is refused as well.
    app.call(
        "POST",
        path,
        Some(&install_token(&b, path, json!({}))),
        Some(&with_id(&b, "installed", &a.installation_id())),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "installation_id_taken");
    assert_eq!(
        app.invoke("GET", NOTES, &as_a(), None).await.status,
        StatusCode::OK
    );
    let _ = jwks;
}

async fn a_reinstall_with_a_new_installation_id_retires_the_old_one(app: TestApp, jwks: FakeForge) {
    let a = app.install("a").await;
    assert_eq!(
        app.invoke("GET", NOTES, &fit(0, &a, json!({})), None)
            .await
            .status,
        StatusCode::OK
    );
    let mut payload = a.payload("installed");
    payload["installationId"] = "ari:cloud:ecosystem::installation/reinstalled".into();
    let token = install_token(&a, "/installed", json!({}));
    assert_eq!(
        app.call("POST", "/installed", Some(&token), Some(&payload))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    app.invoke("GET", NOTES, &fit(0, &a, json!({})), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "unmapped_installation");
    let renewed = fit(
        0,
        &a,
        json!({ "app": { "id": APP_ARI, "installationId": "ari:cloud:ecosystem::installation/reinstalled" } }),
    );
    assert_eq!(
        app.invoke("GET", NOTES, &renewed, None).await.status,
        StatusCode::OK
    );
    let _ = jwks;
}

async fn an_uninstalled_or_disabled_site_is_refused(app: TestApp, jwks: FakeForge) {
    let a = app.install("a").await;
    app.hook(&a, "disabled").await;
    app.invoke("GET", NOTES, &fit(0, &a, json!({})), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "tenant_disabled");
    app.hook(&a, "enabled").await;
    app.hook(&a, "uninstalled").await;
    // Installation ids are resolved among installed tenants only.
    app.invoke("GET", NOTES, &fit(0, &a, json!({})), None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "unmapped_installation");
    let _ = jwks;
}

async fn unknown_keys_refetch_the_jwks_at_most_once_per_interval_and_rotation_is_followed(
    app: TestApp,
    jwks: FakeForge,
) {
    let a = app.install("a").await;
    assert_eq!(
        app.invoke("GET", NOTES, &fit(0, &a, json!({})), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(jwks.hits(), 1);
    // A key not published: within the interval since the last fetch, no refetch at all.
    for _ in 0..5 {
        app.invoke("GET", NOTES, &fit(1, &a, json!({})), None)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unknown_kid");
    }
    assert_eq!(jwks.hits(), 1, "unknown kids must not hammer the JWKS");
    // Forge rotates: key 1 is published, key 0 withdrawn.
    jwks.publish(&[1]);
    let started = std::time::Instant::now();
    loop {
        let response = app.invoke("GET", NOTES, &fit(1, &a, json!({})), None).await;
        if response.status == StatusCode::OK {
            break;
        }
        response.assert_error(StatusCode::UNAUTHORIZED, "unknown_kid");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the rotated key was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(jwks.hits(), 2, "one refetch once the interval had passed");
}

async fn the_system_token_calls_the_product_as_the_app_for_that_request_only(
    app: TestApp,
    jwks: FakeForge,
) {
    let a = app.install("a").await;
    let product = FakeProduct::builder(APP_KEY)
        .base_path("/ex/jira/cloud-1")
        .start()
        .await;
    product.bearer("system-token-123", "app-user");
    let api_base = product.base_url().to_owned();

    async fn whoami(
        invocation: ForgeInvocation,
        State(app): State<connect_axum::app::AppState>,
    ) -> connect_axum::error::Result<Json<Value>> {
        Ok(Json(
            app.product()
                .as_forge_app(&invocation)?
                .get("/rest/api/3/myself")
                .await?,
        ))
    }
    let router = app.router.clone().merge(
        Router::new()
            .route("/forge/whoami", get(whoami))
            .route_layer(middleware::from_fn_with_state(
                app.state.auth().clone(),
                auth::require_forge,
            ))
            .with_state(app.state.clone()),
    );
    let token = fit(
        0,
        &a,
        json!({ "app": { "id": APP_ARI, "installationId": a.installation_id(), "apiBaseUrl": api_base } }),
    );
    let call = |system: Option<&'static str>| {
        let headers: Vec<_> = system
            .map(|s| (SYSTEM_TOKEN_HEADER, s))
            .into_iter()
            .collect();
        router.clone().oneshot(kit::invocation(
            "GET",
            "/forge/whoami",
            &token,
            &headers,
            None,
        ))
    };
    let ok = call(Some("system-token-123")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value =
        serde_json::from_slice(&axum::body::to_bytes(ok.into_body(), 1 << 16).await.unwrap())
            .unwrap();
    assert_eq!(body["accountId"], "app-user");
    // Without a system token there is nothing to call with: a clear error, no call made.
    let missing = call(None).await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_GATEWAY);
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(missing.into_body(), 1 << 16)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["error"], "product_error");
    assert_eq!(product.received().len(), 1);
    let _ = jwks;
}

on_both_stores!(
    app = sample(),
    with = crate::forge::trusting_forge,
    a_forge_invocation_and_a_connect_jwt_reach_the_same_tenant,
    bad_invocation_tokens_are_refused_with_401,
    an_install_naming_another_tenants_installation_id_is_refused_and_takes_nothing,
    a_reinstall_with_a_new_installation_id_retires_the_old_one,
    an_uninstalled_or_disabled_site_is_refused,
    unknown_keys_refetch_the_jwks_at_most_once_per_interval_and_rotation_is_followed,
    the_system_token_calls_the_product_as_the_app_for_that_request_only,
);

#[tokio::test]
async fn without_forge_app_id_forge_routes_are_off() {
    let app = TestApp::sqlite().await;
    let a = app.install("a").await;
    app.invoke("GET", NOTES, &fit(0, &a, json!({})), None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "forge_not_configured");
}

#[tokio::test]
async fn no_invocation_token_or_system_token_reaches_the_logs() {
    let jwks = FakeForge::start(APP_ARI, &[0]).await;
    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("forge.db").display());
    let server = ServerProcess::start(&[
        ("DATABASE_URL", &db),
        ("BASE_URL", BASE_URL),
        ("INSTALL_KEYS_URL", &keys.url),
        ("FORGE_APP_ID", APP_ARI),
        ("FORGE_JWKS_URL", &jwks.url),
        ("RUST_LOG", "debug"),
        ("LOG_FORMAT", "json"),
    ])
    .await;
    let client = reqwest::Client::new();
    let tenant = TestTenant::new("forged");
    let installed = client
        .post(format!("{}/installed", server.url))
        .header(
            "authorization",
            format!("JWT {}", install_token(&tenant, "/installed", json!({}))),
        )
        .json(&tenant.payload("installed"))
        .send()
        .await
        .unwrap();
    assert_eq!(installed.status(), 204);
    let token = fit(0, &tenant, json!({}));
    let system = "system-token-never-logged";
    let user = "user-token-never-logged";
    for bearer in [token.clone(), format!("{token}x")] {
        client
            .get(format!("{}{NOTES}", server.url))
            .header("authorization", format!("Bearer {bearer}"))
            .header("x-forge-oauth-system", system)
            .header("x-forge-oauth-user", user)
            .header("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124")
            .header("x-b3-spanid", "a2fb4a1d1a96d312")
            .send()
            .await
            .unwrap();
    }
    // An id that is not B3's (hex, 64 or 128 bits) is not written into the logs.
    client
        .get(format!("{}{NOTES}", server.url))
        .header("authorization", format!("Bearer {token}"))
        .header("x-b3-traceid", "not-a-trace-id-zz")
        .send()
        .await
        .unwrap();
    let (_, logs) = server.stop().await;
    // Forge's B3 ids are on the request's log lines, to meet Forge's own invocation logs.
    let traced: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("463ac35c9f6413ad48485a3953bb6124"))
        .collect();
    assert!(
        traced.len() >= 2 && traced.iter().all(|l| l.contains("a2fb4a1d1a96d312")),
        "the trace and span ids are logged with the request: {logs}"
    );
    assert!(!logs.contains("not-a-trace-id"));
    assert!(
        logs.contains("/forge/api/issues/PROJ-1/notes"),
        "the logs were captured"
    );
    let signature = token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("FIT", token.as_str()),
        ("FIT signature", signature),
        ("system token", system),
        ("user token", user),
    ] {
        assert!(!logs.contains(secret), "the {what} is in the logs");
    }
}

#[tokio::test]
async fn an_installation_id_moved_through_one_replica_is_followed_by_the_other() {
    let jwks = FakeForge::start(APP_ARI, &[0]).await;
    let one = TestApp::postgres_with(jwks.vars()).await;
    let two = one.replica_with(jwks.vars()).await;
    let (a, b) = (one.install("a").await, one.install("b").await);
    let moved = "ari:cloud:ecosystem::installation/moved";
    let install_with = |tenant: &TestTenant, id: &str| {
        let mut payload = tenant.payload("installed");
        payload["installationId"] = id.into();
        (install_token(tenant, "/installed", json!({})), payload)
    };
    let (token, payload) = install_with(&a, moved);
    assert_eq!(
        one.call("POST", "/installed", Some(&token), Some(&payload))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let as_moved = || {
        fit(
            0,
            &a,
            json!({ "app": { "id": APP_ARI, "installationId": moved } }),
        )
    };
    two.signed(&a, "POST", CONNECT_NOTES, Some(&json!({ "body": "a's" })))
        .await;
    assert_eq!(
        two.invoke("GET", NOTES, &as_moved(), None).await.json()["notes"][0]["body"],
        "a's"
    );

    // a leaves the id behind when it uninstalls; b takes it; the other replica follows.
    assert_eq!(
        one.hook(&a, "uninstalled").await.status,
        StatusCode::NO_CONTENT
    );
    let (token, payload) = install_with(&b, moved);
    assert_eq!(
        one.call("POST", "/installed", Some(&token), Some(&payload))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let listed = two.invoke("GET", NOTES, &as_moved(), None).await;
        if listed.status == StatusCode::OK && listed.json()["notes"] == json!([]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {} {}",
            listed.status,
            String::from_utf8_lossy(&listed.body)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
