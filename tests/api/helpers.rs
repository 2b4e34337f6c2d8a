//! The test harness: a fresh database per test, an RSA install-key server on loopback, and a
//! client that signs requests the way a Jira site does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::routing::get;
use connect_axum::app::AppState;
use connect_axum::auth::qsh;
use connect_axum::config::Config;
use connect_axum::store::{self, Keyring, StoreOptions, TenantStore};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// The app's public URL in tests.
pub const BASE_URL: &str = "https://app.example.com";
/// The key id the test key server publishes.
pub const KID: &str = "test-kid-1";
/// The descriptor's app key.
pub const APP_KEY: &str = "connect-axum-issue-notes";

/// Runs each named test, an `async fn name(app: TestApp)` beside the call, once on Postgres and
/// once on SQLite, as `name::postgres` and `name::sqlite`. Led by `#[multi_thread(vars = f)]`,
/// the tests run on a multi-threaded runtime, on apps configured by `f` (as in
/// [`TestApp::postgres_with`]).
#[macro_export]
macro_rules! on_both_stores {
    (#[multi_thread(vars = $vars:expr)] $($name:ident),+ $(,)?) => {$(
        mod $name {
            // `$vars` is written in the calling file and resolves there.
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                super::$name($crate::helpers::TestApp::postgres_with($vars).await).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                super::$name($crate::helpers::TestApp::sqlite_with($vars).await).await
            }
        }
    )+};
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn postgres() {
                super::$name($crate::helpers::TestApp::postgres().await).await
            }

            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::helpers::TestApp::sqlite().await).await
            }
        }
    )+};
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The install-signing key pair, made once per test process.
pub struct InstallKey {
    pub private_pem: String,
    pub public_pem: String,
}

pub fn install_key() -> &'static InstallKey {
    static KEY: OnceLock<InstallKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let private = RsaPrivateKey::new(&mut rand08::rngs::OsRng, 2048).unwrap();
        InstallKey {
            private_pem: private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            public_pem: private
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        }
    })
}

/// A key server on loopback publishing the test key under [`KID`].
pub struct KeyServer {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
}

impl KeyServer {
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let router = Router::new()
            .route("/{kid}", get(serve_key))
            .with_state(hits.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve_key(
    State(hits): State<Arc<AtomicUsize>>,
    Path(kid): Path<String>,
) -> Result<String, StatusCode> {
    hits.fetch_add(1, Ordering::SeqCst);
    if kid == KID {
        Ok(install_key().public_pem.clone())
    } else {
        Err(StatusCode::NOT_FOUND)
    }
}

/// A database made for one test and dropped after it.
enum TestDb {
    Postgres {
        admin_url: String,
        name: String,
    },
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    /// Another app's database, dropped with that app.
    Shared,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name } = self {
            admin_cleanup(
                admin_url,
                vec![format!(r#"drop database if exists "{name}" with (force)"#)],
            );
        }
    }
}

/// Runs `statements` on the Postgres server at `admin_url`, ignoring failures: the cleanup of a
/// test's databases and roles. Drop runs inside the test's runtime (which may be shutting
/// down), so the cleanup gets a runtime of its own.
pub fn admin_cleanup(admin_url: &str, statements: Vec<String>) {
    let admin_url = admin_url.to_owned();
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    for sql in statements {
                        let _ = admin.execute(sql.as_str()).await;
                    }
                }
            })
    })
    .join();
}

/// The Postgres server tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn unique_name() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "connect_axum_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        rand08::random::<u32>()
    )
}

/// The secrets key of this test process (base64), as an operator sets `SECRETS_KEY`.
pub fn secrets_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(rand08::random::<[u8; 32]>())
    })
}

pub fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::parse(secrets_key(), "").unwrap())
}

/// The store options of a test app on `database_url`: the defaults, with a pool of 5.
pub fn store_options(database_url: &str) -> StoreOptions {
    StoreOptions {
        database_url: database_url.to_owned(),
        migration_url: None,
        pool_size: 5,
        acquire_timeout: store::DEFAULT_ACQUIRE_TIMEOUT,
        tenant_cache_size: 1_000,
        keyring: keyring(),
        app_migrations: issue_notes::migrations(),
    }
}

/// `DB_POOL_SIZE` and `DB_ACQUIRE_TIMEOUT_MS` from `vars`, when set, as the binary reads them.
fn pool_vars(options: &mut StoreOptions, vars: &impl Fn(&str) -> Option<String>) {
    if let Some(size) = vars("DB_POOL_SIZE") {
        options.pool_size = size.parse().unwrap();
    }
    if let Some(ms) = vars("DB_ACQUIRE_TIMEOUT_MS") {
        options.acquire_timeout = std::time::Duration::from_millis(ms.parse().unwrap());
    }
}

/// The app under test, driven in-process through its router.
pub struct TestApp {
    pub database_url: String,
    pub router: Router,
    pub state: AppState,
    pub store: Arc<dyn TenantStore>,
    pub keys: KeyServer,
    _db: TestDb,
}

