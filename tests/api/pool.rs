//! The Postgres pool under stress: requests cancelled mid-`BEGIN`, a database that stops
//! answering, a single connection, and a serving login apart from the tables' owner.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::helpers::*;

const NOTES: &str = "/api/issues/PROJ-1/notes";

/// A TCP proxy between the app and Postgres that can hold back what the server sends: from the
/// moment the app sends its next `BEGIN`, or from now on, until released.
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

struct ProxyState {
    hold_after_begin: AtomicBool,
    holding: watch::Sender<bool>,
    begin_sent: Notify,
}

impl Proxy {
    /// Listens on loopback, relaying every connection to `upstream`.
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            hold_after_begin: AtomicBool::new(false),
            holding: watch::channel(false).0,
            begin_sent: Notify::new(),
        });
        let relaying = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let state = relaying.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                        let begins = buf[..n].windows(6).any(|w| w == b"begin;");
                        // Held before the BEGIN leaves, so that its answer is held too.
                        if begins && state.hold_after_begin.swap(false, Ordering::SeqCst) {
                            state.holding.send_replace(true);
                            if server_tx.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            state.begin_sent.notify_one();
                        } else if server_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut holding = relaying.holding.subscribe();
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
                        if holding.wait_for(|held| !held).await.is_err()
                            || client_tx.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, state }
    }

    /// The proxy's address in place of the server's in `url`.
    fn url_for(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.to_string()
    }

    /// Holds everything the server sends once the app has sent its next `begin;`.
    fn hold_after_next_begin(&self) {
        self.state.hold_after_begin.store(true, Ordering::SeqCst);
    }

    /// Waits until the held `BEGIN` has gone to the server.
    async fn begin_sent(&self) {
        self.state.begin_sent.notified().await;
    }

    /// Holds everything the server sends from now on: a database that stops answering.
    fn hold(&self) {
        self.state.holding.send_replace(true);
    }

    /// Lets everything held through, and what follows.
    fn release(&self) {
        self.state.holding.send_replace(false);
    }
}

/// The address of the test Postgres server.
fn postgres_addr() -> SocketAddr {
    let url = url::Url::parse(&admin_url()).unwrap();
    let host = url.host_str().unwrap();
    let port = url.port().unwrap_or(5432);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .unwrap()
        .next()
        .unwrap()
}

/// The app on a fresh database, its store reaching Postgres through `proxy` with `pool_size`
/// connections.
async fn app_behind(proxy: &Proxy, pool_size: u32) -> TestApp {
    TestApp::postgres_tuned(
        &admin_url(),
        |options| {
            options.database_url = proxy.url_for(&options.database_url);
            options.pool_size = pool_size;
        },
        |_| None,
    )
    .await
}

/// One column of one row, read on a connection of its own.
async fn scalar(app: &TestApp, sql: &str) -> String {
    app.raw(sql).await.remove(0).unwrap_or_default()
}

/// How many of the database's backends sit inside a transaction, waiting for their client.
async fn idle_in_transaction(app: &TestApp) -> String {
    scalar(
        app,
        "select count(*)::text from pg_stat_activity where datname = current_database() \
         and state like 'idle in transaction%'",
    )
    .await
}

