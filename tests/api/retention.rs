//! Uninstalled tenants: their data is kept through the retention window, a reinstall within it
//! keeps everything, and past it the tenant and all its rows are purged.

use std::time::Duration;

use axum::http::StatusCode;
use connect_axum::retention;
use connect_axum_testing::on_both_stores;
use serde_json::json;

use crate::helpers::*;

const NOTES: &str = "/api/issues/PROJ-1/notes";

async fn add_notes(app: &TestApp, tenant: &TestTenant, n: usize) {
    for i in 0..n {
        let created = app
            .signed(
                tenant,
                "POST",
                NOTES,
                Some(&json!({ "body": format!("note {i}") })),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
    }
}

async fn stored_notes(app: &TestApp, tenant: &TestTenant) -> usize {
    let count = app
        .raw(&format!(
            "select cast(count(*) as text) from note where client_key = '{}'",
            tenant.client_key
        ))
        .await;
    count[0].as_deref().unwrap().parse().unwrap()
}

const DAY: Duration = Duration::from_secs(86_400);

async fn uninstalled_tenants_are_purged_with_their_rows_once_retention_ends(app: TestApp) {
    let (gone, stays) = (app.install("gone").await, app.install("stays").await);
    add_notes(&app, &gone, 3).await;
    add_notes(&app, &stays, 2).await;
    assert_eq!(
        app.hook(&gone, "uninstalled").await.status,
        StatusCode::NO_CONTENT
    );

    let within = retention::purge_due(app.store(), DAY).await.unwrap();
    assert!(within.is_empty(), "{within:?}");
    assert_eq!(
        stored_notes(&app, &gone).await,
        3,
        "data is kept within the window"
    );

    let purged = retention::purge_due(app.store(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].client_key.as_str(), gone.client_key);
    assert!(!app.stored(&gone).await);
    assert_eq!(stored_notes(&app, &gone).await, 0);
    assert_eq!(stored_notes(&app, &stays).await, 2);
    assert_eq!(
        app.signed(&stays, "GET", NOTES, None).await.json()["notes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    app.signed(&gone, "GET", NOTES, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unknown_tenant");

    // Installing again after the purge starts afresh.
    app.install_tenant(gone.clone()).await;
    assert_eq!(
        app.signed(&gone, "GET", NOTES, None).await.json()["notes"],
        json!([])
    );
}

async fn a_reinstall_within_the_window_cancels_the_purge(app: TestApp) {
    let tenant = app.install("back").await;
    add_notes(&app, &tenant, 2).await;
    assert_eq!(
        app.hook(&tenant, "uninstalled").await.status,
        StatusCode::NO_CONTENT
    );
    app.install_tenant(tenant.clone()).await;
    let purged = retention::purge_due(app.store(), Duration::ZERO)
        .await
        .unwrap();
    assert!(purged.is_empty(), "{purged:?}");
    assert_eq!(
        app.signed(&tenant, "GET", NOTES, None).await.json()["notes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

async fn a_repeated_uninstall_does_not_restart_the_window(app: TestApp) {
    let tenant = app.install("twice").await;
    app.hook(&tenant, "uninstalled").await;
    let first = app.stored_tenant(&tenant.client_key).await.uninstalled_at;
    app.hook(&tenant, "uninstalled").await;
    let second = app.stored_tenant(&tenant.client_key).await.uninstalled_at;
    assert!(first.is_some());
    assert_eq!(first, second);
}

async fn the_background_task_purges_by_itself_after_a_short_window(app: TestApp) {
    let (gone, stays) = (app.install("gone").await, app.install("stays").await);
    add_notes(&app, &gone, 1).await;
    add_notes(&app, &stays, 1).await;
    let task = retention::spawn(
        app.store().clone(),
        Duration::from_secs(2),
        Duration::from_millis(100),
    );
    assert_eq!(
        app.hook(&gone, "uninstalled").await.status,
        StatusCode::NO_CONTENT
    );
    assert!(app.stored(&gone).await, "purged before its window ended");
    let started = std::time::Instant::now();
    while app.stored(&gone).await {
        assert!(started.elapsed() < Duration::from_secs(15), "not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "purged too early"
    );
    assert_eq!(stored_notes(&app, &gone).await, 0);
    assert_eq!(stored_notes(&app, &stays).await, 1);
}

on_both_stores!(
    app = sample(),
    uninstalled_tenants_are_purged_with_their_rows_once_retention_ends,
    a_reinstall_within_the_window_cancels_the_purge,
    a_repeated_uninstall_does_not_restart_the_window,
    the_background_task_purges_by_itself_after_a_short_window,
);

#[tokio::test]
async fn the_server_purges_and_logs_what_it_purged() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("purge.db").display());
    let keys = KeyServer::start().await;
    let server = ServerProcess::start(&[
        ("DATABASE_URL", &db),
        ("BASE_URL", BASE_URL),
        ("INSTALL_KEYS_URL", &keys.url),
        ("UNINSTALL_RETENTION_DAYS", "0"),
        ("PURGE_INTERVAL_SECS", "1"),
        ("RUST_LOG", "info"),
    ])
    .await;
    let client = reqwest::Client::new();
    let tenant = TestTenant::new("logged");
    for event in ["installed", "uninstalled"] {
        let path = format!("/{event}");
        let response = client
            .post(format!("{}{path}", server.url))
            .header(
                "authorization",
                format!("JWT {}", install_token(&tenant, &path, json!({}))),
            )
            .json(&tenant.payload(event))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    let probe = format!("{}{NOTES}", server.url);
    let started = std::time::Instant::now();
    loop {
        let response = client
            .get(&probe)
            .header(
                "authorization",
                format!("JWT {}", tenant.token("GET", NOTES)),
            )
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        if body["error"] == "unknown_tenant" {
            break;
        }
        assert_eq!(body["error"], "tenant_uninstalled");
        assert!(started.elapsed() < Duration::from_secs(15), "not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, logs) = server.stop().await;
    assert!(
        logs.contains("purged tenant logged-client-key") && logs.contains("with all its rows"),
        "{logs}"
    );
}
