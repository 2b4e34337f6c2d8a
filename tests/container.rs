//! The sample as a Forge Container, end to end: the server binary started as Forge starts it,
//! with Forge's variable alone (`FORGE_EGRESS_PROXY_URL`), as UID/GID 1000 when the test runs as
//! root (as the image's user), in a folder it cannot write; its sidecar the testing kit's
//! `FakeSidecar`, with Forge SQL over MariaDB. Two installations each list, add and delete only
//! their own notes, in their own databases; every call out carried the right
//! `forge-proxy-authorization`; and the process wrote no file.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::time::Duration;

use connect_axum::protocol::egress::{ProxyAuthorization, ProxyScope};
use connect_axum_testing::FakeSidecar;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::Command;

/// The user the image runs as.
const IMAGE_UID: u32 = 1000;

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

struct Server {
    child: tokio::process::Child,
    url: String,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// Starts the binary as the container would be started; its stdout lines arrive on `lines`.
async fn start(sidecar: &FakeSidecar, dir: &std::path::Path) -> Server {
    let port = free_port();
    let binary = env!("CARGO_BIN_EXE_connect-axum");
    let mut command = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={IMAGE_UID}"),
            &format!("--regid={IMAGE_UID}"),
            "--clear-groups",
            binary,
        ]);
        c
    } else {
        Command::new(binary)
    };
    let mut child = command
        .current_dir(dir)
        .env_clear()
        .env("FORGE_EGRESS_PROXY_URL", &sidecar.url)
        .env("SERVER_PORT", port.to_string())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the server starts");
    let stdout = child.stdout.take().expect("piped");
    let (send, lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = send.send(line);
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await
            && r.status() == 200
        {
            return Server { child, url, lines };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the container did not pass its health check in 30 s");
}

/// A request as the sidecar's ingress forwards it: the invocation id, no token.
async fn invoke(
    server: &Server,
    id: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", server.url));
    if let Some(id) = id {
        request = request
            .header("x-forge-invocation-id", id)
            .header("x-forge-invocation-log-attributes", "eyJ0ZXN0Ijp0cnVlfQ==");
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn the_sample_runs_as_a_forge_container_on_forge_sql_and_writes_nothing() {
    let sidecar = FakeSidecar::start().await;
    let dir = tempfile::tempdir().expect("a folder");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let marker = dir
        .path()
        .parent()
        .unwrap()
        .join(format!("container-test-{}.marker", std::process::id()));
    std::fs::write(&marker, b"").unwrap();
    let mut server = start(&sidecar, dir.path()).await;

    // Only the sidecar's invocations are served.
    let (status, body) = invoke(
        &server,
        None,
        reqwest::Method::GET,
        "/forge/api/issues/PROJ-1/notes",
        None,
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("missing_invocation_id")),
        "{body}"
    );

    let (acme, globex) = (sidecar.site("acme"), sidecar.site("globex"));
    let mut ids = Vec::new();
    let mut invocation = |site, account: &str| {
        let id = sidecar.invocation(FakeSidecar::user_context(site, account, "PROJ-1"));
        ids.push(id.clone());
        id
    };
    let (alice, bob) = (
        invocation(&acme, "557058:alice"),
        invocation(&globex, "557058:bob"),
    );
    let notes = "/forge/api/issues/PROJ-1/notes";
    let post = |id: String, body: &'static str| {
        let server = &server;
        async move {
            invoke(
                server,
                Some(&id),
                reqwest::Method::POST,
                notes,
                Some(json!({ "body": body })),
            )
            .await
        }
    };
    let (status, a1) = post(alice.clone(), "acme's first").await;
    assert_eq!(status, 201, "{a1}");
    let (status, a2) = post(alice.clone(), "acme's second").await;
    assert_eq!(status, 201, "{a2}");
    let (status, b1) = post(bob.clone(), "globex's note").await;
    assert_eq!(status, 201, "{b1}");
    // Each installation numbers its own notes.
    assert_eq!(
        (&a1["id"], &a2["id"], &b1["id"]),
        (&json!(1), &json!(2), &json!(1))
    );
    let bodies = |page: &Value| -> Vec<Value> {
        page["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["body"].clone())
            .collect()
    };
    // Issue keys repeat across sites: each sees only its own PROJ-1 notes.
    let (status, page) = invoke(&server, Some(&alice), reqwest::Method::GET, notes, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        bodies(&page),
        [json!("acme's first"), json!("acme's second")]
    );
    let (_, page) = invoke(&server, Some(&bob), reqwest::Method::GET, notes, None).await;
    assert_eq!(bodies(&page), [json!("globex's note")]);
    // A note of another site is as absent as a missing one, and stays.
    let a2_path = format!("{notes}/2");
    let (status, _) = invoke(&server, Some(&bob), reqwest::Method::DELETE, &a2_path, None).await;
    assert_eq!(status, 404);
    let (status, _) = invoke(
        &server,
        Some(&alice),
        reqwest::Method::DELETE,
        &a2_path,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, page) = invoke(&server, Some(&alice), reqwest::Method::GET, notes, None).await;
    assert_eq!(bodies(&page), [json!("acme's first")]);
    let (_, page) = invoke(&server, Some(&bob), reqwest::Method::GET, notes, None).await;
    assert_eq!(bodies(&page), [json!("globex's note")]);

    // Each installation's notes are in its own database.
    for (site, kept) in [(&acme, "acme's first"), (&globex, "globex's note")] {
        let rows = sidecar
            .sql()
            .rows(&site.installation_id, "SELECT body FROM note")
            .await;
        assert_eq!(rows, [json!({ "body": kept })], "{}", site.name);
    }

    // Every call out named one of the invocations the sidecar made, and nothing else.
    let headers = sidecar.authorizations();
    assert!(!headers.is_empty());
    for header in &headers {
        let parsed = ProxyAuthorization::parse(header).unwrap_or_else(|_| panic!("{header}"));
        match parsed.scope {
            ProxyScope::Invocation(id) => assert!(ids.contains(&id), "{header}"),
            ProxyScope::Installation(_) => {
                panic!("an installation header within an invocation: {header}")
            }
        }
    }

    // SIGTERM: the server finishes and exits cleanly.
    let pid = server.child.id().expect("running") as i32;
    assert_eq!(unsafe_free_kill(pid), 0);
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("the server stops within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    // Its log lines are Forge's: flat JSON with the invocation's attributes.
    let mut lines = Vec::new();
    while let Ok(line) = server.lines.try_recv() {
        lines.push(line);
    }
    let logged: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(
        logged
            .iter()
            .any(|l| l["forge_invocation"] == "eyJ0ZXN0Ijp0cnVlfQ==" && l["msg"].is_string()),
        "{lines:?}"
    );

    // Nothing written: not in its folder, and (as UID 1000) nowhere on the machine.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    if is_root() {
        let found = std::process::Command::new("find")
            .args(["/", "-xdev", "-user", &IMAGE_UID.to_string(), "-newer"])
            .arg(&marker)
            .args(["-not", "-path", "/proc/*"])
            .output()
            .expect("find runs");
        let found = String::from_utf8_lossy(&found.stdout);
        assert!(found.trim().is_empty(), "written by the container: {found}");
    }
    let _ = std::fs::remove_file(&marker);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    sidecar.sql().cleanup().await;
}

/// Sends SIGTERM to `pid` with the `kill` command (the crate forbids unsafe code).
fn unsafe_free_kill(pid: i32) -> i32 {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(1))
        .unwrap_or(1)
}
