//! The Forge SQL client and its migrations against the kit's fake sidecar, whose Forge SQL runs
//! on a real MariaDB (`TEST_MARIADB_URL`, by default root at 127.0.0.1:3306; `.ci/mariadb.sh`
//! starts one): typed rows, what a write changed, installations kept apart, the refusals made
//! before any call, Forge's errors typed, the ledger under two replicas.

use std::time::Duration;

use connect_axum::forge::sql::{
    Changed, ForgeSql, LEDGER_TABLE, Sql, SqlError, SqlMigrations, de, limit,
};
use connect_axum::protocol::egress::ProxyAuthorization;
use connect_axum::sql_params;
use connect_axum_testing::FakeSidecar;
use connect_axum_testing::forge::ForgeSite;
use connect_axum_testing::sidecar::SqlRoute;
use serde::Deserialize;

const NOTES: &str = "CREATE TABLE IF NOT EXISTS note (\
     id BIGINT PRIMARY KEY AUTO_INCREMENT, \
     issue VARCHAR(64) NOT NULL, \
     body TEXT NOT NULL, \
     price DECIMAL(10, 2), \
     votes INT NOT NULL DEFAULT 0, \
     created_at DATETIME NOT NULL)";

#[derive(Debug, Deserialize, PartialEq)]
struct Note {
    #[serde(deserialize_with = "de::int")]
    id: i64,
    body: String,
    #[serde(deserialize_with = "de::decimal_string")]
    price: String,
    votes: i32,
    #[serde(deserialize_with = "de::datetime")]
    created_at: chrono::NaiveDateTime,
}

struct Fixture {
    sidecar: FakeSidecar,
    client: ForgeSql,
}

impl Fixture {
    async fn start() -> Self {
        let sidecar = FakeSidecar::start().await;
        let client = ForgeSql::new(&sidecar.url.parse().unwrap(), Duration::from_secs(30));
        Self { sidecar, client }
    }

    /// A new installation, reached as the app outside any invocation.
    fn installation(&self, name: &str) -> (ForgeSite, ProxyAuthorization) {
        let site = self.sidecar.site(name);
        let auth = ProxyAuthorization::installation_as_app(&site.installation_id).unwrap();
        (site, auth)
    }

    /// A new installation with the notes table.
    async fn with_notes(&self, name: &str) -> (ForgeSite, ProxyAuthorization) {
        let (site, auth) = self.installation(name);
        self.client.at(&auth).execute_ddl(NOTES).await.unwrap();
        (site, auth)
    }

    fn calls(&self) -> usize {
        self.sidecar.sql().calls().len()
    }
}

