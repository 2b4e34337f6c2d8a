//! The sample's test harness: the testing kit (connect-axum-testing) started with the sample's
//! own builder, the server binary as a process, and the outage checks of the notes routes.

use std::sync::Arc;

use axum::http::StatusCode;
use connect_axum::store::{Keyring, StoreOptions};
pub(crate) use connect_axum_testing::site::{KeyServer, hs256, now, qsh_of, with_overrides};
pub(crate) use connect_axum_testing::store::{admin_cleanup, admin_url, secrets_key, unique_name};
pub(crate) use connect_axum_testing::{AppUnderTest, BASE_URL, TestApp, TestResponse, TestTenant};
use serde_json::{Value, json};

/// The descriptor's app key.
pub(crate) const APP_KEY: &str = "connect-axum-issue-notes";

/// The sample, as `main` builds it.
pub(crate) fn sample() -> AppUnderTest {
    AppUnderTest::new(issue_notes::app)
}

/// The sample on a fresh store, as `TestApp::postgres()` and the like.
#[allow(async_fn_in_trait)]
pub(crate) trait SampleApp: Sized {
    async fn postgres() -> Self;
    async fn postgres_with(vars: impl Fn(&str) -> Option<String>) -> Self;
    async fn postgres_at(admin_url: &str, vars: impl Fn(&str) -> Option<String>) -> Self;
    async fn postgres_tuned(
        admin_url: &str,
        tune: impl FnOnce(&mut StoreOptions),
        vars: impl Fn(&str) -> Option<String>,
    ) -> Self;
    async fn sqlite() -> Self;
    async fn sqlite_with(vars: impl Fn(&str) -> Option<String>) -> Self;
}

impl SampleApp for TestApp {
    async fn postgres() -> Self {
        sample().postgres().await
    }

    async fn postgres_with(vars: impl Fn(&str) -> Option<String>) -> Self {
        sample().postgres_with(vars).await
    }

    async fn postgres_at(admin_url: &str, vars: impl Fn(&str) -> Option<String>) -> Self {
        sample().postgres_tuned(admin_url, |_| {}, vars).await
    }

    async fn postgres_tuned(
        admin_url: &str,
        tune: impl FnOnce(&mut StoreOptions),
        vars: impl Fn(&str) -> Option<String>,
    ) -> Self {
        sample().postgres_tuned(admin_url, tune, vars).await
    }

    async fn sqlite() -> Self {
        sample().sqlite().await
    }

    async fn sqlite_with(vars: impl Fn(&str) -> Option<String>) -> Self {
        sample().sqlite_with(vars).await
    }
}

/// A site of the sample, as `TestTenant::new(name)`.
pub(crate) trait SampleTenant {
    fn new(name: &str) -> Self;
}

impl SampleTenant for TestTenant {
    fn new(name: &str) -> Self {
        connect_axum_testing::Site {
            app_key: APP_KEY.to_owned(),
            app_base_url: BASE_URL.to_owned(),
        }
        .tenant(name)
    }
}

/// A signed-install token for `tenant`, with default claims overridden by `extra`.
pub(crate) fn install_token(tenant: &TestTenant, path: &str, extra: Value) -> String {
    tenant.install_token(path, extra)
}

/// The keyring of this process's `SECRETS_KEY`.
pub(crate) fn keyring() -> Arc<Keyring> {
    connect_axum_testing::store::keyring()
}

/// The sample's store options on `database_url` (its migrations, a pool of 5).
pub(crate) fn store_options(database_url: &str) -> StoreOptions {
    sample().store_options(database_url)
}

/// The server binary, run as a process on a free loopback port, its stdout collected.
pub(crate) struct ServerProcess {
    child: std::process::Child,
    logs: Option<std::thread::JoinHandle<String>>,
    /// `http://127.0.0.1:{port}`.
    pub(crate) url: String,
}

impl ServerProcess {
    /// Starts the binary with `env` on top of `PORT` and waits until `/readyz` answers 200.
    pub(crate) async fn start(env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_connect-axum"))
            .env("SECRETS_KEY", secrets_key())
            .envs(env.iter().copied())
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the server binary starts");
        let mut stdout = child.stdout.take().unwrap();
        // Read as it comes, so that a full pipe never holds the server up.
        let logs = std::thread::spawn(move || {
            let mut logs = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut logs);
            logs
        });
        let server = Self {
            child,
            logs: Some(logs),
            url: format!("http://127.0.0.1:{port}"),
        };
        // Each probe bounded as Kubernetes bounds it, so that a hanging /readyz fails the start.
        let probe = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(1))
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(10) {
            if probe
                .get(format!("{}/readyz", server.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{} did not become ready", server.url);
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Waits (at most 15 s) for the process to exit; returns its status and everything it logged.
    pub(crate) async fn exited(mut self) -> (std::process::ExitStatus, String) {
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(15),
                "the server did not stop"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let logs = self.logs.take().unwrap().join().unwrap();
        (status, logs)
    }

    /// SIGTERM, then [`exited`](Self::exited).
    pub(crate) async fn stop(self) -> (std::process::ExitStatus, String) {
        self.terminate();
        self.exited().await
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With the database gone: `/readyz` answers 503 `store_unavailable` within 1 s (a Kubernetes
/// probe gives up after 1 s by default), and a read and a write of `tenant`'s notes within 2 s.
pub(crate) async fn assert_outage_answered_in_time(app: &TestApp, tenant: &TestTenant) {
    use std::time::{Duration, Instant};
    const NOTES: &str = "/api/issues/PROJ-1/notes";
    let started = Instant::now();
    app.call("GET", "/readyz", None, None)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/readyz took {:?}",
        started.elapsed()
    );
    let write = json!({ "body": "lost?" });
    for (method, body, what) in [("GET", None, "a read"), ("POST", Some(&write), "a write")] {
        let started = Instant::now();
        app.signed(tenant, method, NOTES, body)
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what} took {:?}",
            started.elapsed()
        );
    }
}

/// Polls `tenant`'s notes until they answer 200 (at most 20 s), then `/readyz` must too.
pub(crate) async fn until_recovered(app: &TestApp, tenant: &TestTenant) {
    use std::time::{Duration, Instant};
    let started = Instant::now();
    loop {
        let response = app
            .signed(tenant, "GET", "/api/issues/PROJ-1/notes", None)
            .await;
        if response.status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no recovery: {}",
            response.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.call("GET", "/readyz", None, None).await.status,
        StatusCode::OK
    );
}

/// Every note of `tenant` on the notes list `path`, following the pages (product JWTs).
pub(crate) async fn all_notes(app: &TestApp, tenant: &TestTenant, path: &str) -> Vec<Value> {
    let mut notes = Vec::new();
    let mut target = format!("{path}?limit=100");
    loop {
        let page = app.signed(tenant, "GET", &target, None).await.json();
        notes.extend(
            page["notes"]
                .as_array()
                .expect("a page of notes")
                .iter()
                .cloned(),
        );
        match page["next"].as_str() {
            Some(next) => target = format!("{path}?limit=100&cursor={next}"),
            None => return notes,
        }
    }
}
