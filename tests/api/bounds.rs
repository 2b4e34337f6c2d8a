//! What one tenant may store and read at once: the notes list comes in keyset pages, each issue
//! and each tenant holds at most so many notes (409 past it, nothing written, also under
//! concurrent writes), and note ids are numbered per tenant. On both stores.

use std::time::Duration;

use axum::http::StatusCode;
use connect_axum::retention;
use connect_axum_testing::AppUnderTest;
use connect_axum_testing::on_both_stores;
use issue_notes::NoteCaps;
use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection};
use tokio::task::JoinSet;

use crate::helpers::*;

const NOTES: &str = "/api/issues/PROJ-1/notes";

/// The sample with small caps: 3 notes an issue, 5 a tenant.
fn capped() -> AppUnderTest {
    AppUnderTest::new(|config| {
        issue_notes::app_with(
            config,
            NoteCaps {
                per_issue: 3,
                per_tenant: 5,
            },
        )
    })
}

async fn post(app: &TestApp, tenant: &TestTenant, path: &str, body: &str) -> TestResponse {
    app.signed(tenant, "POST", path, Some(&json!({ "body": body })))
        .await
}

fn ids(page: &Value) -> Vec<i64> {
    page["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect()
}

async fn the_list_comes_in_pages_that_walk_every_note_once_in_order(app: TestApp) {
    let a = app.install("a").await;
    for i in 0..55 {
        assert_eq!(
            post(&app, &a, NOTES, &format!("note {i}")).await.status,
            StatusCode::CREATED
        );
    }
    // 50 a page unless asked.
    let first = app.signed(&a, "GET", NOTES, None).await.json();
    assert_eq!(ids(&first), (1..=50).collect::<Vec<_>>());
    assert!(first["next"].is_string());

    let mut walked = Vec::new();
    let mut target = format!("{NOTES}?limit=7");
    let mut pages = 0;
    loop {
        let page = app.signed(&a, "GET", &target, None).await.json();
        pages += 1;
        walked.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => target = format!("{NOTES}?limit=7&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(
        walked,
        (1..=55).collect::<Vec<_>>(),
        "each note once, oldest first"
    );
    assert_eq!(pages, 8);
    // A page that ends exactly at the last note says no more follow.
    let whole = app
        .signed(&a, "GET", &format!("{NOTES}?limit=55"), None)
        .await
        .json();
    assert_eq!(
        (ids(&whole).len(), whole["next"].clone()),
        (55, Value::Null)
    );
}

async fn a_limit_or_cursor_that_is_not_ours_is_a_400(app: TestApp) {
    let a = app.install("a").await;
    post(&app, &a, NOTES, "x").await;
    for limit in ["0", "101", "-1", "ten", "1.5", ""] {
        app.signed(&a, "GET", &format!("{NOTES}?limit={limit}"), None)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_limit");
    }
    // Not base64url, base64url of no id, of a negative or zero one, of a huge number.
    for cursor in ["!!", "YWJj", "LTU", "MA", "OTk5OTk5OTk5OTk5OTk5OTk5OTk5"] {
        app.signed(&a, "GET", &format!("{NOTES}?cursor={cursor}"), None)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_cursor");
    }
    let page = app
        .signed(&a, "GET", &format!("{NOTES}?limit=100"), None)
        .await;
    assert_eq!(page.status, StatusCode::OK);
}

async fn each_cap_refuses_the_note_past_it_with_409_and_writes_nothing(app: TestApp) {
    let (a, b) = (app.install("a").await, app.install("b").await);
    for i in 0..3 {
        assert_eq!(
            post(&app, &a, NOTES, &format!("{i}")).await.status,
            StatusCode::CREATED
        );
    }
    post(&app, &a, NOTES, "one too many")
        .await
        .assert_error(StatusCode::CONFLICT, "issue_note_limit");
    let other = "/api/issues/PROJ-2/notes";
    for i in 0..2 {
        assert_eq!(
            post(&app, &a, other, &format!("{i}")).await.status,
            StatusCode::CREATED
        );
    }
    post(&app, &a, "/api/issues/PROJ-3/notes", "the sixth")
        .await
        .assert_error(StatusCode::CONFLICT, "tenant_note_limit");
    let count = |key: &str| {
        let sql = format!("select cast(count(*) as text) from note where client_key = '{key}'");
        let app = &app;
        async move { app.raw(&sql).await }
    };
    assert_eq!(count(&a.client_key).await, [Some("5".to_owned())]);
    // Another tenant's caps are its own.
    assert_eq!(
        post(&app, &b, NOTES, "b's").await.status,
        StatusCode::CREATED
    );

    // A deleted note makes room; the refused ones used no id.
    app.signed(&a, "DELETE", &format!("{NOTES}/1"), None).await;
    let again = post(&app, &a, NOTES, "room again").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.json()["id"], 6);
}

async fn concurrent_writes_at_the_cap_never_pass_it(app: TestApp) {
    let a = app.install("a").await;
    let app = std::sync::Arc::new(app);
    let mut writes = JoinSet::new();
    for i in 0..12 {
        let (app, a) = (app.clone(), a.clone());
        writes.spawn(async move { post(&app, &a, NOTES, &format!("{i}")).await });
    }
    let mut statuses = Vec::new();
    while let Some(done) = writes.join_next().await {
        let response = done.unwrap();
        if response.status == StatusCode::CONFLICT {
            response.assert_error(StatusCode::CONFLICT, "issue_note_limit");
        }
        statuses.push(response.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [[201; 3].as_slice(), &[409; 9]].concat());
    let page = app.signed(&a, "GET", NOTES, None).await.json();
    assert_eq!(ids(&page), [1, 2, 3], "three notes, numbered without a gap");
}

async fn concurrent_writes_on_many_issues_never_pass_the_tenant_cap(app: TestApp) {
    let a = app.install("a").await;
    let app = std::sync::Arc::new(app);
    let mut writes = JoinSet::new();
    for i in 0..12 {
        let (app, a) = (app.clone(), a.clone());
        writes.spawn(async move {
            post(&app, &a, &format!("/api/issues/PROJ-{}/notes", i + 1), "x").await
        });
    }
    let mut created = Vec::new();
    while let Some(done) = writes.join_next().await {
        let response = done.unwrap();
        match response.status {
            StatusCode::CREATED => created.push(response.json()["id"].as_i64().unwrap()),
            _ => response.assert_error(StatusCode::CONFLICT, "tenant_note_limit"),
        }
    }
    created.sort();
    assert_eq!(
        created,
        [1, 2, 3, 4, 5],
        "five notes, numbered without a gap"
    );
    assert_eq!(
        app.raw(&format!(
            "select cast(count(*) as text) from note where client_key = '{}'",
            a.client_key
        ))
        .await,
        [Some("5".to_owned())]
    );
}

async fn note_ids_are_numbered_per_tenant(app: TestApp) {
    let (a, b) = (app.install("a").await, app.install("b").await);
    for _ in 0..3 {
        post(&app, &a, NOTES, "a's").await;
    }
    let b_first = post(&app, &b, NOTES, "b's").await.json();
    assert_eq!(b_first["id"], 1, "b's first note says nothing of a's three");
    // b's id 1 and a's id 1 are two notes: deleting b's leaves a's.
    assert_eq!(
        app.signed(&b, "DELETE", &format!("{NOTES}/1"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let a_page = app.signed(&a, "GET", NOTES, None).await.json();
    assert_eq!(ids(&a_page), [1, 2, 3]);
    let b_page = app.signed(&b, "GET", NOTES, None).await.json();
    assert_eq!(ids(&b_page), Vec::<i64>::new());
}

async fn a_purged_tenant_takes_its_note_counter_and_numbers_from_1_when_it_returns(app: TestApp) {
    let (gone, stays) = (app.install("gone").await, app.install("stays").await);
    for tenant in [&gone, &stays] {
        for _ in 0..2 {
            post(&app, tenant, NOTES, "x").await;
        }
    }
    app.hook(&gone, "uninstalled").await;
    let purged = retention::purge_due(app.store(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(
        app.raw("select client_key from note_sequence").await,
        [Some(stays.client_key.clone())]
    );
    let back = app.install_tenant(gone).await;
    assert_eq!(post(&app, &back, NOTES, "again").await.json()["id"], 1);
    assert_eq!(post(&app, &stays, NOTES, "third").await.json()["id"], 3);
}

/// `note_sequence` is under the same policy as `note`: in a tenant's transaction the app role
/// reads and writes that tenant's counter only.
#[tokio::test]
async fn the_note_counter_is_under_the_row_level_security_of_note() {
    let app = TestApp::postgres().await;
    let (a, b, c) = (
        app.install("a").await,
        app.install("b").await,
        app.install("c").await,
    );
    for tenant in [&a, &b] {
        post(&app, tenant, NOTES, "x").await;
    }
    let mut conn = PgConnection::connect(&app.database_url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("set local role connect_axum_app")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("select set_config('app.client_key', $1, true)")
        .bind(&a.client_key)
        .execute(&mut *tx)
        .await
        .unwrap();
    let seen: Vec<String> = sqlx::query_scalar("select client_key from note_sequence")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, std::slice::from_ref(&a.client_key));
    let changed = sqlx::query("update note_sequence set last_id = 0")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1, "only a's counter");
    let refused = sqlx::query("insert into note_sequence (client_key, last_id) values ($1, 1)")
        .bind(&c.client_key)
        .execute(&mut *tx)
        .await
        .expect_err("a counter written for another tenant");
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("42501"),
        "{refused}"
    );
}

on_both_stores!(
    app = sample(),
    the_list_comes_in_pages_that_walk_every_note_once_in_order,
    a_limit_or_cursor_that_is_not_ours_is_a_400,
    note_ids_are_numbered_per_tenant,
    a_purged_tenant_takes_its_note_counter_and_numbers_from_1_when_it_returns,
);

on_both_stores!(
    app = capped(),
    each_cap_refuses_the_note_past_it_with_409_and_writes_nothing,
);

on_both_stores!(
    app = capped(),
    #[multi_thread(vars = |_: &str| None)]
    concurrent_writes_at_the_cap_never_pass_it,
    concurrent_writes_on_many_issues_never_pass_the_tenant_cap,
);
