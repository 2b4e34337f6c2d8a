//! The check of the guide's "Build your own app" (docs/guide/build-an-app.md): runs the app's
//! binary (the first argument) on an SQLite file and on a fresh Postgres database, installs two
//! sites through signed installs, and checks tenant isolation, request ids, the JSON 401, the
//! metrics and a restart.

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use connect_axum_testing::site::{KeyServer, Site, TestTenant};
use connect_axum_testing::store::{TestDb, admin_url, secrets_key};
use serde_json::{Value, json};

const BASE_URL: &str = "https://bookmarks.example.com";
const METRICS_TOKEN: &str = "own-app-metrics-token";

type Checked<T = ()> = Result<T, String>;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(binary) = std::env::args().nth(1) else {
        eprintln!("usage: own-app <path to the app's binary>");
        return ExitCode::from(2);
    };
    let sqlite = TestDb::sqlite();
    let postgres = TestDb::postgres(&admin_url()).await;
    for (store, url) in [("sqlite", &sqlite.1), ("postgres", &postgres.1)] {
        match check(&binary, url).await {
            Ok(()) => println!("own app on {store}: ok"),
            Err(e) => {
                eprintln!("own app on {store}: FAILED: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

async fn check(binary: &str, database_url: &str) -> Checked {
    let keys = KeyServer::start().await;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let site = Site {
        app_key: "bookmarks-example".to_owned(),
        app_base_url: BASE_URL.to_owned(),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let server = Server::start(binary, database_url, &keys.url, dir.path())?;
    server.ready(&http).await?;
    let (a, b) = (site.tenant("a"), site.tenant("b"));
    for tenant in [&a, &b] {
        let installed = http
            .post(format!("{}/installed", server.url))
            .header(
                "authorization",
                format!("JWT {}", tenant.install_token("/installed", json!({}))),
            )
            .json(&tenant.payload("installed"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        expect(installed.status().as_u16(), 204, "a signed install")?;
    }
    for (tenant, url) in [(&a, "https://a.example/1"), (&b, "https://b.example/1")] {
        let created = call(&http, &server, tenant, "POST", Some(json!({ "url": url }))).await?;
        expect(created.0, 201, "POST /api/bookmarks")?;
        expect(created.1["url"].clone(), json!(url), "the created bookmark")?;
    }
    let listed = call(&http, &server, &a, "GET", None).await?;
    expect(listed.0, 200, "GET /api/bookmarks")?;
    expect(
        listed.1,
        json!([{ "url": "https://a.example/1" }]),
        "site a's bookmarks",
    )?;
    let listed = call(&http, &server, &b, "GET", None).await?;
    expect(
        listed.1,
        json!([{ "url": "https://b.example/1" }]),
        "site b's bookmarks",
    )?;
    let context = http
        .get(format!("{}/api/bookmarks", server.url))
        .header(
            "authorization",
            format!("JWT {}", b.context_token("PROJ-1")),
        )
        .send()
        .await
        .map_err(|e| e.to_string())?;
    expect(context.status().as_u16(), 200, "a context token")?;
    let anonymous = http
        .get(format!("{}/api/bookmarks", server.url))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    expect(anonymous.status().as_u16(), 401, "no token")?;
    let body: Value = anonymous.json().await.map_err(|e| e.to_string())?;
    expect(
        body["error"].clone(),
        json!("missing_token"),
        "the 401's reason",
    )?;
    let metrics = http
        .get(format!("{}/metrics", server.url))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    if !metrics.contains("/api/bookmarks") {
        return Err(format!(
            "/metrics does not count /api/bookmarks:\n{metrics}"
        ));
    }
    if database_url.starts_with("postgres") {
        use sqlx::Connection as _;
        let mut db = sqlx::PgConnection::connect(database_url)
            .await
            .map_err(|e| e.to_string())?;
        let (forced,): (bool,) =
            sqlx::query_as("select relforcerowsecurity from pg_class where relname = 'bookmark'")
                .fetch_one(&mut db)
                .await
                .map_err(|e| e.to_string())?;
        expect(forced, true, "row-level security forced on bookmark")?;
    }
    server.stop()?;
    let again = Server::start(binary, database_url, &keys.url, dir.path())?;
    again.ready(&http).await?;
    let listed = call(&http, &again, &a, "GET", None).await?;
    expect(
        listed.1,
        json!([{ "url": "https://a.example/1" }]),
        "after a restart",
    )?;
    again.stop()
}

/// `method /api/bookmarks` as `tenant`; checks the response carries a request id.
async fn call(
    http: &reqwest::Client,
    server: &Server,
    tenant: &TestTenant,
    method: &str,
    body: Option<Value>,
) -> Checked<(u16, Value)> {
    let target = "/api/bookmarks";
    let mut request = http
        .request(
            method.parse().map_err(|_| "a method".to_owned())?,
            format!("{}{target}", server.url),
        )
        .header(
            "authorization",
            format!("JWT {}", tenant.token(method, target)),
        );
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if response.headers().get("x-request-id").is_none() {
        return Err(format!("{method} {target} has no x-request-id"));
    }
    let status = response.status().as_u16();
    let body = response.json().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

fn expect<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Checked {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// The app's binary, serving on a free loopback port.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(
        binary: &str,
        database_url: &str,
        keys_url: &str,
        dir: &std::path::Path,
    ) -> Checked<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(binary)
            .current_dir(dir)
            .env("PORT", port.to_string())
            .env("BASE_URL", BASE_URL)
            .env("DATABASE_URL", database_url)
            .env("INSTALL_KEYS_URL", keys_url)
            .env("SECRETS_KEY", secrets_key())
            .env("METRICS_TOKEN", METRICS_TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("{binary} does not start: {e}"))?;
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn ready(&self, http: &reqwest::Client) -> Checked {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let answer = http.get(format!("{}/readyz", self.url)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("{} did not become ready", self.url))
    }

    fn stop(mut self) -> Checked {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        let status = self.child.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the app exited with {status} on SIGTERM"))
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
