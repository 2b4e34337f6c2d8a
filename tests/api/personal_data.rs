//! Personal data reporting against a fake reporting API on loopback: batches of at most 90,
//! closed accounts anonymised and nothing else touched, state kept so a second run waits, and a
//! 429 deferring the tenant.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use connect_axum::personal_data;
use connect_axum::store::Store;
use connect_axum_testing::on_both_stores;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::helpers::*;

const REPORT_PATH: &str = "/app/report-accounts/";
const NOTES: &str = "/api/issues/PROJ-1/notes";

#[derive(Default)]
struct Reports {
    batches: Vec<Vec<String>>,
    rate_limited: bool,
    secrets: Vec<String>,
}

type Shared = Arc<Mutex<Reports>>;

/// The reporting API: verifies the app's JWT (HS256 with a tenant's secret, `qsh` of this POST),
/// records each batch, and reports ids starting with `closed-` closed and `updated-` updated.
async fn report(
    State(reports): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut reports = reports.lock().unwrap();
    if reports.rate_limited {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "120")],
        )
            .into_response();
    }
    let token = headers[header::AUTHORIZATION]
        .to_str()
        .unwrap()
        .strip_prefix("JWT ")
        .unwrap()
        .to_owned();
    let verified = reports.secrets.iter().any(|secret| {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_aud = false;
        jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .is_ok_and(|t| t.claims["iss"] == APP_KEY && t.claims["qsh"] == qsh_of("POST", REPORT_PATH))
    });
    if !verified {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let accounts = body["accounts"].as_array().unwrap();
    assert!(accounts.len() <= 90);
    assert!(
        accounts
            .iter()
            .all(|a| a["updatedAt"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
    let ids: Vec<String> = accounts
        .iter()
        .map(|a| a["accountId"].as_str().unwrap().to_owned())
        .collect();
    let flagged: Vec<Value> = ids
        .iter()
        .filter_map(|id| {
            let status = if id.starts_with("closed-") {
                "closed"
            } else if id.starts_with("updated-") {
                "updated"
            } else {
                return None;
            };
            Some(json!({ "accountId": id, "status": status }))
        })
        .collect();
    reports.batches.push(ids);
    if flagged.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Json(json!({ "accounts": flagged })).into_response()
    }
}

async fn note_by(app: &TestApp, tenant: &TestTenant, author: &str) {
    let token = tenant.token_with(json!({ "qsh": qsh_of("POST", NOTES), "sub": author }));
    let created = app
        .call(
            "POST",
            NOTES,
            Some(&token),
            Some(&json!({ "body": format!("by {author}") })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
}

async fn authors(app: &TestApp, tenant: &TestTenant) -> Vec<Option<String>> {
    all_notes(app, tenant, NOTES)
        .await
        .iter()
        .map(|n| n["author"].as_str().map(str::to_owned))
        .collect()
}

/// A fake reporting API on loopback: its URL, and what it was sent.
async fn report_server() -> (String, Shared) {
    let reports = Shared::default();
    let router = Router::new()
        .route(REPORT_PATH, post(report))
        .with_state(reports.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{REPORT_PATH}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, reports)
}

/// A fresh [`report_server`] and the setting that makes the app report to it: the setup of the
/// tests that take `(app: TestApp, reports: Shared)`.
async fn reporting() -> (impl Fn(&str) -> Option<String>, Shared) {
    let (url, reports) = report_server().await;
    let vars = move |n: &str| (n == "PERSONAL_DATA_REPORT_URL").then(|| url.clone());
    (vars, reports)
}

async fn closed_accounts_are_anonymised_and_nothing_else_is_touched(app: TestApp, reports: Shared) {
    let (a, b) = (app.install("a").await, app.install("b").await);
    reports.lock().unwrap().secrets = vec![a.secret.clone(), b.secret.clone()];
    for i in 0..92 {
        note_by(&app, &a, &format!("active-{i:03}")).await;
    }
    for author in ["closed-1", "closed-2", "updated-1", "closed-1"] {
        note_by(&app, &a, author).await;
    }
    // The same account id on another site, which this run does not report as closed for b.
    note_by(&app, &b, "active-b").await;

    let summary = personal_data::report_due(&app.state).await.unwrap();
    assert_eq!(
        (
            summary.tenants,
            summary.accounts,
            summary.closed,
            summary.updated,
            summary.deferred
        ),
        (2, 96, 2, 1, 0)
    );
    let batches = reports.lock().unwrap().batches.clone();
    let mut sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    sizes.sort();
    assert_eq!(
        sizes,
        [1, 5, 90],
        "95 distinct ids of a in batches of at most 90, 1 of b"
    );

    let a_authors = authors(&app, &a).await;
    assert_eq!(
        a_authors.iter().filter(|x| x.is_none()).count(),
        3,
        "closed-1 twice, closed-2 once"
    );
    assert!(
        a_authors
            .iter()
            .flatten()
            .all(|x| !x.starts_with("closed-"))
    );
    assert!(a_authors.contains(&Some("updated-1".to_owned())));
    assert_eq!(authors(&app, &b).await, [Some("active-b".to_owned())]);

    // Reported now: nothing is due until the interval has passed, even for a fresh process.
    let again = personal_data::report_due(&app.state).await.unwrap();
    assert_eq!(again.tenants, 0);
    assert_eq!(reports.lock().unwrap().batches.len(), 3);
    let restarted = issue_notes::app(app.state.config().clone())
        .state_over(app.store().clone())
        .unwrap();
    assert_eq!(
        personal_data::report_due(&restarted).await.unwrap().tenants,
        0
    );
}

async fn a_rate_limited_report_defers_the_tenant_and_changes_nothing(
    app: TestApp,
    reports: Shared,
) {
    let a = app.install("a").await;
    reports.lock().unwrap().secrets = vec![a.secret.clone()];
    note_by(&app, &a, "closed-1").await;
    reports.lock().unwrap().rate_limited = true;
    let summary = personal_data::report_due(&app.state).await.unwrap();
    assert_eq!((summary.tenants, summary.deferred), (0, 1));
    assert_eq!(authors(&app, &a).await, [Some("closed-1".to_owned())]);
    // Deferred by the Retry-After (120 s): not due now, due in three minutes.
    let store: &Store = app.store();
    assert!(
        store
            .bookkeeping()
            .personal_data_due(connect_axum::store::now())
            .await
            .unwrap()
            .is_empty()
    );
    let soon = connect_axum::store::now() + chrono::Duration::seconds(180);
    assert_eq!(
        store
            .bookkeeping()
            .personal_data_due(soon)
            .await
            .unwrap()
            .len(),
        1
    );
    reports.lock().unwrap().rate_limited = false;
    let key = app
        .stored_tenant(&a.client_key)
        .await
        .installation
        .client_key
        .clone();
    store
        .bookkeeping()
        .set_personal_data_due(&key, None, connect_axum::store::now())
        .await
        .unwrap();
    let summary = personal_data::report_due(&app.state).await.unwrap();
    assert_eq!((summary.tenants, summary.closed), (1, 1));
    assert_eq!(authors(&app, &a).await, [None]);
}

on_both_stores!(
    app = sample(),
    with = reporting,
    closed_accounts_are_anonymised_and_nothing_else_is_touched,
    a_rate_limited_report_defers_the_tenant_and_changes_nothing,
);
