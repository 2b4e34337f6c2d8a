//! Data residency: the migration service's whole sequence driven over HTTP with the tenant's JWT,
//! committed and rolled back, and every out-of-order or foreign call refused with its code.

use axum::http::StatusCode;
use connect_axum_testing::on_both_stores;
use serde_json::{Value, json};

use crate::helpers::*;

async fn step(app: &TestApp, tenant: &TestTenant, hook: &str, id: &str) -> TestResponse {
    let target = format!("/migration/{hook}");
    app.signed(tenant, "POST", &target, Some(&json!({ "migrationId": id })))
        .await
}

async fn schedule(app: &TestApp, tenant: &TestTenant, id: &str, location: &str) -> TestResponse {
    let body = json!({
        "migrationId": id, "location": location,
        "startTime": "2026-12-01T10:00:00Z", "endTime": "2026-12-01T12:00:00Z",
    });
    app.signed(tenant, "POST", "/migration/schedule", Some(&body))
        .await
}

async fn status(app: &TestApp, tenant: &TestTenant, id: &str) -> TestResponse {
    app.signed(
        tenant,
        "GET",
        &format!("/migration/status?migrationId={id}"),
        None,
    )
    .await
}

async fn location(app: &TestApp, tenant: &TestTenant) -> Option<String> {
    let record = app.stored_tenant(&tenant.client_key).await;
    issue_notes::StoredLocation::read(app.store(), &record.installation.client_key)
        .await
        .unwrap()
}

fn code(response: &TestResponse) -> (StatusCode, Value) {
    (
        response.status,
        response.json()["errorResponseCode"].clone(),
    )
}

async fn a_migration_ready_to_commit_is_not_overwritten_by_a_new_schedule(app: TestApp) {
    let tenant = app.install("acme").await;
    assert_eq!(
        schedule(&app, &tenant, "m-1", "EU").await.status,
        StatusCode::OK
    );
    let started = step(&app, &tenant, "start", "m-1").await;
    assert_eq!(started.json()["status"], "ready-to-commit");
    assert_eq!(location(&app, &tenant).await.as_deref(), Some("EU"));

    let other = schedule(&app, &tenant, "m-2", "DE").await;
    assert_eq!(code(&other), (StatusCode::CONFLICT, json!("E0004")));
    // The same schedule again changes nothing either.
    let again = schedule(&app, &tenant, "m-1", "DE").await;
    assert_eq!(
        (again.status, again.json()["status"].clone()),
        (StatusCode::OK, json!("ready-to-commit"))
    );
    assert_eq!(
        status(&app, &tenant, "m-1").await.json()["status"],
        "ready-to-commit"
    );

    // Rolling back still finds the way home; then a new migration may be scheduled.
    assert_eq!(
        step(&app, &tenant, "rollback", "m-1").await.json()["status"],
        "rolled-back"
    );
    assert_eq!(location(&app, &tenant).await, None);
    assert_eq!(
        schedule(&app, &tenant, "m-2", "DE").await.status,
        StatusCode::OK
    );
}

async fn the_descriptor_declares_the_migration_hooks(app: TestApp) {
    let json = app
        .call("GET", "/atlassian-connect.json", None, None)
        .await
        .json();
    assert_eq!(json["lifecycle"]["dare-migration"], "/migration");
    assert_eq!(json["dataResidency"]["maxMigrationDurationHours"], 2);
}

async fn a_migration_moves_the_data_and_commits(app: TestApp) {
    let (a, b) = (app.install("a").await, app.install("b").await);
    assert_eq!(
        schedule(&app, &a, "m-1", "eu").await.json()["status"],
        "scheduled"
    );
    assert_eq!(status(&app, &a, "m-1").await.json()["status"], "scheduled");
    assert_eq!(location(&app, &a).await, None);
    assert_eq!(
        step(&app, &a, "start", "m-1").await.json()["status"],
        "ready-to-commit"
    );
    assert_eq!(
        status(&app, &a, "m-1").await.json(),
        json!({ "status": "ready-to-commit", "location": "EU" })
    );
    assert_eq!(location(&app, &a).await.as_deref(), Some("EU"));
    assert_eq!(
        step(&app, &a, "commit", "m-1").await.json()["status"],
        "committed"
    );
    // Repeated by the service: harmless.
    assert_eq!(step(&app, &a, "commit", "m-1").await.status, StatusCode::OK);
    assert_eq!(
        code(&step(&app, &a, "rollback", "m-1").await),
        (StatusCode::BAD_REQUEST, json!("E0001"))
    );
    assert_eq!(location(&app, &a).await.as_deref(), Some("EU"));
    // Another site's migration ids are not this site's, and its data did not move.
    assert_eq!(
        code(&status(&app, &b, "m-1").await),
        (StatusCode::BAD_REQUEST, json!("E0001"))
    );
    assert_eq!(location(&app, &b).await, None);
}

