//! End to end in headless Chromium: the issue panel inside a stand-in for Jira's issue view,
//! whose `all.js` stub hands out a context token when the panel asks for one.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test says so and passes,
//! unless `CONNECT_AXUM_BROWSER_TESTS=require` (as `.ci/run` sets), where their absence fails it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The context token the stub of `AP.context.getToken()` hands out.
type ContextToken = Arc<Mutex<String>>;

/// The product's side: its `all.js` (a stub whose `AP.context.getToken()` hands out the token in
/// `context_token`, counting calls) and an issue view that frames the panel.
fn fake_jira(context_token: ContextToken) -> Router {
    Router::new()
        .route(
            "/atlassian-connect/all.js",
            get(|State(token): State<ContextToken>| async move {
                let token = serde_json::to_string(&*token.lock().unwrap()).unwrap();
                (
                    [("content-type", "application/javascript")],
                    format!(
                        "window.AP = {{ resize() {{ window.AP.resized = (window.AP.resized || 0) + 1; }}, \
                         context: {{ getToken(callback) {{ window.AP.tokens = (window.AP.tokens || 0) + 1; \
                         setTimeout(() => callback({token}), 0); }} }} }};"
                    ),
                )
            }),
        )
        .route(
            "/browse/PROJ-1",
            get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let src = html_escape::encode_double_quoted_attribute(&q["panel"]).into_owned();
                Html(format!(
                    "<!doctype html><title>PROJ-1</title><h1>PROJ-1: a Jira issue</h1>\
                     <iframe id=\"panel\" src=\"{src}\" width=\"640\" height=\"420\"></iframe>"
                ))
                .into_response()
            }),
        )
        .with_state(context_token)
}

