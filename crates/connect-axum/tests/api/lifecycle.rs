//! The descriptor, health checks and lifecycle hooks, including every refused signed install.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::json;

use crate::probe::*;

/// Posts `/installed` for `tenant` with `token` and `payload`, and asserts nothing was stored.
async fn refused_install(
    app: &TestApp,
    tenant: &TestTenant,
    token: Option<&str>,
    payload: &serde_json::Value,
) -> TestResponse {
    let response = app.call("POST", "/installed", token, Some(payload)).await;
    assert!(
        !app.stored(tenant).await,
        "a refused install stored the tenant"
    );
    response
}

async fn descriptor_is_served_with_the_configured_base_url(app: TestApp) {
    let response = app.call("GET", "/atlassian-connect.json", None, None).await;
    assert_eq!(response.status, StatusCode::OK);
    let json = response.json();
    assert_eq!(json["baseUrl"], BASE_URL);
    assert_eq!(json["key"], APP_KEY);
    assert_eq!(json["apiMigrations"]["signed-install"], true);
}

async fn health_and_readiness_answer_without_authentication(app: TestApp) {
    assert_eq!(
        app.call("GET", "/healthz", None, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.call("GET", "/readyz", None, None).await.json()["status"],
        "ok"
    );
}

async fn unknown_routes_and_methods_get_json_errors(app: TestApp) {
    app.call("GET", "/nope", None, None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.call("GET", "/installed", None, None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

async fn valid_signed_install_stores_the_tenant(app: TestApp) {
    let tenant = app.install("acme").await;
    let record = app.stored_tenant(&tenant.client_key).await;
    assert_eq!(record.installation.shared_secret.expose(), tenant.secret);
    assert_eq!(record.installation.base_url, tenant.base_url);
    assert_eq!(record.installation.app_key, APP_KEY);
    assert_eq!(record.installation.product_type.as_deref(), Some("jira"));
    assert_eq!(
        record.installation.server_version.as_deref(),
        Some("100217")
    );
    assert_eq!(
        record.installation.service_entitlement_number.as_deref(),
        Some("SEN-1234")
    );
    assert_eq!(
        record.installation.oauth_client_id.as_deref(),
        Some("oauth-client")
    );
    assert_eq!(
        record.installation.cloud_id.as_deref(),
        Some(tenant.cloud_id().as_str())
    );
    assert_eq!(
        record.installation.installation_id.as_deref(),
        Some(tenant.installation_id().as_str())
    );
    assert!(record.enabled);
    assert!(record.uninstalled_at.is_none());
    assert!(
        !format!("{record:?}").contains(&tenant.secret),
        "Debug shows the secret"
    );
}

async fn audience_may_be_an_array_and_carry_a_trailing_slash(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token(
        "/installed",
        json!({ "aud": ["other", format!("{BASE_URL}/")] }),
    );
    let response = app
        .call(
            "POST",
            "/installed",
            Some(&token),
            Some(&tenant.payload("installed")),
        )
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert!(app.stored(&tenant).await);
}

async fn install_without_a_token_is_refused(app: TestApp) {
    let tenant = site().tenant("acme");
    refused_install(&app, &tenant, None, &tenant.payload("installed"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing_token");
}

async fn install_with_an_unknown_kid_is_refused(app: TestApp) {
    let tenant = site().tenant("acme");
    let claims = json!({"iss": tenant.client_key, "aud": BASE_URL, "exp": now() + 60, "qsh": qsh_of("POST", "/installed")});
    let token = rs256(&claims, "some-other-kid");
    refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unknown_kid");
}

async fn install_with_a_path_traversing_kid_is_refused_without_a_fetch(app: TestApp) {
    let tenant = site().tenant("acme");
    let claims = json!({"iss": tenant.client_key, "aud": BASE_URL, "exp": now() + 60, "qsh": qsh_of("POST", "/installed")});
    for kid in ["../test-kid-1", "a/../../b", "x?y", "x#y", ""] {
        let token = rs256(&claims, kid);
        refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_kid");
    }
    assert_eq!(app.keys.hits(), 0);
}

async fn install_without_a_kid_is_refused(app: TestApp) {
    let tenant = site().tenant("acme");
    let claims = json!({"iss": tenant.client_key, "aud": BASE_URL, "exp": now() + 60, "qsh": qsh_of("POST", "/installed")});
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(install_key().private_pem.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .unwrap();
    refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_kid");
}

async fn install_with_alg_none_is_refused(app: TestApp) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let tenant = site().tenant("acme");
    let header = b64.encode(json!({"alg": "none", "kid": KID}).to_string());
    let claims = b64.encode(
        json!({"iss": tenant.client_key, "aud": BASE_URL, "exp": now() + 60, "qsh": qsh_of("POST", "/installed")}).to_string(),
    );
    for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
        let response =
            refused_install(&app, &tenant, Some(&token), &tenant.payload("installed")).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    }
    refused_install(
        &app,
        &tenant,
        Some(&format!("{header}.{claims}.")),
        &tenant.payload("installed"),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unsupported_algorithm");
}

async fn install_signed_hs256_with_the_public_key_as_secret_is_refused(app: TestApp) {
    let tenant = site().tenant("acme");
    let claims = json!({"iss": tenant.client_key, "aud": BASE_URL, "exp": now() + 60, "qsh": qsh_of("POST", "/installed")});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(KID.to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(install_key().public_pem.as_bytes()),
    )
    .unwrap();
    refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unsupported_algorithm");
}

async fn install_signed_by_another_key_is_refused(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token("/installed", json!({}));
    let (head, rest) = token.split_once('.').unwrap();
    let (claims, _) = rest.split_once('.').unwrap();
    let forged = format!("{head}.{claims}.{}", "A".repeat(342));
    refused_install(&app, &tenant, Some(&forged), &tenant.payload("installed"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "bad_signature");
}

async fn install_for_another_audience_is_refused(app: TestApp) {
    let tenant = site().tenant("acme");
    for aud in [
        json!("https://evil.example.com"),
        json!(["https://evil.example.com"]),
        serde_json::Value::Null,
    ] {
        let token = tenant.install_token("/installed", json!({ "aud": aud }));
        refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_audience");
    }
}

async fn expired_install_is_refused(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token(
        "/installed",
        json!({ "iat": now() - 600, "exp": now() - 300 }),
    );
    refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "expired");
}

async fn install_signed_for_another_path_is_refused(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token("/uninstalled", json!({}));
    refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "qsh_mismatch");
    let token = tenant.install_token("/installed", json!({ "qsh": "context-qsh" }));
    refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "qsh_mismatch");
    let token = tenant.install_token("/installed", json!({ "qsh": null }));
    refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing_qsh");
}

async fn install_whose_issuer_is_not_the_client_key_is_refused(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token("/installed", json!({ "iss": "someone-else" }));
    refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "issuer_mismatch");
}

async fn install_from_a_base_url_not_allowed_is_forbidden(app: TestApp) {
    let mut tenant = site().tenant("acme");
    tenant.base_url = "https://acme.evil.example".to_owned();
    let token = tenant.install_token("/installed", json!({}));
    refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
        .await
        .assert_error(StatusCode::FORBIDDEN, "base_url_not_allowed");
    for bad in [
        "http://acme.atlassian.net",
        "not a url",
        "https://user:pw@acme.atlassian.net",
    ] {
        tenant.base_url = bad.to_owned();
        refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_base_url");
    }
}

async fn install_without_a_shared_secret_is_a_bad_request(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token("/installed", json!({}));
    for secret in [serde_json::Value::Null, json!("")] {
        let mut payload = tenant.payload("installed");
        payload["sharedSecret"] = secret;
        refused_install(&app, &tenant, Some(&token), &payload)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_payload");
    }
}

async fn install_for_another_app_key_is_a_bad_request(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token("/installed", json!({}));
    let mut payload = tenant.payload("installed");
    payload["key"] = json!("some-other-app");
    refused_install(&app, &tenant, Some(&token), &payload)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "wrong_app_key");
}

async fn install_with_malformed_json_is_a_bad_request(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token("/installed", json!({}));
    let request = Request::post("/installed")
        .header(header::AUTHORIZATION, format!("JWT {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"clientKey\": \"acme-client-key\", "))
        .unwrap();
    app.send(request)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    let mut payload = tenant.payload("installed");
    payload["clientKey"] = json!(42);
    refused_install(&app, &tenant, Some(&token), &payload)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_payload");
    assert!(!app.stored(&tenant).await);
}

async fn install_body_over_one_mebibyte_is_refused(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token("/installed", json!({}));
    let mut payload = tenant.payload("installed");
    payload["description"] = json!("x".repeat(1 << 20));
    refused_install(&app, &tenant, Some(&token), &payload)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

async fn oversized_headers_are_refused_with_431(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token("/installed", json!({}));
    let request = Request::post("/installed")
        .header(header::AUTHORIZATION, format!("JWT {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-padding", "p".repeat(40 * 1024))
        .body(Body::from(tenant.payload("installed").to_string()))
        .unwrap();
    app.send(request).await.assert_error(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    );
    assert!(!app.stored(&tenant).await);
}

async fn install_with_a_bearer_token_is_refused(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token("/installed", json!({}));
    let request = Request::post("/installed")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(tenant.payload("installed").to_string()))
        .unwrap();
    app.send(request)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unsupported_scheme");
    assert!(!app.stored(&tenant).await);
}

async fn reinstall_rotates_the_shared_secret(app: TestApp) {
    let old = app.install("acme").await;
    assert_eq!(
        app.hook(&old, "enabled").await.status,
        StatusCode::NO_CONTENT
    );
    let mut new = old.clone();
    new.secret = "a-rotated-secret".to_owned();
    assert_eq!(
        app.hook(&new, "installed").await.status,
        StatusCode::NO_CONTENT
    );
    app.hook(&old, "enabled")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "bad_signature");
    assert_eq!(
        app.hook(&new, "enabled").await.status,
        StatusCode::NO_CONTENT
    );
}

async fn uninstall_refuses_the_tenants_tokens_and_a_reinstall_restores_them(app: TestApp) {
    let tenant = app.install("acme").await;
    assert_eq!(
        app.hook(&tenant, "uninstalled").await.status,
        StatusCode::NO_CONTENT
    );
    let record = app.stored_tenant(&tenant.client_key).await;
    assert!(
        record.uninstalled_at.is_some(),
        "the tenant is kept, marked uninstalled"
    );
    app.hook(&tenant, "enabled")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "tenant_uninstalled");
    assert_eq!(
        app.hook(&tenant, "installed").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.hook(&tenant, "enabled").await.status,
        StatusCode::NO_CONTENT
    );
}

async fn uninstall_is_verified_like_install(app: TestApp) {
    let tenant = app.install("acme").await;
    let token = tenant.install_token("/installed", json!({}));
    app.call(
        "POST",
        "/uninstalled",
        Some(&token),
        Some(&tenant.payload("uninstalled")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "qsh_mismatch");
    let hs = tenant.token("POST", "/uninstalled");
    app.call(
        "POST",
        "/uninstalled",
        Some(&hs),
        Some(&tenant.payload("uninstalled")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unsupported_algorithm");
    let mut other = site().tenant("other");
    other.client_key = "other-client-key".to_owned();
    let token = other.install_token("/uninstalled", json!({}));
    app.call(
        "POST",
        "/uninstalled",
        Some(&token),
        Some(&tenant.payload("uninstalled")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "issuer_mismatch");
    let record = app.stored_tenant(&tenant.client_key).await;
    assert!(record.uninstalled_at.is_none());
}

async fn disable_and_enable_flip_the_flag(app: TestApp) {
    let tenant = app.install("acme").await;
    assert_eq!(
        app.hook(&tenant, "disabled").await.status,
        StatusCode::NO_CONTENT
    );
    assert!(!app.stored_tenant(&tenant.client_key).await.enabled);
    assert_eq!(
        app.hook(&tenant, "enabled").await.status,
        StatusCode::NO_CONTENT
    );
    assert!(app.stored_tenant(&tenant.client_key).await.enabled);
}

async fn enable_and_disable_hooks_that_are_replayed_or_older_change_nothing(app: TestApp) {
    let tenant = app.install("acme").await;
    let t0 = now();
    let token = |event: &str, iat: i64| {
        let path = format!("/{event}");
        let claims = json!({ "qsh": qsh_of("POST", &path), "iat": iat, "jti": format!("{event}-{iat}-{}", rand::random::<u32>()) });
        (path, tenant.token_with(claims))
    };
    let send = |(path, token): &(String, String), event: &str| {
        let payload = tenant.payload(event);
        let (path, token) = (path.clone(), token.clone());
        let app = &app;
        async move { app.call("POST", &path, Some(&token), Some(&payload)).await }
    };
    let enabled = || async { app.stored_tenant(&tenant.client_key).await.enabled };

    let disable = token("disabled", t0 + 1);
    assert_eq!(
        send(&disable, "disabled").await.status,
        StatusCode::NO_CONTENT
    );
    assert!(!enabled().await);
    let enable = token("enabled", t0 + 2);
    assert_eq!(
        send(&enable, "enabled").await.status,
        StatusCode::NO_CONTENT
    );
    assert!(enabled().await);

    // The same disable again, and a late one issued before the enable: refused.
    send(&disable, "disabled")
        .await
        .assert_error(StatusCode::CONFLICT, "stale_lifecycle_token");
    send(&token("disabled", t0 + 1), "disabled")
        .await
        .assert_error(StatusCode::CONFLICT, "stale_lifecycle_token");
    // Older than the install itself.
    send(&token("disabled", t0 - 10), "disabled")
        .await
        .assert_error(StatusCode::CONFLICT, "stale_lifecycle_token");
    assert!(enabled().await);
    // A redelivered enable asks for what is already so: answered, nothing changes.
    assert_eq!(
        send(&enable, "enabled").await.status,
        StatusCode::NO_CONTENT
    );

    assert_eq!(
        send(&token("disabled", t0 + 3), "disabled").await.status,
        StatusCode::NO_CONTENT
    );
    assert!(!enabled().await);
    // An install older than the last enable/disable does not re-enable the tenant either
    // (the same install retried is answered without change).
    let path = "/installed";
    let old_install = tenant.install_token(path, json!({ "iat": t0 + 2 }));
    let retried = app
        .call(
            "POST",
            path,
            Some(&old_install),
            Some(&tenant.payload("installed")),
        )
        .await;
    assert_eq!(retried.status, StatusCode::NO_CONTENT);
    assert!(!enabled().await);
}

async fn enable_hooks_refuse_context_tokens_and_unsigned_calls(app: TestApp) {
    let tenant = app.install("acme").await;
    let context = tenant.token_with(json!({ "qsh": "context-qsh" }));
    app.call(
        "POST",
        "/disabled",
        Some(&context),
        Some(&tenant.payload("disabled")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "context_token_not_allowed");
    app.call("POST", "/disabled", None, Some(&tenant.payload("disabled")))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing_token");
    let wrong_path = tenant.token("POST", "/enabled");
    app.call(
        "POST",
        "/disabled",
        Some(&wrong_path),
        Some(&tenant.payload("disabled")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "qsh_mismatch");
    assert!(app.stored_tenant(&tenant.client_key).await.enabled);
}

async fn enable_hooks_refuse_unknown_tenants_and_foreign_payloads(app: TestApp) {
    let stranger = site().tenant("stranger");
    app.hook(&stranger, "enabled")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unknown_tenant");
    let a = app.install("a").await;
    let b = app.install("b").await;
    let token = a.token("POST", "/disabled");
    app.call(
        "POST",
        "/disabled",
        Some(&token),
        Some(&b.payload("disabled")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "issuer_mismatch");
    assert!(app.stored_tenant(&b.client_key).await.enabled);
}

on_both_stores!(
    app = probe(),
    descriptor_is_served_with_the_configured_base_url,
    health_and_readiness_answer_without_authentication,
    unknown_routes_and_methods_get_json_errors,
    valid_signed_install_stores_the_tenant,
    audience_may_be_an_array_and_carry_a_trailing_slash,
    install_without_a_token_is_refused,
    install_with_an_unknown_kid_is_refused,
    install_with_a_path_traversing_kid_is_refused_without_a_fetch,
    install_without_a_kid_is_refused,
    install_with_alg_none_is_refused,
    install_signed_hs256_with_the_public_key_as_secret_is_refused,
    install_signed_by_another_key_is_refused,
    install_for_another_audience_is_refused,
    expired_install_is_refused,
    install_signed_for_another_path_is_refused,
    install_whose_issuer_is_not_the_client_key_is_refused,
    install_from_a_base_url_not_allowed_is_forbidden,
    install_without_a_shared_secret_is_a_bad_request,
    install_for_another_app_key_is_a_bad_request,
    install_with_malformed_json_is_a_bad_request,
    install_body_over_one_mebibyte_is_refused,
    oversized_headers_are_refused_with_431,
    install_with_a_bearer_token_is_refused,
    reinstall_rotates_the_shared_secret,
    uninstall_refuses_the_tenants_tokens_and_a_reinstall_restores_them,
    uninstall_is_verified_like_install,
    disable_and_enable_flip_the_flag,
    enable_and_disable_hooks_that_are_replayed_or_older_change_nothing,
    enable_hooks_refuse_context_tokens_and_unsigned_calls,
    enable_hooks_refuse_unknown_tenants_and_foreign_payloads,
);

mod key_server_faults {
    use super::*;

    async fn refused_when_keys_come_from(url: String) {
        let app = probe()
            .sqlite_with(move |name| (name == "INSTALL_KEYS_URL").then(|| url.clone()))
            .await;
        let tenant = site().tenant("acme");
        let token = tenant.install_token("/installed", json!({}));
        refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "key_server_unavailable");
    }

    #[tokio::test]
    async fn install_is_refused_when_the_key_server_is_down() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        refused_when_keys_come_from(url).await;
    }

    #[tokio::test]
    async fn install_is_refused_when_the_key_server_hangs() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let started = std::time::Instant::now();
        refused_when_keys_come_from(url).await;
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        drop(listener);
    }

    #[tokio::test]
    async fn a_request_over_the_time_limit_is_answered_408_in_json() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = probe()
            .sqlite_with(move |name| match name {
                "INSTALL_KEYS_URL" => Some(url.clone()),
                "INSTALL_KEYS_TIMEOUT_MS" => Some("30000".to_owned()),
                "REQUEST_TIMEOUT_SECS" => Some("1".to_owned()),
                _ => None,
            })
            .await;
        let tenant = site().tenant("acme");
        let token = tenant.install_token("/installed", json!({}));
        refused_install(&app, &tenant, Some(&token), &tenant.payload("installed"))
            .await
            .assert_error(StatusCode::REQUEST_TIMEOUT, "request_timeout");
        drop(listener);
    }

    #[tokio::test]
    async fn install_is_refused_when_the_key_server_errs() {
        let router = axum::Router::new().fallback(|| async { StatusCode::INTERNAL_SERVER_ERROR });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        refused_when_keys_come_from(url).await;
    }
}

async fn install_with_unstorable_text_is_a_bad_request(app: TestApp) {
    let tenant = site().tenant("acme");
    let token = tenant.install_token("/installed", json!({}));
    for (field, value) in [
        ("description", json!("nul \u{0} inside")),
        ("sharedSecret", json!("nul \u{0} inside")),
        ("baseUrl", json!("https://acme.atlassian.net/\u{0}")),
        ("displayUrl", json!("x".repeat(2000))),
    ] {
        let mut payload = tenant.payload("installed");
        payload[field] = value;
        let response = refused_install(&app, &tenant, Some(&token), &payload).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{field}");
    }
}

on_both_stores!(app = probe(), install_with_unstorable_text_is_a_bad_request);

async fn every_response_carries_a_request_id_and_a_given_one_is_kept(app: TestApp) {
    let response = app.call("GET", "/healthz", None, None).await;
    let made = response.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(made.len(), 36, "a UUID: {made}");
    let request = Request::get("/nope")
        .header("x-request-id", "trace-123")
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.headers["x-request-id"], "trace-123");
    assert_eq!(response.status, StatusCode::NOT_FOUND);
}

on_both_stores!(
    app = probe(),
    every_response_carries_a_request_id_and_a_given_one_is_kept
);
