//! An app under test: built by the app's own builder function over a fresh store, driven
//! in-process through its whole router (every middleware included), with a fake site to sign
//! its installs and requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use connect_axum::app::AppState;
use connect_axum::config::Config;
use connect_axum::server::{Builder, ConnectApp};
use connect_axum::store::{self, Store, StoreOptions, TenantRecord};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tower::ServiceExt;

use crate::site::{KeyServer, Site, TestTenant};
use crate::store::{TestDb, admin_url, secrets_key};

/// The app's public URL in tests, unless `BASE_URL` is given.
pub const BASE_URL: &str = "https://app.example.com";

type Built = Pin<Box<dyn Future<Output = ConnectApp>>>;

/// What the kit needs of an app: its store options and its server over a given store.
trait Factory: Send + Sync {
    fn store_options(&self, config: Config) -> StoreOptions;
    fn app_key(&self, config: Config) -> String;
    fn build(&self, config: Config, store: Store) -> Built;
}

struct Make<F>(F);

impl<F, S> Factory for Make<F>
where
    F: Fn(Config) -> Builder<S> + Send + Sync,
    S: Clone + Send + Sync + 'static,
{
    fn store_options(&self, config: Config) -> StoreOptions {
        (self.0)(config)
            .store_options()
            .expect("the store options of the app")
    }

    fn app_key(&self, config: Config) -> String {
        (self.0)(config)
            .rendered_descriptor()
            .expect("the app's descriptor")
            .key()
            .to_owned()
    }

    fn build(&self, config: Config, store: Store) -> Built {
        let builder = (self.0)(config).store(store);
        Box::pin(async move { builder.build().await.expect("the app builds") })
    }
}

/// The app to test, as its builder function makes it (e.g. the `fn app(Config) -> Builder` its
/// `main` hands to [`connect_axum::cli::main`]); starts [`TestApp`]s on fresh stores.
#[derive(Clone)]
pub struct AppUnderTest {
    factory: Arc<dyn Factory>,
}

impl AppUnderTest {
    /// The app `make` builds from a configuration.
    pub fn new<S: Clone + Send + Sync + 'static>(
        make: impl Fn(Config) -> Builder<S> + Send + Sync + 'static,
    ) -> Self {
        Self {
            factory: Arc::new(Make(make)),
        }
    }

    /// On a fresh Postgres database.
    pub async fn postgres(&self) -> TestApp {
        self.postgres_with(|_| None).await
    }

    /// On a fresh Postgres database, configured by `vars` (over the test defaults).
    pub async fn postgres_with(&self, vars: impl Fn(&str) -> Option<String>) -> TestApp {
        self.postgres_tuned(&admin_url(), |_| {}, vars).await
    }

    /// On a fresh database of the Postgres server at `admin_url`, its store opened with the
    /// options that `tune` changes (a pool size, a URL through a proxy); `database_url` stays
    /// the database's own.
    pub async fn postgres_tuned(
        &self,
        admin_url: &str,
        tune: impl FnOnce(&mut StoreOptions),
        vars: impl Fn(&str) -> Option<String>,
    ) -> TestApp {
        let (db, url) = TestDb::postgres(admin_url).await;
        self.start(db, url, tune, vars).await
    }

    /// On a fresh SQLite file.
    pub async fn sqlite(&self) -> TestApp {
        self.sqlite_with(|_| None).await
    }

    /// On a fresh SQLite file, configured by `vars` (over the test defaults).
    pub async fn sqlite_with(&self, vars: impl Fn(&str) -> Option<String>) -> TestApp {
        let (db, url) = TestDb::sqlite();
        self.start(db, url, |_| {}, vars).await
    }

    /// On the embedded store in memory (what a Forge Container runs on when `DATABASE_URL` is
    /// unset), configured by `vars`: nothing written anywhere.
    pub async fn in_memory_with(&self, vars: impl Fn(&str) -> Option<String>) -> TestApp {
        let url = connect_axum::config::IN_MEMORY_URL.to_owned();
        self.start(TestDb::Memory, url, |_| {}, vars).await
    }

    /// The app's store options on `database_url`: the configured ones (with the app's
    /// migrations) and the test defaults: a pool of 5, this process's secrets key.
    pub fn store_options(&self, database_url: &str) -> StoreOptions {
        self.factory
            .store_options(config(database_url, "http://127.0.0.1:9", |_| None))
    }

    async fn start(
        &self,
        db: TestDb,
        database_url: String,
        tune: impl FnOnce(&mut StoreOptions),
        vars: impl Fn(&str) -> Option<String>,
    ) -> TestApp {
        let keys = KeyServer::start().await;
        let config = config(&database_url, &keys.url, &vars);
        let mut options = self.factory.store_options(config.clone());
        tune(&mut options);
        let store = store::connect(&options)
            .await
            .expect("the test store opens");
        self.build(database_url, store, db, keys, config).await
    }

    async fn build(
        &self,
        database_url: String,
        store: Store,
        db: TestDb,
        keys: KeyServer,
        config: Config,
    ) -> TestApp {
        let site = Site {
            app_key: self.factory.app_key(config.clone()),
            app_base_url: config
                .server
                .base_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        };
        let server = self.factory.build(config, store).await;
        TestApp {
            database_url,
            router: server.router(),
            state: server.state().clone(),
            keys,
            site,
            app: self.clone(),
            _db: db,
        }
    }
}