#[tokio::test]
async fn a_request_cancelled_while_its_begin_is_in_flight_leaves_no_transaction_open_on_its_connection()
 {
    let proxy = Proxy::start(postgres_addr()).await;
    let app = app_behind(&proxy, 1).await;
    assert_eq!(
        app.store().pool_usage().max,
        2,
        "every tenant transaction shares one connection (the library's own statements have another)"
    );
    let (acme, other) = (app.install("acme").await, app.install("other").await);
    for tenant in [&acme, &other] {
        assert_eq!(
            app.signed(tenant, "GET", NOTES, None).await.status,
            StatusCode::OK
        );
    }

    proxy.hold_after_next_begin();
    tokio::select! {
        response = app.signed(&acme, "GET", NOTES, None) => {
            panic!("answered {} while its BEGIN was held", response.status)
        }
        () = proxy.begin_sent() => {}
    }
    // The client has hung up: its request is dropped with its BEGIN unanswered.
    proxy.release();

    assert_eq!(
        app.hook(&acme, "disabled").await.status,
        StatusCode::NO_CONTENT
    );
    let enabled = "select enabled::text from tenant where client_key = 'acme-client-key'";
    assert_eq!(
        scalar(&app, enabled).await,
        "false",
        "the disabled hook's write is visible to others"
    );
    assert_eq!(idle_in_transaction(&app).await, "0");
    assert_eq!(
        app.signed(&other, "GET", NOTES, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        scalar(&app, enabled).await,
        "false",
        "the next user of the connection did not roll it back"
    );
    let created = app
        .signed(&other, "POST", NOTES, Some(&json!({ "body": "kept" })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        scalar(&app, "select count(*)::text from note where body = 'kept'").await,
        "1"
    );
    assert_eq!(idle_in_transaction(&app).await, "0");
}

#[tokio::test]
async fn a_database_that_stops_answering_fails_readyz_within_1_s_and_requests_within_2_s() {
    let proxy = Proxy::start(postgres_addr()).await;
    let app = app_behind(&proxy, 5).await;
    let tenant = app.install("acme").await;
    assert_eq!(
        app.signed(&tenant, "GET", NOTES, None).await.status,
        StatusCode::OK
    );

    proxy.hold();
    assert_outage_answered_in_time(&app, &tenant).await;

    proxy.release();
    until_recovered(&app, &tenant).await;
}

/// Sends `method path` to a server process, with a tenant token and a JSON body.
async fn send(
    server: &ServerProcess,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{path}", server.url))
        .header("authorization", format!("JWT {token}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Installs `tenant` on `server`, writes a note and reads it back.
async fn install_and_write_a_note(server: &ServerProcess, tenant: &TestTenant) {
    let install = install_token(tenant, "/installed", json!({}));
    let (status, body) = send(
        server,
        "POST",
        "/installed",
        &install,
        &tenant.payload("installed"),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let token = tenant.token("POST", NOTES);
    let (status, body) = send(server, "POST", NOTES, &token, &json!({ "body": "hi" })).await;
    assert_eq!(status, 201, "{body}");
    let token = tenant.token("GET", NOTES);
    let (status, notes) = send(server, "GET", NOTES, &token, &Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(notes["notes"][0]["body"], "hi", "{notes}");
}

#[tokio::test]
async fn with_one_database_connection_the_server_serves_and_stops_within_seconds_of_sigterm() {
    let app = TestApp::postgres().await;
    let server = ServerProcess::start(&[
        ("DATABASE_URL", &app.database_url),
        ("DB_POOL_SIZE", "1"),
        ("BASE_URL", BASE_URL),
        ("INSTALL_KEYS_URL", &app.keys.url),
        ("RUST_LOG", "warn"),
    ])
    .await;
    install_and_write_a_note(&server, &TestTenant::new("acme")).await;

    let started = Instant::now();
    let (status, logs) = server.stop().await;
    assert!(status.success(), "{status}: {logs}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        started.elapsed()
    );
}

/// A database of the test's own whose tables belong to the admin login, and a serving login
/// that owns nothing; both are dropped after the test.
struct SplitLogins {
    admin_url: String,
    database: String,
    serving: String,
    owner_url: String,
    serving_url: String,
}

impl SplitLogins {
    async fn create() -> Self {
        let admin_url = admin_url();
        let suffix = format!("{}_{}", std::process::id(), rand08::random::<u32>());
        let (database, serving) = (
            format!("connect_axum_split_{suffix}"),
            format!("connect_axum_serving_{suffix}"),
        );
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        admin
            .execute(format!(r#"create database "{database}""#).as_str())
            .await
            .unwrap();
        admin
            .execute(format!(r#"create role "{serving}" login"#).as_str())
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&database);
        let owner_url = url.to_string();
        url.set_username(&serving).unwrap();
        Self {
            admin_url,
            database,
            serving,
            owner_url,
            serving_url: url.to_string(),
        }
    }

    /// What an operator runs once the migrations have made `connect_axum_app`.
    async fn grant_app_role(&self) {
        let mut admin = PgConnection::connect(&self.admin_url).await.unwrap();
        admin
            .execute(format!(r#"grant connect_axum_app to "{}""#, self.serving).as_str())
            .await
            .unwrap();
    }
}

impl Drop for SplitLogins {
    fn drop(&mut self) {
        let (database, serving) = (&self.database, &self.serving);
        admin_cleanup(
            &self.admin_url,
            vec![
                format!(r#"drop database if exists "{database}" with (force)"#),
                format!(r#"drop role if exists "{serving}""#),
            ],
        );
    }
}

/// The SQLSTATE `sql` fails with.
async fn refusal(conn: &mut PgConnection, sql: &str) -> String {
    let error = conn.execute(sql).await.expect_err(sql);
    error
        .as_database_error()
        .and_then(|e| e.code())
        .unwrap_or_default()
        .into_owned()
}

#[tokio::test]
async fn a_serving_login_apart_from_the_migration_login_cannot_leave_the_app_role_to_lift_row_security()
 {
    let logins = SplitLogins::create().await;
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_connect-axum"))
        .arg("migrate")
        .env("DATABASE_URL", &logins.serving_url)
        .env("MIGRATION_DATABASE_URL", &logins.owner_url)
        .env("SECRETS_KEY", secrets_key())
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    logins.grant_app_role().await;

    let keys = KeyServer::start().await;
    let server = ServerProcess::start(&[
        ("DATABASE_URL", &logins.serving_url),
        ("MIGRATION_DATABASE_URL", &logins.owner_url),
        ("BASE_URL", BASE_URL),
        ("INSTALL_KEYS_URL", &keys.url),
        ("RUST_LOG", "warn"),
    ])
    .await;
    install_and_write_a_note(&server, &TestTenant::new("acme")).await;
    let (status, logs) = server.stop().await;
    assert!(status.success(), "{status}: {logs}");

    let mut serving = PgConnection::connect(&logins.serving_url).await.unwrap();
    let owner: String =
        sqlx::query_scalar("select tableowner::text from pg_tables where tablename = 'note'")
            .fetch_one(&mut serving)
            .await
            .unwrap();
    assert_ne!(owner, logins.serving, "the serving login owns the tables");
    serving.execute("reset role").await.unwrap();
    const INSUFFICIENT_PRIVILEGE: &str = "42501";
    for sql in [
        "alter table note disable row level security",
        "alter table note no force row level security",
        "drop policy note_tenant_isolation on note",
    ] {
        assert_eq!(
            refusal(&mut serving, sql).await,
            INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }

    // The owner could, which is why it no longer serves requests.
    let mut owner = PgConnection::connect(&logins.owner_url).await.unwrap();
    let mut tx = owner.begin().await.unwrap();
    sqlx::query("alter table note disable row level security")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
}
