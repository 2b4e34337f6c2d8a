//! The walls between tenants and around their secrets: row-level security under the request
//! path, sharedSecrets sealed at rest with key rotation, and lifecycle replays refused.

use std::process::Command;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use axum::{Json, Router, middleware};
use connect_axum::auth::{self, ProductJwt, Tenant};
use connect_axum::store::{Keyring, PgStore};
use connect_axum_testing::on_both_stores;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tower::ServiceExt;

use crate::helpers::*;

const NOTES: &str = "/api/issues/PROJ-1/notes";

/// A handler with the bug row-level security is there for: it forgets the tenant in its SQL.
async fn unscoped(tenant: Tenant, State(pg): State<PgStore>) -> Json<Value> {
    let mut tx = pg.begin_tenant(tenant.client_key()).await.unwrap();
    let seen: Vec<(String, String)> = sqlx::query_as("select client_key, body from note")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let updated = sqlx::query("update note set body = 'overwritten'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    let foreign_insert = sqlx::query(
        "insert into note (client_key, issue_key, body, created_at) \
         values ('b-client-key', 'PROJ-1', 'planted', now())",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string());
    drop(tx);
    Json(json!({ "seen": seen, "updated": updated, "foreignInsert": foreign_insert.err() }))
}

#[tokio::test]
async fn an_unscoped_query_through_the_request_path_reaches_no_other_tenants_rows() {
    let app = TestApp::postgres().await;
    let (a, b) = (app.install("a").await, app.install("b").await);
    for (tenant, body) in [(&a, "a's note"), (&b, "b's note"), (&b, "b's other note")] {
        let created = app
            .signed(tenant, "POST", NOTES, Some(&json!({ "body": body })))
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
    }
    let pg = PgStore::connect(&store_options(&app.database_url))
        .await
        .unwrap();
    let router = app.router.clone().merge(
        Router::new()
            .route("/api/unscoped", get(unscoped))
            .route_layer(middleware::from_fn_with_state(
                app.state.auth().clone(),
                auth::require_jwt::<ProductJwt>,
            ))
            .with_state(pg),
    );
    let request = Request::get("/api/unscoped")
        .header(
            header::AUTHORIZATION,
            format!("JWT {}", a.token("GET", "/api/unscoped")),
        )
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let result: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(result["seen"], json!([["a-client-key", "a's note"]]));
    assert_eq!(result["updated"], 1);
    let refused = result["foreignInsert"].as_str().unwrap_or_default();
    assert!(refused.contains("row-level security"), "{result}");

    let b_notes: Vec<Value> = app.signed(&b, "GET", NOTES, None).await.json()["notes"]
        .as_array()
        .unwrap()
        .clone();
    let bodies: Vec<&str> = b_notes
        .iter()
        .map(|n| n["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["b's note", "b's other note"]);
}

#[tokio::test]
async fn without_a_tenant_the_app_role_sees_no_notes_at_all() {
    let app = TestApp::postgres().await;
    let a = app.install("a").await;
    app.signed(&a, "POST", NOTES, Some(&json!({ "body": "hello" })))
        .await;
    let mut c = PgConnection::connect(&app.database_url).await.unwrap();
    let mut tx = c.begin().await.unwrap();
    sqlx::query("set local role connect_axum_app")
        .execute(&mut *tx)
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("select count(*) from note")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(count, 0);
    let role: (bool, bool) =
        sqlx::query_as("select rolsuper, rolbypassrls from pg_roles where rolname = current_user")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(role, (false, false));
}

/// The stored (sealed) secret and key id of a tenant, read beside the app.
async fn stored_secret(app: &TestApp, tenant: &TestTenant) -> (String, Option<String>) {
    let secret = app
        .raw(&format!(
            "select shared_secret from tenant where client_key = '{}'",
            tenant.client_key
        ))
        .await;
    let key_id = app
        .raw(&format!(
            "select secret_key_id from tenant where client_key = '{}'",
            tenant.client_key
        ))
        .await;
    (secret[0].clone().unwrap(), key_id[0].clone())
}

fn new_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(rand08::random::<[u8; 32]>())
}

fn rotate(database_url: &str, current: &str, old: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_connect-axum"))
        .args(["secrets", "rotate"])
        .env("DATABASE_URL", database_url)
        .env("SECRETS_KEY", current)
        .env("SECRETS_OLD_KEYS", old)
        .env_remove("PORT")
        .output()
        .unwrap()
}

async fn shared_secrets_are_sealed_at_rest(app: TestApp) {
    let tenant = app.install("sealed").await;
    let (stored, key_id) = stored_secret(&app, &tenant).await;
    assert!(
        !stored.contains(&tenant.secret),
        "the secret is stored in plain text"
    );
    assert_eq!(key_id.as_deref(), Some(keyring().current_id()));
    let response = app.signed(&tenant, "GET", NOTES, None).await;
    assert_eq!(response.status, StatusCode::OK);
}

async fn a_rotated_key_reseals_every_secret_and_the_old_key_is_then_not_needed(app: TestApp) {
    let (a, b) = (app.install("a").await, app.install("b").await);
    let old = secrets_key();
    let current = new_key();
    let rotated = rotate(&app.database_url, &current, old);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&rotated.stdout).trim(),
        "sealed 2 sharedSecrets again with the current key"
    );
    let new_ring = Keyring::parse(&current, "").unwrap();
    for tenant in [&a, &b] {
        let (stored, key_id) = stored_secret(&app, tenant).await;
        assert_eq!(key_id.as_deref(), Some(new_ring.current_id()));
        let opened = new_ring
            .open(&tenant.client_key, key_id.as_deref(), &stored)
            .unwrap();
        assert_eq!(opened.expose(), tenant.secret);
    }
    let again = rotate(&app.database_url, &current, "");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("sealed 0"));
    // The app still holding only the old key cannot open them any more: rotation is real.
    let stale = rotate(&app.database_url, old, "");
    assert_eq!(stale.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(stderr.contains("not configured"), "{stderr}");
    assert!(!stderr.contains(&a.secret) && !stderr.contains(&b.secret));
}

