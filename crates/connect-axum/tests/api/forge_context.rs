//! The whole invocation context, the licence guard (Forge's `app.license`, Connect's `lic`), and
//! the keys a token is verified with: production's, staging's, an Isolated Cloud's.

use axum::http::StatusCode;
use connect_axum_testing::FakeForge;
use connect_axum_testing::forge::ForgeSite;
use serde_json::{Value, json};

use crate::probe::*;

const APP_ARI: &str = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-0000000000c0";

async fn installed(app: &TestApp, forge: &FakeForge, site: &ForgeSite) {
    let body = json!({ "eventType": "avi:forge:installed:app" });
    let response = app
        .deliver("/forge/events", &forge.trigger(site).sign(), None, &body)
        .await;
    assert_eq!(response.status, StatusCode::OK);
}

async fn start(postgres: bool, forge: &FakeForge, extra: Vec<(&'static str, String)>) -> TestApp {
    start_trusting(probe(), postgres, forge, extra).await
}

async fn every_claim_reaches_the_handler_typed(postgres: bool) {
    let forge = FakeForge::start(APP_ARI, &[0]).await;
    let app = start(postgres, &forge, vec![]).await;
    let site = forge.site("acme");
    installed(&app, &forge, &site).await;
    let license = json!({ "active": true, "billingPeriod": "MONTHLY",
        "capabilitySet": "capabilityAdvanced", "ccpEntitlementId": "e-1",
        "ccpEntitlementSlug": "slug-1", "isEvaluation": true, "subscriptionEndDate": null,
        "trialEndDate": "2027-01-01T00:00:00Z", "supportEntitlementNumber": null,
        "type": "COMMERCIAL", "modes": ["USER_ACCESS"] });
    let fit = forge
        .fit_on(&site)
        .environment("PRODUCTION", "ari:cloud:ecosystem::environment/x/prod")
        .module("xen:macro", "notes-panel-boot")
        .local_id("local-7")
        .module_key("notes-panel")
        .license(license)
        .jti("jti-1")
        .app_version("3.1.4")
        .sign();
    let response = app.invoke("GET", "/forge/context", &fit, None).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let body = response.json();
    let claims = &body["claims"];
    assert_eq!(claims["app"]["id"], APP_ARI);
    assert_eq!(claims["app"]["appVersion"], "3.1.4");
    assert_eq!(
        claims["app"]["installationId"],
        site.installation_id.as_str()
    );
    assert_eq!(
        claims["app"]["environment"],
        json!({ "type": "PRODUCTION",
        "id": "ari:cloud:ecosystem::environment/x/prod" })
    );
    assert_eq!(
        claims["app"]["module"],
        json!({ "type": "xen:macro", "key": "notes-panel-boot" })
    );
    assert_eq!(
        claims["app"]["installation"]["contexts"][0]["cloudId"],
        site.cloud_id.as_str()
    );
    assert_eq!(claims["context"]["localId"], "local-7");
    assert_eq!(claims["context"]["moduleKey"], "notes-panel");
    assert_eq!(claims["context"]["siteUrl"], site.url());
    assert_eq!(claims["context"]["extension"]["issue"]["key"], "PROJ-1");
    assert_eq!(claims["principal"], "557058:forge-user");
    assert_eq!(claims["jti"], "jti-1");
    assert_eq!(body["production"], true);
    assert_eq!(body["license"], "Active { evaluation: true }");
    let typed = &body["typedLicense"];
    assert_eq!(typed["capabilitySet"], "capabilityAdvanced");
    assert_eq!(typed["type"], "COMMERCIAL");
    assert_eq!(typed["modes"], json!(["USER_ACCESS"]));
    assert_eq!(typed["trialEndDate"], "2027-01-01T00:00:00Z");
}

async fn the_licence_guard_refuses_unlicensed_calls_with_403(postgres: bool) {
    let forge = FakeForge::start(APP_ARI, &[0]).await;
    let app = start(postgres, &forge, vec![]).await;
    let site = forge.site("acme");
    installed(&app, &forge, &site).await;
    let cases: [(&str, Value, StatusCode); 7] = [
        ("PRODUCTION", json!({ "active": true }), StatusCode::OK),
        ("PRODUCTION", json!({ "isActive": true }), StatusCode::OK),
        (
            "PRODUCTION",
            json!({ "active": false, "isActive": true }),
            StatusCode::FORBIDDEN,
        ),
        (
            "PRODUCTION",
            json!({ "active": false }),
            StatusCode::FORBIDDEN,
        ),
        (
            "PRODUCTION",
            json!({ "active": "yes" }),
            StatusCode::FORBIDDEN,
        ),
        ("PRODUCTION", Value::Null, StatusCode::OK),
        ("DEVELOPMENT", Value::Null, StatusCode::OK),
    ];
    for (environment, license, expected) in cases {
        let mut fit = forge.fit_on(&site).environment(environment, "env");
        if !license.is_null() {
            fit = fit.license(license.clone());
        }
        let response = app
            .invoke("GET", "/forge/licensed", &fit.sign(), None)
            .await;
        assert_eq!(response.status, expected, "{environment} {license}");
        if expected == StatusCode::FORBIDDEN {
            response.assert_error(StatusCode::FORBIDDEN, "unlicensed");
        }
    }
    // Connect: `lic` on a product JWT's request, bound by its QSH.
    let tenant = app.install("connect").await;
    for (target, expected) in [
        ("/api/probe/licensed?lic=active", StatusCode::OK),
        ("/api/probe/licensed?lic=none", StatusCode::FORBIDDEN),
        ("/api/probe/licensed", StatusCode::OK),
    ] {
        let response = app.signed(&tenant, "GET", target, None).await;
        assert_eq!(response.status, expected, "{target}");
    }
}

async fn staging_tokens_are_verified_with_stagings_keys_only(postgres: bool) {
    // Production publishes key 0, staging key 1.
    let production = FakeForge::start(APP_ARI, &[0]).await;
    let staging = FakeForge::start(APP_ARI, &[1]).await;
    let app = start(
        postgres,
        &production,
        vec![("FORGE_STAGING_JWKS_URL", staging.url.clone())],
    )
    .await;
    let site = production.site("acme");
    let on_staging = format!("https://api.stg.atlassian.com/ex/jira/{}", site.cloud_id);
    let body = json!({ "eventType": "avi:forge:installed:app" });
    let staged = production.trigger(&site).api_base_url(&on_staging);
    let ok = app
        .deliver("/forge/events", &staged.clone().key(1).sign(), None, &body)
        .await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&ok.body)
    );
    // Each key only for its environment.
    app.deliver("/forge/events", &staged.key(0).sign(), None, &body)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unknown_kid");
    app.deliver(
        "/forge/events",
        &production.trigger(&site).key(1).sign(),
        None,
        &body,
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unknown_kid");
    assert_eq!(
        app.deliver(
            "/forge/events",
            &production.trigger(&site).key(0).sign(),
            None,
            &body
        )
        .await
        .status,
        StatusCode::OK
    );
    // Staging turned off: staging's tokens meet production's keys and fail.
    let strict = start(
        postgres,
        &production,
        vec![("FORGE_STAGING_JWKS_URL", "off".to_owned())],
    )
    .await;
    let staged = production
        .trigger(&site)
        .api_base_url(&on_staging)
        .key(1)
        .sign();
    strict
        .deliver("/forge/events", &staged, None, &body)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unknown_kid");
}