/// The configuration of a test app: `vars` over the test defaults (`BASE_URL`, the key server,
/// a 1 s key fetch, the database, a pool of 5, this process's `SECRETS_KEY`).
fn config(database_url: &str, keys_url: &str, vars: impl Fn(&str) -> Option<String>) -> Config {
    Config::from_vars(|name| {
        vars(name).or_else(|| match name {
            "BASE_URL" => Some(BASE_URL.to_owned()),
            "INSTALL_KEYS_URL" => Some(keys_url.to_owned()),
            "INSTALL_KEYS_TIMEOUT_MS" => Some("1000".to_owned()),
            "DATABASE_URL" => Some(database_url.to_owned()),
            "DB_POOL_SIZE" => Some("5".to_owned()),
            "SECRETS_KEY" => Some(secrets_key().to_owned()),
            // The test's SQLite file is the one file a test app in a container may write.
            "CONTAINER_WRITABLE_DIRS" => connect_axum::config::sqlite_file(database_url)
                .and_then(|file| file.parent().map(|dir| dir.display().to_string())),
            _ => None,
        })
    })
    .expect("a valid test configuration")
}

/// An app under test on its own store, with the site that installs it.
pub struct TestApp {
    /// The test's own database, `postgres://…/<unique name>` or `sqlite://<temp dir>/test.db`.
    pub database_url: String,
    /// The app's whole router, middleware included, that requests are sent to in process.
    pub router: Router,
    /// The state the app's handlers get.
    pub state: AppState,
    /// The install-key server the app fetches signed-install keys from.
    pub keys: KeyServer,
    /// The site whose tenants install the app.
    pub site: Site,
    app: AppUnderTest,
    _db: TestDb,
}

/// A response, read whole.
pub struct TestResponse {
    /// The status the app answered.
    pub status: StatusCode,
    /// The response's headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Vec<u8>,
}

impl TestResponse {
    /// The body as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a JSON error with `status` and reason `code` (and, for a 401, the challenge).
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
    /// Serves the app's router with the library's own `serve` (header-read timeout included) on
    /// a loopback port, until the test ends: for tests that need a real TCP client.
    pub async fn serve_tcp(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(connect_axum::app::serve(
            vec![(listener, self.router.clone())],
            self.state.config().server.header_read_timeout,
            std::future::pending(),
        ));
        addr
    }

    /// A second app (a replica, with its own store, tenant cache and key server) on this app's
    /// database, configured by `vars`; this app must outlive it.
    pub async fn replica_with(&self, vars: impl Fn(&str) -> Option<String>) -> TestApp {
        let keys = KeyServer::start().await;
        let config = config(&self.database_url, &keys.url, &vars);
        let options = self.app.factory.store_options(config.clone());
        let store = store::connect(&options)
            .await
            .expect("the replica's store opens");
        self.app
            .build(
                self.database_url.clone(),
                store,
                TestDb::Shared,
                keys,
                config,
            )
            .await
    }

    /// The app's store (its state's).
    pub fn store(&self) -> &Store {
        self.state.store()
    }

    /// A tenant of the app's site, not yet installed.
    pub fn tenant(&self, name: &str) -> TestTenant {
        self.site.tenant(name)
    }

    /// Sends a request through the router.
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a whole body")
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
            .method(Method::from_bytes(method.as_bytes()).expect("a method"))
            .uri(target);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("JWT {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(json).expect("JSON"))
            }
            None => Body::empty(),
        };
        self.send(request.body(body).expect("a request")).await
    }

    /// Posts a lifecycle hook as the site does: signed install for installed/uninstalled,
    /// the tenant's HS256 token for enabled/disabled.
    pub async fn hook(&self, tenant: &TestTenant, event: &str) -> TestResponse {
        let path = format!("/{event}");
        let token = match event {
            "installed" | "uninstalled" => tenant.install_token(&path, json!({})),
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

    /// Installs the site `name` through the signed `/installed` hook.
    pub async fn install(&self, name: &str) -> TestTenant {
        self.install_tenant(self.tenant(name)).await
    }

    /// Installs `tenant` through the signed `/installed` hook.
    ///
    /// # Panics
    /// When the install is refused.
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
            let mut c = PgConnection::connect(&self.database_url)
                .await
                .expect("the test database");
            sqlx::query_scalar(sql)
                .fetch_all(&mut c)
                .await
                .expect("the query runs")
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .expect("the test database");
            sqlx::query_scalar(sql)
                .fetch_all(&mut c)
                .await
                .expect("the query runs")
        }
    }

    /// Whether the store holds a tenant with this key.
    pub async fn stored(&self, tenant: &TestTenant) -> bool {
        self.find_stored_tenant(&tenant.client_key).await.is_some()
    }

    /// The tenant the app's store holds under `client_key`.
    ///
    /// # Panics
    /// When the store holds none, or does not answer.
    pub async fn stored_tenant(&self, client_key: &str) -> Arc<TenantRecord> {
        self.find_stored_tenant(client_key)
            .await
            .unwrap_or_else(|| panic!("no tenant {client_key} is stored"))
    }

    /// The tenant the app's store holds under `client_key`, if any.
    ///
    /// # Panics
    /// When the store does not answer.
    pub async fn find_stored_tenant(&self, client_key: &str) -> Option<Arc<TenantRecord>> {
        crate::store::find_tenant_in(self.store(), client_key).await
    }
}