async fn add_note(sql: &Sql<'_>, issue: &str, body: &str) -> Changed {
    sql.execute(
        "INSERT INTO note (issue, body, price, votes, created_at) VALUES (?, ?, ?, ?, ?)",
        &sql_params![issue, body, "12.50", 3, "2026-01-31 12:00:05"],
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn rows_decode_with_bigint_decimal_and_datetime_sent_as_strings() {
    let f = Fixture::start().await;
    let (_, auth) = f.with_notes("acme").await;
    let sql = f.client.at(&auth);
    add_note(&sql, "PROJ-1", "hello").await;

    let raw: Vec<serde_json::Value> = sql
        .query("SELECT id, price, votes, created_at FROM note", &[])
        .await
        .unwrap();
    // As Forge answers them: BIGINT, DECIMAL and DATETIME as strings, INT as a number.
    assert!(raw[0]["id"].is_string(), "{raw:?}");
    assert_eq!(raw[0]["price"], "12.50");
    assert_eq!(raw[0]["votes"], 3);
    assert_eq!(raw[0]["created_at"], "2026-01-31 12:00:05");

    let notes: Vec<Note> = sql
        .query(
            "SELECT id, body, price, votes, created_at FROM note WHERE issue = ?",
            &sql_params!["PROJ-1"],
        )
        .await
        .unwrap();
    let created_at = chrono::NaiveDate::from_ymd_opt(2026, 1, 31)
        .unwrap()
        .and_hms_opt(12, 0, 5)
        .unwrap();
    assert_eq!(
        notes,
        [Note {
            id: 1,
            body: "hello".into(),
            price: "12.50".into(),
            votes: 3,
            created_at,
        }]
    );
    let none: Option<Note> = sql
        .query_optional(
            "SELECT id, body, price, votes, created_at FROM note WHERE issue = ?",
            &sql_params!["PROJ-2"],
        )
        .await
        .unwrap();
    assert_eq!(none, None);
    #[derive(Deserialize)]
    struct Count {
        #[serde(deserialize_with = "de::uint")]
        n: u64,
    }
    let count: Option<Count> = sql
        .query_optional("SELECT COUNT(*) AS n FROM note", &[])
        .await
        .unwrap();
    assert_eq!(count.unwrap().n, 1);
}

#[tokio::test]
async fn a_write_tells_the_rows_it_changed_and_the_id_it_made() {
    let f = Fixture::start().await;
    let (_, auth) = f.with_notes("acme").await;
    let sql = f.client.at(&auth);
    assert_eq!(
        add_note(&sql, "PROJ-1", "a").await,
        Changed {
            rows_affected: 1,
            last_insert_id: Some(1)
        }
    );
    assert_eq!(add_note(&sql, "PROJ-1", "b").await.last_insert_id, Some(2));
    let updated = sql
        .execute(
            "UPDATE note SET votes = votes + 1 WHERE issue = ?",
            &sql_params!["PROJ-1"],
        )
        .await
        .unwrap();
    assert_eq!(
        updated,
        Changed {
            rows_affected: 2,
            last_insert_id: None
        }
    );
    let deleted = sql
        .execute("DELETE FROM note WHERE id = ?", &sql_params![1_i64])
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected, 1);
    let none = sql
        .execute("DELETE FROM note WHERE id = ?", &sql_params![1_i64])
        .await
        .unwrap();
    assert_eq!(none.rows_affected, 0);
}

#[tokio::test]
async fn each_installation_sees_only_its_own_database() {
    let f = Fixture::start().await;
    let (a, auth_a) = f.with_notes("acme").await;
    let (b, auth_b) = f.with_notes("globex").await;
    add_note(&f.client.at(&auth_a), "PROJ-1", "for acme").await;
    add_note(&f.client.at(&auth_b), "PROJ-1", "for globex").await;
    for (auth, body) in [(&auth_a, "for acme"), (&auth_b, "for globex")] {
        let notes: Vec<Note> = f
            .client
            .at(auth)
            .query("SELECT id, body, price, votes, created_at FROM note", &[])
            .await
            .unwrap();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].body, body);
        assert_eq!(notes[0].id, 1, "each database counts its own ids");
    }
    let sql = f.sidecar.sql();
    assert_ne!(
        sql.database(&a.installation_id),
        sql.database(&b.installation_id)
    );
    let installations: Vec<_> = sql.calls().into_iter().map(|c| c.installation).collect();
    assert!(installations.contains(&Some(a.installation_id.clone())));
    assert!(installations.contains(&Some(b.installation_id.clone())));
}

