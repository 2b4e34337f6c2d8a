//! Faults: the database goes away and comes back.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use axum::http::StatusCode;

use crate::helpers::*;

const NOTES: &str = "/api/issues/PROJ-1/notes";

/// A Postgres cluster of the test's own, which the test can stop and start.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    fn start_new() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .max()?;
        let dir = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        // Postgres refuses to run as root.
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .ok()?
            .stdout
            .starts_with(b"0");
        let cluster = Cluster {
            bin,
            dir,
            port,
            as_postgres,
        };
        if as_postgres {
            Command::new("chown")
                .args(["-R", "postgres"])
                .arg(cluster.dir.path())
                .status()
                .ok()?;
        }
        let data = cluster.data();
        cluster
            .run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust"])
            .then_some(())?;
        cluster.start().then_some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> bool {
        let tool = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(tool);
            c
        } else {
            Command::new(tool)
        };
        command
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command.status().is_ok_and(|s| s.success())
    }

    fn start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        )
    }

    /// What the cluster logged.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn stop(&self) -> bool {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

#[tokio::test]
async fn a_database_outage_fails_readyz_within_1_s_and_requests_within_2_s_then_recovers_by_itself()
{
    let Some(cluster) = Cluster::start_new() else {
        // CI sets the switch, so that the outage test cannot pass there without running.
        assert!(
            !std::env::var("CONNECT_AXUM_OUTAGE_TESTS").is_ok_and(|v| v == "require"),
            "CONNECT_AXUM_OUTAGE_TESTS=require, and no Postgres cluster of the test's own could be \
             started from /usr/lib/postgresql/*/bin"
        );
        eprintln!("skipped: could not start a Postgres cluster of the test's own");
        return;
    };
    let app = TestApp::postgres_at(&cluster.admin_url(), |_| None).await;
    let tenant = app.install("acme").await;
    assert_eq!(
        app.signed(&tenant, "GET", NOTES, None).await.status,
        StatusCode::OK
    );

    assert!(cluster.stop());
    assert_outage_answered_in_time(&app, &tenant).await;

    // The cluster's port is free again while it is down; some other test's listener can take
    // it for a moment, so a restart gets a few tries.
    let restarted = (0..5).any(|attempt| {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        cluster.start()
    });
    assert!(restarted, "the cluster did not restart:\n{}", cluster.log());
    until_recovered(&app, &tenant).await;
    assert_eq!(
        app.signed(&tenant, "GET", NOTES, None).await.json()["notes"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn sigterm_during_a_burst_of_writes_loses_no_acknowledged_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let app = TestApp::postgres().await;
    let tenant = app.install("acme").await;
    let server = ServerProcess::start(&[
        ("DATABASE_URL", &app.database_url),
        ("BASE_URL", BASE_URL),
        ("RUST_LOG", "warn"),
    ])
    .await;
    let url = format!("{}{NOTES}", server.url);
    let client = reqwest::Client::new();

    let token = tenant.token("POST", NOTES);
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let counter = acknowledged.clone();
    let (burst_client, burst_url) = (client.clone(), url.clone());
    let writes = (0..400).map(move |n| {
        let (client, url, token, acknowledged) = (
            burst_client.clone(),
            burst_url.clone(),
            token.clone(),
            counter.clone(),
        );
        async move {
            let response = client
                .post(&url)
                .header("authorization", format!("JWT {token}"))
                .json(&serde_json::json!({ "body": format!("write {n}") }))
                .send()
                .await
                .ok()?;
            if response.status() != 201 {
                return None;
            }
            let note: serde_json::Value = response.json().await.ok()?;
            acknowledged.fetch_add(1, Ordering::SeqCst);
            note["id"].as_i64()
        }
    });
    let burst = tokio::spawn(futures_util::StreamExt::collect::<Vec<_>>(
        futures_util::StreamExt::buffer_unordered(futures_util::stream::iter(writes), 32),
    ));
    while acknowledged.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.terminate();
    let acked: Vec<i64> = burst.await.unwrap().into_iter().flatten().collect();
    let (status, _) = server.exited().await;
    assert!(status.success(), "{status}");
    assert!(
        acked.len() >= 40 && acked.len() < 400,
        "{} writes acknowledged",
        acked.len()
    );

    let stored: Vec<i64> = all_notes(&app, &tenant, NOTES)
        .await
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "acknowledged note {id} is missing");
    }
}

#[tokio::test]
async fn no_secret_or_token_reaches_the_logs_even_at_debug_level() {
    use serde_json::json;

    let app = TestApp::postgres().await;
    let server = ServerProcess::start(&[
        ("DATABASE_URL", &app.database_url),
        ("BASE_URL", BASE_URL),
        ("INSTALL_KEYS_URL", &app.keys.url),
        ("RUST_LOG", "debug"),
        ("LOG_FORMAT", "json"),
    ])
    .await;
    let base = server.url.clone();
    let client = reqwest::Client::new();
    let tenant = TestTenant::new("secretive");
    let install = install_token(&tenant, "/installed", json!({}));
    let response = client
        .post(format!("{base}/installed"))
        .header("authorization", format!("JWT {install}"))
        .json(&tenant.payload("installed"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let mut replayed = tenant.payload("installed");
    replayed["sharedSecret"] = "an-attackers-secret".into();
    let replay = client
        .post(format!("{base}/installed"))
        .header("authorization", format!("JWT {install}"))
        .json(&replayed)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 409);
    let header_token = tenant.token("POST", NOTES);
    let created = client
        .post(format!("{base}{NOTES}"))
        .header("authorization", format!("JWT {header_token}"))
        .json(&json!({ "body": "note" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let context_token = tenant.context_token("PROJ-1");
    let by_context = client
        .get(format!("{base}{NOTES}"))
        .header("authorization", format!("JWT {context_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_context.status(), 200);
    let session = by_context.headers()["x-acpt"].to_str().unwrap().to_owned();
    let query_token = tenant.token("GET", NOTES);
    let listed = client
        .get(format!("{base}{NOTES}?jwt={query_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let forged = format!("{}x", tenant.token("GET", NOTES));
    let refused = client
        .get(format!("{base}{NOTES}"))
        .header("authorization", format!("JWT {forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let (_, logs) = server.stop().await;
    assert!(
        logs.contains("installed tenant secretive-client-key"),
        "the logs were captured"
    );
    for (what, secret) in [
        ("sharedSecret", tenant.secret.as_str()),
        ("replayed sharedSecret", "an-attackers-secret"),
        ("secrets key", secrets_key()),
        ("install token", install.as_str()),
        ("header token", header_token.as_str()),
        ("query token", query_token.as_str()),
        ("context token", context_token.as_str()),
        ("session token", session.as_str()),
        ("forged token", forged.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} is in the logs");
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            signature.len() < 8 || !logs.contains(signature),
            "the {what}'s signature is in the logs"
        );
    }
}