async fn a_plain_text_secret_is_refused_unless_the_legacy_setting_lets_it_be_sealed(app: TestApp) {
    let tenant = app.install("legacy").await;
    // Anyone able to write the table could plant a secret of their own in plain text.
    let mut planted = tenant.clone();
    planted.secret = "planted-by-a-writer".to_owned();
    app.raw(&format!(
        "update tenant set shared_secret = '{}', secret_key_id = null where client_key = '{}' returning client_key",
        planted.secret, tenant.client_key
    ))
    .await;
    app.signed(&planted, "GET", NOTES, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "secret_unavailable");
    assert_eq!(app.store().tenants().reencrypt_secrets().await.unwrap(), 0);
    assert_eq!(
        stored_secret(&app, &planted).await,
        (planted.secret.clone(), None)
    );
    let rotate = |allow: &str| {
        Command::new(env!("CARGO_BIN_EXE_connect-axum"))
            .args(["secrets", "rotate"])
            .env("DATABASE_URL", &app.database_url)
            .env("SECRETS_KEY", secrets_key())
            .env("SECRETS_ALLOW_PLAINTEXT", allow)
            .output()
            .unwrap()
    };
    assert!(rotate("false").status.success());
    assert_eq!(stored_secret(&app, &planted).await.1, None);

    // An operator upgrading from before sealing turns the legacy setting on once.
    let sealed = rotate("true");
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let (stored, key_id) = stored_secret(&app, &planted).await;
    assert!(key_id.is_some());
    assert!(!stored.contains(&planted.secret));
    assert_eq!(
        app.signed(&planted, "GET", NOTES, None).await.status,
        StatusCode::OK
    );
    // A signed reinstall replaces the secret, as always.
    app.install_tenant(tenant.clone()).await;
    assert_eq!(
        app.signed(&tenant, "GET", NOTES, None).await.status,
        StatusCode::OK
    );
}

async fn a_replayed_install_token_cannot_replace_a_newer_install(app: TestApp) {
    let first = TestTenant::new("acme");
    let first_token = install_token(&first, "/installed", json!({}));
    let installed = app
        .call(
            "POST",
            "/installed",
            Some(&first_token),
            Some(&first.payload("installed")),
        )
        .await;
    assert_eq!(installed.status, StatusCode::NO_CONTENT);
    let second = TestTenant {
        secret: "rotated-secret".into(),
        ..first.clone()
    };
    app.install_tenant(second.clone()).await;
    for secret in [first.secret.as_str(), "an-attackers-secret"] {
        let mut payload = first.payload("installed");
        payload["sharedSecret"] = secret.into();
        app.call("POST", "/installed", Some(&first_token), Some(&payload))
            .await
            .assert_error(StatusCode::CONFLICT, "stale_lifecycle_token");
    }
    let record = app.stored_tenant(&first.client_key).await;
    assert_eq!(record.installation.shared_secret.expose(), "rotated-secret");
    assert_eq!(
        app.signed(&second, "GET", NOTES, None).await.status,
        StatusCode::OK
    );
}

