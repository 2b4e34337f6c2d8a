//! What one tenant may hold and send, against the real server over TCP: its slow authenticated
//! bodies take only its share of the slots and end at the body deadline, through both doors, so
//! other tenants stay served; its users' writes are rate limited, its reads and the product's
//! own calls are not. On both stores.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use connect_axum_testing::FakeForge;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::probe::{TestApp, TestTenant};

const APP_ARI: &str = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-0000000000d1";
const ECHO: &str = "/api/probe/echo";

async fn start(postgres: bool, settings: &[(&'static str, &str)]) -> (TestApp, FakeForge) {
    let forge = FakeForge::start(APP_ARI, &[0]).await;
    let under_test = connect_axum_testing::AppUnderTest::new(crate::probe::app);
    let settings = settings.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let app = crate::probe::start_trusting(under_test, postgres, &forge, settings).await;
    (app, forge)
}

/// A JSON POST to `path` with `authorization` that announces 1000 bytes of body and sends six.
async fn stalled_post(addr: SocketAddr, path: &str, authorization: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: app\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"a\":\""
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Reads one HTTP/1.1 response with a JSON body: its status and its `error`.
async fn error_of(stream: &mut TcpStream) -> (u16, String) {
    let mut read = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        read.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&read);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|line| line.strip_prefix("content-length:").map(str::to_owned))
                .map_or(0, |v| v.trim().parse().unwrap());
            if body.len() >= length {
                let status = head[9..12].parse().unwrap();
                let body: Value = serde_json::from_str(&body[..length]).unwrap_or(Value::Null);
                return (status, body["error"].as_str().unwrap_or("").to_owned());
            }
        }
        assert!(n > 0, "closed before a response: {text:?}");
    }
}

/// Starts `n` stalled posts; answers each with what it got and after how long.
fn stall(addr: SocketAddr, path: &str, authorization: &str, n: usize) -> JoinSet<(u16, String)> {
    let mut stalls = JoinSet::new();
    for _ in 0..n {
        let (path, authorization) = (path.to_owned(), authorization.to_owned());
        stalls.spawn(async move {
            let mut stream = stalled_post(addr, &path, &authorization).await;
            error_of(&mut stream).await
        });
    }
    stalls
}

/// Waits for `n` of `stalls` to be answered, at most `within`.
async fn answered(
    stalls: &mut JoinSet<(u16, String)>,
    n: usize,
    within: Duration,
) -> Vec<(u16, String)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let next = tokio::time::timeout(within, stalls.join_next())
            .await
            .expect("answered in time");
        got.push(next.unwrap().unwrap());
    }
    got.sort();
    got
}

fn busy(n: usize) -> Vec<(u16, String)> {
    vec![(429, "tenant_busy".to_owned()); n]
}

fn timed_out(n: usize) -> Vec<(u16, String)> {
    vec![(408, "body_timeout".to_owned()); n]
}

async fn one_tenants_slow_bodies_hold_only_its_share_and_end_at_the_body_deadline(postgres: bool) {
    let (app, forge) = start(
        postgres,
        &[
            ("MAX_CONCURRENT_REQUESTS", "8"),
            ("MAX_CONCURRENT_REQUESTS_PER_TENANT", "3"),
            ("BODY_READ_TIMEOUT_SECS", "1"),
            ("REQUEST_TIMEOUT_SECS", "25"),
        ],
    )
    .await;
    let (attacker, other) = (app.install("attacker").await, app.install("other").await);
    let addr = app.serve_tcp().await;
    let started = Instant::now();

    // Any user of the attacker's site has a context token: more slow bodies than its share.
    let token = format!("JWT {}", attacker.context_token("PROJ-1"));
    let mut stalls = stall(addr, ECHO, &token, 7);
    assert_eq!(
        answered(&mut stalls, 4, Duration::from_secs(5)).await,
        busy(4),
        "beyond its share, refused at once"
    );
    // Three of the attacker's requests hold slots: every other tenant is served meanwhile.
    let client = reqwest::Client::new();
    for _ in 0..4 {
        let listed = client
            .get(format!("http://{addr}/api/probe"))
            .header(
                "authorization",
                format!("JWT {}", other.context_token("PROJ-1")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200);
    }
    assert_eq!(
        answered(&mut stalls, 3, Duration::from_secs(5)).await,
        timed_out(3),
        "the slow bodies end at the body deadline"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not at the request timeout"
    );
    // Its slots are given back.
    let again = app.signed(&attacker, "GET", "/api/probe", None).await;
    assert_eq!(again.status, StatusCode::OK);

    // The Forge door: a user's FIT and a slow body, the same share and the same deadline.
    let site = forge.site("forge-attacker");
    let made = app
        .deliver(
            "/forge/events",
            &forge.trigger(&site).sign(),
            None,
            &json!({ "eventType": "avi:forge:installed:app" }),
        )
        .await;
    assert_eq!(made.status, StatusCode::OK);
    let fit = format!("Bearer {}", forge.fit_on(&site).sign());
    let mut stalls = stall(addr, "/forge/echo", &fit, 5);
    assert_eq!(
        answered(&mut stalls, 2, Duration::from_secs(5)).await,
        busy(2)
    );
    assert_eq!(
        answered(&mut stalls, 3, Duration::from_secs(5)).await,
        timed_out(3)
    );
}

async fn a_sites_users_writes_are_rate_limited_and_its_reads_and_the_products_calls_are_not(
    postgres: bool,
) {
    let (app, _forge) = start(postgres, &[("TENANT_WRITE_RATE_LIMIT", "2")]).await;
    let (a, b) = (app.install("a").await, app.install("b").await);
    let body = json!({ "note": "x" });
    let write = |tenant: &TestTenant| {
        let token = tenant.context_token("PROJ-1");
        let app = &app;
        let body = body.clone();
        async move { app.call("POST", ECHO, Some(&token), Some(&body)).await }
    };
    // Bursts of twice the rate, then 429 with Retry-After.
    for _ in 0..4 {
        assert_eq!(write(&a).await.status, StatusCode::OK);
    }
    let refused = write(&a).await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
    // Another tenant's users are not held back, nor the tenant's reads, nor the product's calls.
    assert_eq!(write(&b).await.status, StatusCode::OK);
    for _ in 0..10 {
        let read = app
            .call("GET", "/api/probe", Some(&a.context_token("PROJ-1")), None)
            .await;
        assert_eq!(read.status, StatusCode::OK);
        let product = app
            .call("POST", ECHO, Some(&a.token("POST", ECHO)), Some(&body))
            .await;
        assert_eq!(product.status, StatusCode::OK);
    }
}

crate::probe::on_both_stores!(
    postgres: bool,
    one_tenants_slow_bodies_hold_only_its_share_and_end_at_the_body_deadline,
    a_sites_users_writes_are_rate_limited_and_its_reads_and_the_products_calls_are_not,
);