async fn a_rollback_restores_where_the_data_was(app: TestApp) {
    let a = app.install("a").await;
    schedule(&app, &a, "m-1", "EU").await;
    step(&app, &a, "start", "m-1").await;
    step(&app, &a, "commit", "m-1").await;
    // A second migration, from EU to DE, rolled back: the data goes back to EU.
    assert_eq!(schedule(&app, &a, "m-2", "DE").await.status, StatusCode::OK);
    assert_eq!(
        step(&app, &a, "start", "m-2").await.json()["status"],
        "ready-to-commit"
    );
    assert_eq!(location(&app, &a).await.as_deref(), Some("DE"));
    assert_eq!(
        step(&app, &a, "rollback", "m-2").await.json()["status"],
        "rolled-back"
    );
    assert_eq!(
        status(&app, &a, "m-2").await.json()["status"],
        "rolled-back"
    );
    assert_eq!(location(&app, &a).await.as_deref(), Some("EU"));
    assert_eq!(
        code(&step(&app, &a, "commit", "m-2").await),
        (StatusCode::BAD_REQUEST, json!("E0001"))
    );
}

async fn out_of_order_and_unsupported_calls_are_refused_with_their_codes(app: TestApp) {
    let a = app.install("a").await;
    assert_eq!(
        code(&step(&app, &a, "start", "nope").await),
        (StatusCode::BAD_REQUEST, json!("E0001"))
    );
    assert_eq!(
        code(&status(&app, &a, "nope").await),
        (StatusCode::BAD_REQUEST, json!("E0001"))
    );
    assert_eq!(
        code(&schedule(&app, &a, "m-1", "MARS").await),
        (StatusCode::BAD_REQUEST, json!("E0002"))
    );
    schedule(&app, &a, "m-1", "EU").await;
    assert_eq!(
        code(&step(&app, &a, "commit", "m-1").await),
        (StatusCode::BAD_REQUEST, json!("E0001"))
    );
    assert_eq!(
        code(&step(&app, &a, "start", "m-2").await),
        (StatusCode::BAD_REQUEST, json!("E0001"))
    );
    assert_eq!(step(&app, &a, "start", "m-1").await.status, StatusCode::OK);
    assert_eq!(
        code(&step(&app, &a, "start", "m-1").await),
        (StatusCode::BAD_REQUEST, json!("E0001"))
    );
    let empty = app
        .signed(
            &a,
            "POST",
            "/migration/schedule",
            Some(&json!({ "migrationId": "", "location": "EU" })),
        )
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    let malformed = app
        .signed(&a, "POST", "/migration/start", Some(&json!({ "id": 1 })))
        .await;
    assert!(malformed.status.is_client_error(), "{}", malformed.status);
}

async fn only_the_sites_own_request_bound_jwt_reaches_the_hooks(app: TestApp) {
    let a = app.install("a").await;
    let context = a.token_with(json!({ "qsh": "context-qsh" }));
    app.call(
        "GET",
        "/migration/status?migrationId=m-1",
        Some(&context),
        None,
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "context_token_not_allowed");
    app.call("GET", "/migration/status?migrationId=m-1", None, None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "missing_token");
    let other_request = a.token("GET", "/migration/status?migrationId=m-2");
    app.call(
        "GET",
        "/migration/status?migrationId=m-1",
        Some(&other_request),
        None,
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "qsh_mismatch");
}

on_both_stores!(
    app = sample(),
    a_migration_ready_to_commit_is_not_overwritten_by_a_new_schedule,
    the_descriptor_declares_the_migration_hooks,
    a_migration_moves_the_data_and_commits,
    a_rollback_restores_where_the_data_was,
    out_of_order_and_unsupported_calls_are_refused_with_their_codes,
    only_the_sites_own_request_bound_jwt_reaches_the_hooks,
);