/// A tenant as the test site knows it.
#[derive(Clone, Debug)]
pub struct TestTenant {
    pub client_key: String,
    pub secret: String,
    pub base_url: String,
}

impl TestTenant {
    pub fn new(name: &str) -> Self {
        Self {
            client_key: format!("{name}-client-key"),
            secret: format!("{name}-secret-{}", rand08::random::<u64>()),
            base_url: format!("https://{name}.atlassian.net"),
        }
    }

    /// The cloud id of this site.
    pub fn cloud_id(&self) -> String {
        format!("cloud-{}", self.client_key)
    }

    /// The Forge installation id this site's installs carry.
    pub fn installation_id(&self) -> String {
        format!("ari:cloud:ecosystem::installation/{}", self.client_key)
    }

    /// The lifecycle payload this site sends for `event`.
    pub fn payload(&self, event: &str) -> Value {
        json!({
            "key": APP_KEY,
            "clientKey": self.client_key,
            "sharedSecret": self.secret,
            "baseUrl": self.base_url,
            "displayUrl": self.base_url,
            "productType": "jira",
            "description": "Atlassian JIRA at https://example.atlassian.net",
            "serviceEntitlementNumber": "SEN-1234",
            "serverVersion": "100217",
            "pluginsVersion": "1001.0.0-SNAPSHOT",
            "oauthClientId": "oauth-client",
            "eventType": event,
            "cloudId": self.cloud_id(),
            "installationId": self.installation_id()
        })
    }

    /// An HS256 token as the product signs it, bound to `method` and `target`.
    pub fn token(&self, method: &str, target: &str) -> String {
        self.token_with(json!({ "qsh": qsh_of(method, target) }))
    }

    /// A context token as the issue view of `issue_key` gets it from `AP.context.getToken()`.
    pub fn context_token(&self, issue_key: &str) -> String {
        self.token_with(json!({
            "qsh": "context-qsh",
            "context": { "jira": { "issue": { "key": issue_key, "id": "10000" } } },
        }))
    }

    /// An HS256 token with default claims overridden by `extra`.
    pub fn token_with(&self, extra: Value) -> String {
        let claims = json!({
            "iss": self.client_key,
            "iat": now(),
            "exp": now() + 180,
            "sub": "557058:account-id",
        });
        hs256(&with_overrides(claims, extra), &self.secret)
    }
}

pub fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The QSH of `target` (`/path?query`) relative to the app.
pub fn qsh_of(method: &str, target: &str) -> String {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    qsh::qsh(method, path, query, "")
}

