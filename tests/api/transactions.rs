//! Tenant transactions, the door an app's SQL goes through: rows read through serde on both
//! stores, writes kept only when committed, and on Postgres a connection that a dropped or
//! cancelled transaction hands on clean.

use chrono::{DateTime, Utc};
use connect_axum::store::{ClientKey, Store};
use connect_axum_testing::on_both_stores;
use serde::Deserialize;
use sqlx::{Connection as _, Executor as _, PgConnection};

use crate::helpers::*;

async fn key_of(app: &TestApp, name: &str) -> ClientKey {
    let tenant = app.install(name).await;
    app.stored_tenant(&tenant.client_key)
        .await
        .installation
        .client_key
        .clone()
}

async fn insert(store: &Store, key: &ClientKey, body: &str, author: Option<&str>) {
    let mut tx = store.tenant_transaction(key).await.unwrap();
    tx.query(
        "insert into note (client_key, id, issue_key, body, author, created_at) \
         values ($1, (select coalesce(max(id), 0) + 1 from note where client_key = $1), \
         'PROJ-1', $2, $3, $4)",
    )
    .bind(key.as_str())
    .bind(body)
    .bind(author)
    .bind(connect_axum::store::now())
    .execute()
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn count(store: &Store, key: &ClientKey) -> i64 {
    let mut tx = store.tenant_transaction(key).await.unwrap();
    tx.query("select count(*) from note where client_key = $1")
        .bind(key.as_str())
        .fetch_one()
        .await
        .unwrap()
}

#[derive(Debug, Deserialize, PartialEq)]
struct Read {
    id: i64,
    body: String,
    author: Option<String>,
    anonymous: bool,
    created_at: DateTime<Utc>,
}

async fn rows_read_into_structs_tuples_and_single_values(app: TestApp) {
    let key = key_of(&app, "acme").await;
    let store = app.store();
    let before = connect_axum::store::now();
    insert(store, &key, "signed", Some("account-1")).await;
    insert(store, &key, "anonymous", None).await;

    let mut tx = store.tenant_transaction(&key).await.unwrap();
    let select = "select id, body, author, author is null as anonymous, created_at from note \
                  where client_key = $1 order by id";
    let rows: Vec<Read> = tx
        .query(select)
        .bind(key.as_str())
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[0].body.as_str(),
            rows[0].author.as_deref(),
            rows[0].anonymous
        ),
        ("signed", Some("account-1"), false)
    );
    assert_eq!(
        (
            rows[1].body.as_str(),
            rows[1].author.as_deref(),
            rows[1].anonymous
        ),
        ("anonymous", None, true)
    );
    assert!(rows[0].created_at >= before && rows[0].created_at <= Utc::now());
    assert!(rows[0].id < rows[1].id);

    let pairs: Vec<(i64, Option<String>)> = tx
        .query("select id, author from note where client_key = $1 order by id")
        .bind(key.as_str())
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(pairs[1], (rows[1].id, None));
    let body: Option<String> = tx
        .query("select body from note where client_key = $1 and id = $2")
        .bind(key.as_str())
        .bind(rows[0].id)
        .fetch_optional()
        .await
        .unwrap();
    assert_eq!(body.as_deref(), Some("signed"));
    let none: Option<(String,)> = tx
        .query("select body from note where client_key = $1 and id = $2")
        .bind(key.as_str())
        .bind(-1_i64)
        .fetch_optional()
        .await
        .unwrap();
    assert_eq!(none, None);

    let wrong = tx
        .query("select body from note where client_key = $1")
        .bind(key.as_str())
        .fetch_all::<i64>()
        .await;
    assert!(
        matches!(wrong, Err(connect_axum::store::StoreError::Decode(_))),
        "text read as a number: {wrong:?}"
    );
}

async fn a_tenant_transaction_dropped_without_commit_keeps_none_of_its_writes(app: TestApp) {
    let key = key_of(&app, "acme").await;
    let store = app.store();
    {
        let mut tx = store.tenant_transaction(&key).await.unwrap();
        tx.query(
            "insert into note (client_key, id, issue_key, body, created_at) values ($1, 1, 'PROJ-1', 'x', $2)",
        )
        .bind(key.as_str())
        .bind(connect_axum::store::now())
        .execute()
        .await
        .unwrap();
    }
    assert_eq!(count(store, &key).await, 0);
    let tx = store.tenant_transaction(&key).await.unwrap();
    tx.commit().await.unwrap();
    insert(store, &key, "kept", None).await;
    assert_eq!(count(store, &key).await, 1);
}

on_both_stores!(
    app = sample(),
    rows_read_into_structs_tuples_and_single_values,
    a_tenant_transaction_dropped_without_commit_keeps_none_of_its_writes
);

/// How many of the database's backends sit inside a transaction, waiting for their client.
async fn idle_in_transaction(app: &TestApp) -> String {
    app.raw(
        "select count(*)::text from pg_stat_activity where datname = current_database() \
         and state like 'idle in transaction%'",
    )
    .await
    .remove(0)
    .unwrap_or_default()
}

#[tokio::test]
async fn on_one_connection_the_next_transaction_commits_nothing_a_dropped_one_wrote() {
    let app = TestApp::postgres_tuned(&admin_url(), |o| o.pool_size = 1, |_| None).await;
    let (acme, other) = (key_of(&app, "acme").await, key_of(&app, "other").await);
    let store = app.store();
    for _ in 0..3 {
        let mut tx = store.tenant_transaction(&acme).await.unwrap();
        tx.query(
            "insert into note (client_key, id, issue_key, body, created_at) values ($1, 1000, 'PROJ-1', 'dropped', $2)",
        )
        .bind(acme.as_str())
        .bind(connect_axum::store::now())
        .execute()
        .await
        .unwrap();
        drop(tx);
        // The same connection, at once: the dropped transaction's ROLLBACK goes ahead of this.
        insert(store, &other, "committed", None).await;
    }
    assert_eq!(count(store, &acme).await, 0);
    assert_eq!(count(store, &other).await, 3);
    assert_eq!(
        app.raw("select count(*)::text from note where body = 'dropped'")
            .await
            .remove(0)
            .as_deref(),
        Some("0")
    );
    assert_eq!(idle_in_transaction(&app).await, "0");
}

#[tokio::test]
async fn a_tenant_is_entered_only_in_the_transaction_its_own_message_begins() {
    let app = TestApp::postgres_tuned(&admin_url(), |_| {}, |_| None).await;
    let mut conn = PgConnection::connect(&app.database_url).await.unwrap();
    conn.execute("set role connect_axum_app").await.unwrap();

    conn.execute(sqlx::raw_sql(
        "begin; select connect_axum_enter_tenant('acme-client-key')",
    ))
    .await
    .unwrap();
    let key: String = sqlx::query_scalar("select current_setting('app.client_key')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(key, "acme-client-key");
    conn.execute("rollback").await.unwrap();

    // A transaction left open by an earlier message: what a cancelled request would leave.
    conn.execute("begin").await.unwrap();
    let refused = conn
        .execute(sqlx::raw_sql(
            "select connect_axum_enter_tenant('other-client-key')",
        ))
        .await
        .unwrap_err();
    let code = refused.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("25001"), "{refused}");
    conn.execute("rollback").await.unwrap();
}