async fn a_replayed_install_token_with_another_body_is_refused(app: TestApp) {
    let tenant = TestTenant::new("acme");
    // Without a jti, the token itself tells one install from another.
    let token = install_token(&tenant, "/installed", json!({ "jti": null }));
    let payload = tenant.payload("installed");
    assert_eq!(
        app.call("POST", "/installed", Some(&token), Some(&payload))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // The very same request again (a retry) changes nothing and succeeds.
    assert_eq!(
        app.call("POST", "/installed", Some(&token), Some(&payload))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let mut forged = payload.clone();
    forged["sharedSecret"] = "an-attackers-secret".into();
    app.call("POST", "/installed", Some(&token), Some(&forged))
        .await
        .assert_error(StatusCode::CONFLICT, "stale_lifecycle_token");
    let mut moved = payload.clone();
    moved["baseUrl"] = "https://evil.atlassian.net".into();
    app.call("POST", "/installed", Some(&token), Some(&moved))
        .await
        .assert_error(StatusCode::CONFLICT, "stale_lifecycle_token");
    let record = app.stored_tenant(&tenant.client_key).await;
    assert_eq!(record.installation.shared_secret.expose(), tenant.secret);
    assert_eq!(record.installation.base_url, tenant.base_url);
}

async fn an_older_install_token_is_refused(app: TestApp) {
    let tenant = app.install("acme").await;
    let older = TestTenant {
        secret: "older-secret".into(),
        ..tenant.clone()
    };
    let token = install_token(&older, "/installed", json!({ "iat": now() - 60 }));
    app.call(
        "POST",
        "/installed",
        Some(&token),
        Some(&older.payload("installed")),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "stale_lifecycle_token");
    assert_eq!(
        app.signed(&tenant, "GET", NOTES, None).await.status,
        StatusCode::OK
    );
}

async fn install_tokens_need_an_issued_at_and_a_sane_jti(app: TestApp) {
    let tenant = TestTenant::new("acme");
    let payload = tenant.payload("installed");
    for (claims, code) in [
        (json!({ "iat": null }), "missing_claim"),
        (json!({ "jti": "" }), "malformed_token"),
        (json!({ "jti": "x".repeat(300) }), "malformed_token"),
    ] {
        let token = install_token(&tenant, "/installed", claims);
        app.call("POST", "/installed", Some(&token), Some(&payload))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, code);
    }
    assert!(!app.stored(&tenant).await);
}

async fn a_replayed_uninstall_after_a_reinstall_is_refused(app: TestApp) {
    let tenant = app.install("acme").await;
    let uninstall = install_token(&tenant, "/uninstalled", json!({}));
    let payload = tenant.payload("uninstalled");
    assert_eq!(
        app.call("POST", "/uninstalled", Some(&uninstall), Some(&payload))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // Uninstalled already: the same hook again is a harmless no-op.
    assert_eq!(
        app.call("POST", "/uninstalled", Some(&uninstall), Some(&payload))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    app.install_tenant(tenant.clone()).await;
    app.call("POST", "/uninstalled", Some(&uninstall), Some(&payload))
        .await
        .assert_error(StatusCode::CONFLICT, "stale_lifecycle_token");
    assert_eq!(
        app.signed(&tenant, "GET", NOTES, None).await.status,
        StatusCode::OK
    );
}

async fn a_site_moves_to_a_new_base_url_only_through_a_verified_signed_install(app: TestApp) {
    let tenant = app.install("acme").await;
    let moved = TestTenant {
        base_url: "https://acme-renamed.atlassian.net".into(),
        ..tenant.clone()
    };
    // Refused: a token of another site, and a token not signed by the install key.
    let other = TestTenant::new("other");
    let foreign = install_token(&other, "/installed", json!({}));
    app.call(
        "POST",
        "/installed",
        Some(&foreign),
        Some(&moved.payload("installed")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "issuer_mismatch");
    let genuine = install_token(&moved, "/installed", json!({}));
    let (head, _) = genuine.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", "A".repeat(342));
    app.call(
        "POST",
        "/installed",
        Some(&forged),
        Some(&moved.payload("installed")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "bad_signature");
    let hs256 = hs256(
        &json!({ "iss": moved.client_key, "aud": BASE_URL, "iat": now(), "exp": now() + 60,
        "qsh": qsh_of("POST", "/installed") }),
        &tenant.secret,
    );
    app.call(
        "POST",
        "/installed",
        Some(&hs256),
        Some(&moved.payload("installed")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unsupported_algorithm");
    let record = app.stored_tenant(&tenant.client_key).await;
    assert_eq!(record.installation.base_url, tenant.base_url);
    // Accepted: the site's own signed install.
    let response = app
        .call(
            "POST",
            "/installed",
            Some(&genuine),
            Some(&moved.payload("installed")),
        )
        .await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    let record = app.stored_tenant(&tenant.client_key).await;
    assert_eq!(record.installation.base_url, moved.base_url);
}

on_both_stores!(
    app = sample(),
    shared_secrets_are_sealed_at_rest,
    a_rotated_key_reseals_every_secret_and_the_old_key_is_then_not_needed,
    a_plain_text_secret_is_refused_unless_the_legacy_setting_lets_it_be_sealed,
    a_replayed_install_token_cannot_replace_a_newer_install,
    a_replayed_install_token_with_another_body_is_refused,
    an_older_install_token_is_refused,
    install_tokens_need_an_issued_at_and_a_sane_jti,
    a_replayed_uninstall_after_a_reinstall_is_refused,
    a_site_moves_to_a_new_base_url_only_through_a_verified_signed_install,
);

/// Tenant-table reads Postgres counted for this test's database, once the backends that made
/// them have exited (a backend reports its counts when it ends).
async fn tenant_table_reads(app: &TestApp, backends_before: i64) -> i64 {
    let count = |sql: &'static str| async move {
        app.raw(sql).await[0]
            .as_deref()
            .unwrap_or("0")
            .parse::<i64>()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while count(
        "select count(*)::text from pg_stat_activity \
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .await
        > backends_before
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the server's connections stay open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    count(
        "select (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::text \
         from pg_stat_user_tables where relname = 'tenant'",
    )
    .await
}

#[tokio::test]
async fn tokens_from_issuers_no_tenant_has_are_refused_without_reading_the_tenant_table() {
    let app = TestApp::postgres().await;
    let tenant = app.install("acme").await;
    let backends = app
        .raw(
            "select count(*)::text from pg_stat_activity \
             where datname = current_database() and pid <> pg_backend_pid()",
        )
        .await[0]
        .as_deref()
        .unwrap()
        .parse::<i64>()
        .unwrap();
    let before = tenant_table_reads(&app, backends).await;
    let server = ServerProcess::start(&[
        ("DATABASE_URL", &app.database_url),
        ("BASE_URL", BASE_URL),
        ("INSTALL_KEYS_URL", &app.keys.url),
        ("RUST_LOG", "warn"),
    ])
    .await;
    let client = reqwest::Client::new();
    let get = |token: String| {
        client
            .get(format!("{}{NOTES}", server.url))
            .header("authorization", format!("JWT {token}"))
            .send()
    };
    for i in 0..200 {
        let stranger = TestTenant::new(&format!("stranger-{i}-{}", rand08::random::<u64>()));
        let response = get(stranger.token("GET", NOTES)).await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unknown_tenant");
    }
    // The same unknown issuer again, and the real tenant, still answered as before.
    let stranger = TestTenant::new("stranger-again");
    for _ in 0..20 {
        assert_eq!(
            get(stranger.token("GET", NOTES)).await.unwrap().status(),
            401
        );
    }
    assert_eq!(get(tenant.token("GET", NOTES)).await.unwrap().status(), 200);
    let (status, _) = server.stop().await;
    assert!(status.success());
    let reads = tenant_table_reads(&app, backends).await - before;
    assert!(
        reads <= 100,
        "{reads} reads of the tenant table for 220 unknown issuers"
    );
}
