//! Slow and anonymous clients against the real server over TCP: they cannot take the slots that
//! verified tenants and health checks need, a bad header token is refused before its body is
//! waited for, and a connection that never finishes its headers is closed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::helpers::*;

const NOTES: &str = "/api/issues/PROJ-1/notes";

/// Opens a connection and sends the head of a form POST to the notes API, announcing 1000 bytes of
/// body, then `body` and no more.
async fn stalled_form_post(addr: SocketAddr, extra_headers: &str, body: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {NOTES} HTTP/1.1\r\nHost: app\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\
         {extra_headers}\r\n{body}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Reads one HTTP/1.1 response with a JSON body: its status and body.
async fn response(stream: &mut TcpStream) -> (u16, Value) {
    let mut read = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&read)
        );
        read.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&read[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while read.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed in the middle of the body");
        read.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&read[head_end..head_end + length]).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn slow_anonymous_form_posts_leave_health_checks_and_verified_tenants_served() {
    let app = TestApp::sqlite_with(|name| {
        match name {
            "MAX_CONCURRENT_REQUESTS" => Some("4"),
            "MAX_ANONYMOUS_REQUESTS" => Some("2"),
            "REQUEST_TIMEOUT_SECS" => Some("6"),
            _ => None,
        }
        .map(str::to_owned)
    })
    .await;
    let tenant = app.install("busy").await;
    let addr = app.serve_tcp().await;

    // More stalled form posts without a token than the server has slots of either kind.
    let mut stalls = JoinSet::new();
    for _ in 0..6 {
        let mut stream = stalled_form_post(addr, "", "body=sl").await;
        stalls.spawn(async move { response(&mut stream).await });
    }
    for _ in 0..4 {
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), stalls.join_next())
            .await
            .expect("all but two of the stalled posts are refused at once")
            .unwrap()
            .unwrap();
        assert_eq!((status, body["error"].as_str()), (503, Some("overloaded")));
    }

    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let listed = client
        .get(format!("{base}{NOTES}"))
        .header(
            "authorization",
            format!("JWT {}", tenant.token("GET", NOTES)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(listed.json::<Value>().await.unwrap()["notes"], json!([]));
    let created = client
        .post(format!("{base}{NOTES}"))
        .header(
            "authorization",
            format!("JWT {}", tenant.token("POST", NOTES)),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body("body=still+served")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // The two stalled posts still hold the anonymous slots.
    let descriptor = client
        .get(format!("{base}/atlassian-connect.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(descriptor.status(), 503);

    while let Some(stalled) = stalls.join_next().await {
        let (status, body) = stalled.unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (408, Some("request_timeout"))
        );
    }
    let descriptor = client
        .get(format!("{base}/atlassian-connect.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(descriptor.status(), 200, "the slots are given back");
}

#[tokio::test]
async fn a_form_post_with_a_bad_header_token_is_refused_without_waiting_for_its_body() {
    let app = TestApp::sqlite().await;
    let tenant = app.install("a").await;
    let addr = app.serve_tcp().await;
    let forged = hs256(
        &json!({ "iss": tenant.client_key, "exp": now() + 60, "qsh": qsh_of("POST", NOTES) }),
        "not-the-shared-secret",
    );
    let mut stream = stalled_form_post(addr, &format!("Authorization: JWT {forged}\r\n"), "").await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), response(&mut stream))
        .await
        .expect("refused before the body that never comes");
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("bad_signature"))
    );
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_closed_after_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("slow.db").display());
    let server = ServerProcess::start(&[
        ("DATABASE_URL", &db),
        ("HEADER_READ_TIMEOUT_SECS", "1"),
        ("RUST_LOG", "warn"),
    ])
    .await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: app\r\n")
        .await
        .unwrap();
    let silent = TcpStream::connect(&addr).await.unwrap();
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(response(&mut idle).await.0, 200);
    for (what, mut stream) in [("partial", partial), ("silent", silent), ("idle", idle)] {
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the {what} connection is still open");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after the timeout, not before: {:?}",
        started.elapsed()
    );
    let health = reqwest::get(format!("{}/healthz", server.url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