async fn an_isolated_cloud_label_is_checked_before_any_url_is_built_from_it(postgres: bool) {
    let production = FakeForge::start(APP_ARI, &[0]).await;
    let isolated = FakeForge::start(APP_ARI, &[1]).await;
    let site = production.site("acme");
    let body = json!({ "eventType": "avi:forge:installed:app" });
    let labelled = |label: Value| {
        production
            .trigger(&site)
            .key(1)
            .claims(json!({ "icLabel": label }))
    };
    // No template: a token from an Isolated Cloud is refused, whatever its label.
    let plain = start(postgres, &production, vec![]).await;
    plain
        .deliver(
            "/forge/events",
            &labelled(json!("orange")).sign(),
            None,
            &body,
        )
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "isolated_cloud_not_configured");
    let template = format!("{}?cloud={{icLabel}}", isolated.url);
    let app = start(
        postgres,
        &production,
        vec![("FORGE_IC_JWKS_URL_TEMPLATE", template)],
    )
    .await;
    for bad in [
        json!("Orange"),
        json!("a/b"),
        json!("../x"),
        json!("a.b"),
        json!(""),
        json!("x".repeat(51)),
        json!(7),
        json!("orange?x=1"),
    ] {
        app.deliver("/forge/events", &labelled(bad.clone()).sign(), None, &body)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_ic_label");
    }
    assert_eq!(isolated.hits(), 0, "no URL was built from a bad label");
    let ok = app
        .deliver(
            "/forge/events",
            &labelled(json!("orange_1-b")).sign(),
            None,
            &body,
        )
        .await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&ok.body)
    );
    assert_eq!(isolated.hits(), 1);
    // Labels are read before the token is verified: new ones fetch at most 6 key sets a minute.
    for n in 1..=5 {
        let label = format!("cloud-{n}");
        let response = app
            .deliver("/forge/events", &labelled(json!(label)).sign(), None, &body)
            .await;
        assert_eq!(response.status, StatusCode::OK, "{label}");
    }
    assert_eq!(isolated.hits(), 6);
    app.deliver(
        "/forge/events",
        &labelled(json!("cloud-6")).sign(),
        None,
        &body,
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "key_server_unavailable");
    assert_eq!(
        isolated.hits(),
        6,
        "no fetch for the seventh new label within the minute"
    );
    // Known ones still verify.
    let known = app
        .deliver(
            "/forge/events",
            &labelled(json!("cloud-1")).sign(),
            None,
            &body,
        )
        .await;
    assert_eq!(known.status, StatusCode::OK);
    // The Isolated Cloud's keys are its own: production's key does not verify there.
    app.deliver(
        "/forge/events",
        &production
            .trigger(&site)
            .key(0)
            .claims(json!({ "icLabel": "orange_1-b" }))
            .sign(),
        None,
        &body,
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unknown_kid");
}

crate::probe::on_both_stores!(
    postgres: bool,
    every_claim_reaches_the_handler_typed,
    the_licence_guard_refuses_unlicensed_calls_with_403,
    staging_tokens_are_verified_with_stagings_keys_only,
    an_isolated_cloud_label_is_checked_before_any_url_is_built_from_it,
);