async fn start_driver() -> (Driver, Client) {
    // The test binary links two rustls backends; the WebDriver client must be told which.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let profile = tempfile::tempdir().unwrap().keep();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=900,700",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    for _ in 0..100 {
        if let Ok(client) = ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            return (driver, client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer");
}

/// Opens the issue view for `tenant` and switches into the panel once it has loaded.
async fn open_panel(client: &Client, jira: SocketAddr, app: SocketAddr, tenant: &TestTenant) {
    let target = "/issue-notes?issueKey=PROJ-1&xdm_e=x&cp=&lic=none";
    let panel = format!("http://{app}{target}&jwt={}", tenant.token("GET", target));
    let view =
        url::Url::parse_with_params(&format!("http://{jira}/browse/PROJ-1"), [("panel", panel)])
            .unwrap();
    client.goto(view.as_str()).await.unwrap();
    let frame = client
        .wait()
        .for_element(Locator::Id("panel"))
        .await
        .unwrap();
    frame.enter_frame().await.unwrap();
    client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#notes-app[data-state='ready']"))
        .await
        .unwrap();
}

/// Types `text` into the panel's form and submits it.
async fn add_note(client: &Client, text: &str) {
    client
        .find(Locator::Id("note-body"))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
    client
        .find(Locator::Css("#add-note button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn status(client: &Client) -> String {
    client
        .find(Locator::Id("status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn count(client: &Client, css: &str) -> usize {
    client.find_all(Locator::Css(css)).await.unwrap().len()
}

/// Waits (at most 15 s) until the page's JavaScript `condition` holds.
async fn wait_until(client: &Client, condition: &str) {
    let started = Instant::now();
    let script = format!("return Boolean({condition})");
    while client.execute(&script, vec![]).await.unwrap() != json!(true) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never true: {condition}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the browser test can run; panics when it must and cannot.
fn browser_available() -> bool {
    let required = std::env::var("CONNECT_AXUM_BROWSER_TESTS").is_ok_and(|v| v == "require");
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        assert!(
            !required,
            "chromium and chromium-driver are required (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipped: install chromium and chromium-driver to run the browser test");
        return false;
    }
    true
}

async fn screenshot(client: &Client, name: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.unwrap();
    std::fs::write(dir.join(name), png).unwrap();
    eprintln!("screenshot: {}", dir.join(name).display());
}

#[tokio::test]
async fn a_note_added_in_the_panel_is_listed_there_and_not_in_another_sites_panel() {
    if !browser_available() {
        return;
    }
    let jira = serve(fake_jira(ContextToken::default())).await;
    let app =
        TestApp::sqlite_with(|name| (name == "ALLOWED_BASE_URLS").then(|| "127.0.0.1".to_owned()))
            .await;
    let app_addr = serve(app.router.clone()).await;
    let mut a = TestTenant::new("a");
    a.base_url = format!("http://{jira}");
    let a = app.install_tenant(a).await;
    let mut b = TestTenant::new("b");
    b.base_url = format!("http://{jira}");
    let b = app.install_tenant(b).await;

    let (_driver, client) = start_driver().await;
    open_panel(&client, jira, app_addr, &a).await;
    assert_eq!(status(&client).await, "No notes yet.");
    let text = "Héllo from the panel <b>not bold</b> & done";
    add_note(&client, text).await;
    let note = client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("li.note p.body"))
        .await
        .unwrap();
    assert_eq!(
        note.text().await.unwrap(),
        text,
        "the note shows as text, not HTML"
    );
    assert_eq!(count(&client, "li.note b").await, 0);
    assert_eq!(status(&client).await, "1 note");
    let resized = client
        .execute("return window.AP.resized || 0", vec![])
        .await
        .unwrap();
    assert!(
        resized.as_u64().unwrap_or(0) >= 1,
        "the panel used the product's all.js"
    );
    screenshot(&client, "panel-tenant-a.png").await;

    let stored = app
        .signed(&a, "GET", "/api/issues/PROJ-1/notes", None)
        .await
        .json()["notes"]
        .clone();
    assert_eq!(stored[0]["body"], text);

    open_panel(&client, jira, app_addr, &b).await;
    assert_eq!(count(&client, "li.note").await, 0);
    assert_eq!(status(&client).await, "No notes yet.");
    screenshot(&client, "panel-tenant-b.png").await;
    client.close().await.unwrap();
}

#[tokio::test]
async fn the_panel_deletes_only_the_users_own_notes_and_outlives_its_session_with_a_context_token()
{
    if !browser_available() {
        return;
    }
    let context_token = ContextToken::default();
    let jira = serve(fake_jira(context_token.clone())).await;
    let app =
        TestApp::sqlite_with(|name| (name == "ALLOWED_BASE_URLS").then(|| "127.0.0.1".to_owned()))
            .await;
    let app_addr = serve(app.router.clone()).await;
    let mut a = TestTenant::new("a");
    a.base_url = format!("http://{jira}");
    let a = app.install_tenant(a).await;
    let notes = "/api/issues/PROJ-1/notes";
    let theirs =
        a.token_with(json!({ "qsh": qsh_of("POST", notes), "sub": "557058:someone-else" }));
    let created = app
        .call(
            "POST",
            notes,
            Some(&theirs),
            Some(&json!({ "body": "someone else's" })),
        )
        .await;
    assert_eq!(created.status, axum::http::StatusCode::CREATED);
    *context_token.lock().unwrap() = a.context_token("PROJ-1");

    let (_driver, client) = start_driver().await;
    open_panel(&client, jira, app_addr, &a).await;
    assert_eq!(status(&client).await, "1 note");
    assert_eq!(
        count(&client, "li.note button.delete").await,
        0,
        "not the user's note"
    );
    add_note(&client, "mine").await;
    wait_until(&client, "document.querySelectorAll('li.note').length === 2").await;
    assert_eq!(count(&client, "li.note button.delete").await, 1);

    // The session's chain has run out: the panel gets a context token from the product instead.
    let ended = hs256(
        &json!({ "iss": APP_KEY, "aud": a.client_key, "sub": "557058:account-id",
            "iat": now(), "exp": now() + 900, "qsh": "context-qsh", "auth_time": now() - 9 * 3600,
            "context": { "jira": { "issue": { "key": "PROJ-1" } } } }),
        &a.secret,
    );
    client
        .execute(
            "document.getElementById('notes-app').dataset.token = arguments[0]",
            vec![json!(ended)],
        )
        .await
        .unwrap();
    client
        .find(Locator::Css("li.note button.delete"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(
        &client,
        "document.querySelectorAll('li.note').length === 1 && document.getElementById('notes-app').dataset.state === 'ready'",
    )
    .await;
    assert_eq!(status(&client).await, "1 note");
    let remaining = client
        .find(Locator::Css("li.note p.body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(remaining, "someone else's");
    let asked = client
        .execute("return window.AP.tokens || 0", vec![])
        .await
        .unwrap();
    assert_eq!(
        asked,
        json!(1),
        "one context token replaced the ended session"
    );
    let renewed = client
        .execute(
            "return document.getElementById('notes-app').dataset.token",
            vec![],
        )
        .await
        .unwrap();
    assert_ne!(
        renewed,
        json!(ended),
        "the answer's renewed session token is kept"
    );
    screenshot(&client, "panel-own-notes.png").await;
    client.close().await.unwrap();
}

#[tokio::test]
async fn the_panel_lists_every_note_of_an_issue_across_pages() {
    if !browser_available() {
        return;
    }
    let jira = serve(fake_jira(ContextToken::default())).await;
    let app =
        TestApp::sqlite_with(|name| (name == "ALLOWED_BASE_URLS").then(|| "127.0.0.1".to_owned()))
            .await;
    let app_addr = serve(app.router.clone()).await;
    let mut a = TestTenant::new("a");
    a.base_url = format!("http://{jira}");
    let a = app.install_tenant(a).await;
    // More than the panel's page of 100.
    for i in 1..=105 {
        let created = app
            .signed(
                &a,
                "POST",
                "/api/issues/PROJ-1/notes",
                Some(&json!({ "body": format!("note {i}") })),
            )
            .await;
        assert_eq!(created.status, axum::http::StatusCode::CREATED);
    }

    let (_driver, client) = start_driver().await;
    open_panel(&client, jira, app_addr, &a).await;
    assert_eq!(status(&client).await, "105 notes");
    let bodies = client
        .execute(
            "return [...document.querySelectorAll('li.note p.body')].map((p) => p.textContent)",
            vec![],
        )
        .await
        .unwrap();
    let expected: Vec<String> = (1..=105).map(|i| format!("note {i}")).collect();
    assert_eq!(bodies, json!(expected), "each note once, oldest first");
    client.close().await.unwrap();
}