#[tokio::test]
async fn a_limit_placeholder_is_refused_before_any_call_and_limit_is_written_instead() {
    let f = Fixture::start().await;
    let (_, auth) = f.with_notes("acme").await;
    let sql = f.client.at(&auth);
    for body in ["a", "b", "c"] {
        add_note(&sql, "PROJ-1", body).await;
    }
    let before = f.calls();
    let refused = sql
        .query::<Note>("SELECT * FROM note LIMIT ?", &sql_params![2])
        .await
        .unwrap_err();
    assert!(matches!(refused, SqlError::LimitPlaceholder), "{refused:?}");
    assert!(refused.to_string().contains("limit()"));
    assert_eq!(f.calls(), before, "nothing was sent");

    let two: Vec<Note> = sql
        .query(
            &format!(
                "SELECT id, body, price, votes, created_at FROM note ORDER BY id {}",
                limit(2, 100)
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        two.iter().map(|n| n.body.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let capped: Vec<Note> = sql
        .query(
            &format!(
                "SELECT id, body, price, votes, created_at FROM note {}",
                limit(1000, 1)
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(capped.len(), 1);
}

#[tokio::test]
async fn the_fake_refuses_a_limit_placeholder_as_forge_does() {
    // Sent around the client's own check, the statement meets Forge's refusal.
    let f = Fixture::start().await;
    let (site, _) = f.with_notes("acme").await;
    let response = reqwest::Client::new()
        .post(format!("{}/forge/storage/sql/v1/execute", f.sidecar.url))
        .header(
            "forge-proxy-authorization",
            format!("Forge installationId={},as=app", site.installation_id),
        )
        .json(&serde_json::json!({ "query": "SELECT * FROM note LIMIT ?", "params": [1], "method": "all" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "SQL_EXECUTION_ERROR");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Incorrect arguments to LIMIT")
    );
}

#[tokio::test]
async fn more_than_one_statement_is_refused_before_any_call() {
    let f = Fixture::start().await;
    let (_, auth) = f.with_notes("acme").await;
    let before = f.calls();
    let sql = f.client.at(&auth);
    let refused = sql
        .execute("DELETE FROM note; DROP TABLE note", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, SqlError::MultipleStatements),
        "{refused:?}"
    );
    let refused = sql
        .execute_ddl("CREATE TABLE a (x INT); CREATE TABLE b (y INT)")
        .await;
    assert!(matches!(refused, Err(SqlError::MultipleStatements)));
    assert_eq!(f.calls(), before);
    // One statement with its closing semicolon and a `;` in a string is one statement.
    sql.execute(
        "INSERT INTO note (issue, body, created_at) VALUES ('P-1', 'a;b', NOW());",
        &[],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn forge_refusals_arrive_as_typed_errors() {
    let f = Fixture::start().await;
    let (_, auth) = f.with_notes("acme").await;
    let sql = f.client.at(&auth);

    let syntax = sql
        .query::<Note>("SELEC id FROM note", &[])
        .await
        .unwrap_err();
    assert!(matches!(syntax, SqlError::Execution { .. }), "{syntax:?}");
    let policy = sql.execute("USE mysql", &[]).await.unwrap_err();
    assert!(
        matches!(policy, SqlError::PolicyViolation { .. }),
        "{policy:?}"
    );
    let unknown = sql
        .query::<Note>("SELECT id FROM nowhere", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, SqlError::Execution { message } if message.contains("nowhere")),
        "{unknown:?}"
    );
    let bad_column = sql
        .execute("UPDATE note SET missing = 1", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(bad_column, SqlError::Execution { .. }),
        "{bad_column:?}"
    );
    assert!(!bad_column.is_duplicate_key());

    let ddl_on_dml = sql.execute("DROP TABLE note", &[]).await.unwrap_err();
    assert!(
        matches!(ddl_on_dml, SqlError::InvalidQuery { .. }),
        "{ddl_on_dml:?}"
    );
    let dml_on_ddl = sql.execute_ddl("DELETE FROM note").await.unwrap_err();
    assert!(
        matches!(dml_on_ddl, SqlError::InvalidQuery { .. }),
        "{dml_on_ddl:?}"
    );

    sql.execute(
        "INSERT INTO note (id, issue, body, created_at) VALUES (?, 'P-1', 'x', NOW())",
        &sql_params![7],
    )
    .await
    .unwrap();
    let duplicate = sql
        .execute(
            "INSERT INTO note (id, issue, body, created_at) VALUES (?, 'P-1', 'x', NOW())",
            &sql_params![7],
        )
        .await
        .unwrap_err();
    assert!(duplicate.is_duplicate_key(), "{duplicate:?}");
    let as_response = connect_axum::error::Error::from(duplicate);
    assert!(matches!(
        as_response,
        connect_axum::error::Error::Conflict {
            reason: "duplicate_key",
            ..
        }
    ));
}

#[tokio::test]
async fn a_statement_past_its_time_limit_is_timed_out() {
    let f = Fixture::start().await;
    let (_, auth) = f.installation("acme");
    f.sidecar.sql().set_time_limits(
        Duration::from_millis(300),
        Duration::from_secs(10),
        Duration::from_secs(20),
    );
    let started = std::time::Instant::now();
    let slow = f
        .client
        .at(&auth)
        .query::<serde_json::Value>("SELECT SLEEP(5) AS s", &[])
        .await
        .unwrap_err();
    assert!(matches!(slow, SqlError::TimedOut), "{slow:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    let quick: Vec<serde_json::Value> = f
        .client
        .at(&auth)
        .query("SELECT SLEEP(0) AS s", &[])
        .await
        .unwrap();
    assert_eq!(quick.len(), 1);
}

fn migrations() -> SqlMigrations {
    SqlMigrations::new().add("0001_notes", NOTES).add(
        "0002_note_issue_index",
        "CREATE INDEX IF NOT EXISTS note_issue ON note (issue)",
    )
}

#[derive(Deserialize)]
struct LedgerRow {
    name: String,
}

async fn ledger(sql: &Sql<'_>) -> Vec<String> {
    let rows: Vec<LedgerRow> = sql
        .query(
            &format!("SELECT name FROM {LEDGER_TABLE} ORDER BY name"),
            &[],
        )
        .await
        .unwrap();
    rows.into_iter().map(|r| r.name).collect()
}

/// How many DDL calls carried `ddl`.
fn ddl_calls(f: &Fixture, ddl: &str) -> usize {
    f.sidecar
        .sql()
        .calls_on(SqlRoute::Ddl)
        .iter()
        .filter(|c| c.query == ddl)
        .count()
}

#[tokio::test]
async fn migrations_are_applied_once_and_a_later_one_is_applied_after() {
    let f = Fixture::start().await;
    let (site, auth) = f.installation("acme");
    let id = &site.installation_id;
    let sql = f.client.at(&auth);

    let m = migrations();
    m.ensure(id, &sql).await.unwrap();
    assert_eq!(ledger(&sql).await, ["0001_notes", "0002_note_issue_index"]);
    assert_eq!(ddl_calls(&f, NOTES), 1);
    add_note(&sql, "PROJ-1", "the table is there").await;

    // Known to this process: nothing is sent.
    f.sidecar.sql().clear_calls();
    m.ensure(id, &sql).await.unwrap();
    assert_eq!(f.calls(), 0);

    // Another process with the same list reads the ledger and changes nothing.
    migrations().ensure(id, &sql).await.unwrap();
    assert!(f.sidecar.sql().calls_on(SqlRoute::Ddl).is_empty());

    // A new release adds a migration: only it is applied.
    let later = migrations().add(
        "0003_note_author",
        "ALTER TABLE note ADD COLUMN IF NOT EXISTS author VARCHAR(128)",
    );
    later.ensure(id, &sql).await.unwrap();
    let ddl: Vec<String> = f
        .sidecar
        .sql()
        .calls_on(SqlRoute::Ddl)
        .into_iter()
        .map(|c| c.query)
        .collect();
    assert_eq!(
        ddl,
        ["ALTER TABLE note ADD COLUMN IF NOT EXISTS author VARCHAR(128)"]
    );
    assert_eq!(
        ledger(&sql).await,
        ["0001_notes", "0002_note_issue_index", "0003_note_author"]
    );
    sql.execute("UPDATE note SET author = 'alice'", &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_first_calls_in_one_process_share_one_run() {
    let f = Fixture::start().await;
    let (site, auth) = f.installation("acme");
    let sql = f.client.at(&auth);
    let m = migrations();
    let (a, b) = tokio::join!(
        m.ensure(&site.installation_id, &sql),
        m.ensure(&site.installation_id, &sql)
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(ddl_calls(&f, NOTES), 1);
}

#[tokio::test]
async fn two_replicas_migrating_one_installation_at_once_both_succeed() {
    let f = Fixture::start().await;
    let (site, auth) = f.installation("acme");
    let id = &site.installation_id;
    let sql = f.client.at(&auth);
    let (first, second) = (migrations(), migrations());
    let (a, b) = tokio::join!(first.ensure(id, &sql), second.ensure(id, &sql));
    a.unwrap();
    b.unwrap();
    assert_eq!(ledger(&sql).await, ["0001_notes", "0002_note_issue_index"]);
    // Each statement ran once or, idempotent, twice; never more.
    for ddl in [
        NOTES,
        "CREATE INDEX IF NOT EXISTS note_issue ON note (issue)",
    ] {
        assert!((1..=2).contains(&ddl_calls(&f, ddl)), "{ddl}");
    }
    add_note(&sql, "PROJ-1", "works").await;
}

#[tokio::test]
async fn a_failed_migration_is_not_remembered() {
    let f = Fixture::start().await;
    let (site, auth) = f.installation("acme");
    let id = &site.installation_id;
    let sql = f.client.at(&auth);
    let broken = SqlMigrations::new()
        .add("0001_notes", NOTES)
        .add("0002_broken", "ALTER TABLE nowhere ADD COLUMN x INT");
    let failed = broken.ensure(id, &sql).await.unwrap_err();
    assert!(matches!(failed, SqlError::Execution { .. }), "{failed:?}");
    assert_eq!(ledger(&sql).await, ["0001_notes"]);
    f.sidecar.sql().clear_calls();
    assert!(broken.ensure(id, &sql).await.is_err());
    assert_eq!(
        f.sidecar.sql().calls_on(SqlRoute::Ddl).len(),
        1,
        "tried again"
    );
}

#[tokio::test]
async fn a_sweep_migrates_every_installation_listed() {
    let f = Fixture::start().await;
    let (a, _) = f.installation("acme");
    let (b, auth_b) = f.installation("globex");
    let failed = migrations()
        .sweep(
            &f.client,
            [
                a.installation_id.clone(),
                b.installation_id.clone(),
                "not an id".to_owned(),
            ],
        )
        .await;
    assert_eq!(failed.len(), 1);
    assert!(matches!(failed[0].1, SqlError::InvalidInstallation { .. }));
    assert_eq!(
        ledger(&f.client.at(&auth_b)).await,
        ["0001_notes", "0002_note_issue_index"]
    );
    let swept: Vec<_> = f
        .sidecar
        .sql()
        .calls()
        .into_iter()
        .filter_map(|c| c.installation)
        .collect();
    assert!(swept.contains(&a.installation_id) && swept.contains(&b.installation_id));
}

#[tokio::test]
async fn every_call_carries_the_header_as_built_and_an_invocation_reaches_its_installation() {
    let f = Fixture::start().await;
    let (site, as_app) = f.with_notes("acme").await;
    let id = f
        .sidecar
        .invocation(FakeSidecar::user_context(&site, "557058:alice", "PROJ-1"));
    let in_invocation = ProxyAuthorization::invocation(&id).unwrap();
    add_note(
        &f.client.at(&in_invocation),
        "PROJ-1",
        "from the invocation",
    )
    .await;
    let notes: Vec<Note> = f
        .client
        .at(&as_app)
        .query("SELECT id, body, price, votes, created_at FROM note", &[])
        .await
        .unwrap();
    assert_eq!(
        notes[0].body, "from the invocation",
        "one installation, one database"
    );
    assert_eq!(
        f.sidecar.authorizations(),
        [
            format!("Forge installationId={},as=app", site.installation_id),
            format!("Forge id={id}"),
            format!("Forge installationId={},as=app", site.installation_id),
        ]
    );

    f.sidecar.end(&id);
    let ended = f
        .client
        .at(&in_invocation)
        .query::<Note>("SELECT 1", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&ended, SqlError::Other { status, .. } if status.as_u16() == 403),
        "{ended:?}"
    );
}