/// `claims` with each claim of `extra` set, or removed where `extra` has it as null.
pub fn with_overrides(mut claims: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

/// A signed-install token for `tenant`, with default claims overridden by `extra`; each has a
/// `jti` of its own.
pub fn install_token(tenant: &TestTenant, path: &str, extra: Value) -> String {
    let claims = json!({
        "jti": format!("{:032x}", rand08::random::<u128>()),
        "iss": tenant.client_key,
        "aud": BASE_URL,
        "iat": now(),
        "exp": now() + 180,
        "qsh": qsh_of("POST", path),
    });
    rs256(&with_overrides(claims, extra), KID)
}

pub fn rs256(claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(install_key().private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// The server binary, run as a process on a free loopback port, its stdout collected.
pub struct ServerProcess {
    child: std::process::Child,
    logs: Option<std::thread::JoinHandle<String>>,
    /// `http://127.0.0.1:{port}`.
    pub url: String,
}

impl ServerProcess {
    /// Starts the binary with `env` on top of `PORT` and waits until `/readyz` answers 200.
    pub async fn start(env: &[(&str, &str)]) -> Self {
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
    pub fn terminate(&self) {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Waits (at most 15 s) for the process to exit; returns its status and everything it logged.
    pub async fn exited(mut self) -> (std::process::ExitStatus, String) {
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
    pub async fn stop(self) -> (std::process::ExitStatus, String) {
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

/// A response, read whole.
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a JSON error with `status` and reason `code`.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(
            (
                self.status,
                self.json()["error"].as_str().unwrap_or_default()
            ),
            (status, code),
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(self.headers[header::WWW_AUTHENTICATE], "JWT");
        }
    }
}

impl TestApp {
    pub async fn postgres() -> Self {
        Self::postgres_with(|_| None).await
    }

    pub async fn postgres_with(vars: impl Fn(&str) -> Option<String>) -> Self {
        Self::postgres_at(&admin_url(), vars).await
    }

    /// An app on a fresh database of the Postgres server at `admin_url`.
    pub async fn postgres_at(admin_url: &str, vars: impl Fn(&str) -> Option<String>) -> Self {
        Self::postgres_tuned(admin_url, |_| {}, vars).await
    }

    /// An app on a fresh database of the Postgres server at `admin_url`, its store opened with
    /// the [`store_options`] (and the pool variables of `vars`) that `tune` changes (a pool size,
    /// a URL through a proxy); `database_url` stays the database's own.
    pub async fn postgres_tuned(
        admin_url: &str,
        tune: impl FnOnce(&mut StoreOptions),
        vars: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let admin_url = admin_url.to_owned();
        let name = unique_name();
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("a Postgres server at TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres)");
        admin
            .execute(format!(r#"create database "{name}""#).as_str())
            .await
            .unwrap();
        admin.close().await.unwrap();
        let db = TestDb::Postgres {
            admin_url: admin_url.clone(),
            name: name.clone(),
        };
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&name);
        let mut options = store_options(url.as_str());
        pool_vars(&mut options, &vars);
        tune(&mut options);
        let store = store::connect(&options).await.unwrap();
        Self::build(url.to_string(), store, db, vars).await
    }

    pub async fn sqlite() -> Self {
        Self::sqlite_with(|_| None).await
    }

    pub async fn sqlite_with(vars: impl Fn(&str) -> Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let mut options = store_options(&url);
        pool_vars(&mut options, &vars);
        let store = store::connect(&options).await.unwrap();
        Self::build(url, store, TestDb::Sqlite(dir), vars).await
    }

    /// A second app (a replica, with its own store, tenant cache and key server) on this app's
    /// database, configured by `vars`; this app must outlive it.
    pub async fn replica_with(&self, vars: impl Fn(&str) -> Option<String>) -> Self {
        let mut options = store_options(&self.database_url);
        pool_vars(&mut options, &vars);
        let store = store::connect(&options).await.unwrap();
        Self::build(self.database_url.clone(), store, TestDb::Shared, vars).await
    }

    async fn build(
        database_url: String,
        store: Arc<dyn TenantStore>,
        db: TestDb,
        vars: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let keys = KeyServer::start().await;
        let keys_url = keys.url.clone();
        let config = Config::from_vars(|name| {
            vars(name).or_else(|| match name {
                "BASE_URL" => Some(BASE_URL.to_owned()),
                "INSTALL_KEYS_URL" => Some(keys_url.clone()),
                "INSTALL_KEYS_TIMEOUT_MS" => Some("1000".to_owned()),
                _ => None,
            })
        })
        .unwrap();
        let server = issue_notes::app(config)
            .store(store.clone())
            .build()
            .await
            .unwrap();
        let (state, router) = (server.state().clone(), server.router());
        Self {
            database_url,
            router,
            state,
            store,
            keys,
            _db: db,
        }
    }

    /// Sends a request through the router.
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    /// Sends `method target` with an optional `Authorization: JWT` token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        target: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> TestResponse {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(target);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("JWT {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(json).unwrap())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    /// Posts a lifecycle hook as the site does: signed install for installed/uninstalled,
    /// the tenant's HS256 token for enabled/disabled.
    pub async fn hook(&self, tenant: &TestTenant, event: &str) -> TestResponse {
        let path = format!("/{event}");
        let token = match event {
            "installed" | "uninstalled" => install_token(tenant, &path, json!({})),
            _ => tenant.token("POST", &path),
        };
        self.call("POST", &path, Some(&token), Some(&tenant.payload(event)))
            .await
    }

    /// Sends `method target` as `tenant`, with a token bound to that request.
    pub async fn signed(
        &self,
        tenant: &TestTenant,
        method: &str,
        target: &str,
        body: Option<&Value>,
    ) -> TestResponse {
        let token = tenant.token(method, target);
        self.call(method, target, Some(&token), body).await
    }

    /// Installs `name` through the signed `/installed` hook.
    pub async fn install(&self, name: &str) -> TestTenant {
        self.install_tenant(TestTenant::new(name)).await
    }

    /// Installs `tenant` through the signed `/installed` hook.
    pub async fn install_tenant(&self, tenant: TestTenant) -> TestTenant {
        let response = self.hook(&tenant, "installed").await;
        assert_eq!(
            response.status,
            StatusCode::NO_CONTENT,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        tenant
    }

    /// Runs `sql` on the test's database as the login user, beside the app, and returns the
    /// first column of each row (as text: cast it in the SQL).
    pub async fn raw(&self, sql: &str) -> Vec<Option<String>> {
        if self.database_url.starts_with("postgres") {
            let mut c = PgConnection::connect(&self.database_url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
        }
    }

    /// Whether the store holds a tenant with this key.
    pub async fn stored(&self, tenant: &TestTenant) -> bool {
        self.store
            .find_tenant(&tenant.client_key)
            .await
            .unwrap()
            .is_some()
    }
}

/// With the database gone: `/readyz` answers 503 `store_unavailable` within 1 s (a Kubernetes
/// probe gives up after 1 s by default), and a read and a write of `tenant`'s notes within 2 s.
pub async fn assert_outage_answered_in_time(app: &TestApp, tenant: &TestTenant) {
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
pub async fn until_recovered(app: &TestApp, tenant: &TestTenant) {
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
