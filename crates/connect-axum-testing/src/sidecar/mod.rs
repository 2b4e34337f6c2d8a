//! Forge's sidecar for an app under test as a Forge Container, laid out as `forge tunnel`'s is:
//! invocations reach the app with an `x-forge-invocation-id` and no token ([`FakeSidecar::invoke`]),
//! and the app's `FORGE_EGRESS_PROXY_URL` points at the sidecar, which answers
//! `GET /invocation/context` for the invocations it made and checks `forge-proxy-authorization`
//! on every call it receives (each recorded, for a test to assert); it serves Forge storage,
//! the product calls a test answers ([`FakeSidecar::on_product`]) and Forge SQL over MariaDB
//! ([`FakeForgeSql`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use connect_axum::protocol::egress::{
    INVOCATION_ID_HEADER, PROXY_AUTHORIZATION_HEADER, ProxyAuthorization, ProxyScope,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::forge::{ForgeSite, uuid_like};
use crate::product::Reply;
use crate::{FakeForgeApi, TestApp, TestResponse};

mod egress;

pub use egress::{EgressCall, PushedEvent};

mod sql;

pub use sql::{DEFAULT_MARIADB_URL, FakeForgeSql, SqlCall, SqlRoute};

/// The app id of the container app the sidecar serves.
pub const CONTAINER_APP_ID: &str = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-00000000c0de";

struct Shared {
    contexts: Mutex<HashMap<String, Value>>,
    authorizations: Mutex<Vec<String>>,
    context_fetches: AtomicUsize,
    down: AtomicBool,
    api: FakeForgeApi,
    egress_calls: Mutex<Vec<EgressCall>>,
    product_handlers: Mutex<Vec<(String, String, egress::Handler)>>,
    sql: FakeForgeSql,
    pushed: Mutex<Vec<PushedEvent>>,
    installations: Mutex<Vec<(String, String)>>,
}

/// Forge's sidecar on a free loopback port.
pub struct FakeSidecar {
    /// Its egress address (`FORGE_EGRESS_PROXY_URL`).
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeSidecar {
    /// Starts the sidecar.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            contexts: Mutex::default(),
            authorizations: Mutex::default(),
            context_fetches: AtomicUsize::default(),
            down: AtomicBool::default(),
            api: FakeForgeApi::start().await,
            egress_calls: Mutex::default(),
            product_handlers: Mutex::default(),
            sql: FakeForgeSql::default(),
            pushed: Mutex::default(),
            installations: Mutex::default(),
        });
        let router = Router::new()
            .route("/invocation/context", get(context))
            .route("/forge/storage/kvs/v1/{*op}", post(egress::storage))
            .route("/forge/storage/sql/v1/execute", post(sql::execute))
            .route("/forge/storage/sql/v1/execute/ddl", post(sql::execute_ddl))
            .route(
                "/atlassian/forge/events/v1/async-events",
                post(egress::push_event),
            )
            .route("/v1/installations", get(egress::installations))
            .route("/{product}/{*path}", any(egress::product))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, shared }
    }

    /// The app's settings in a container: `FORGE_EGRESS_PROXY_URL` and nothing else.
    pub fn vars(&self) -> impl Fn(&str) -> Option<String> + use<> {
        let url = self.url.clone();
        move |name| (name == "FORGE_EGRESS_PROXY_URL").then(|| url.clone())
    }

    /// A site with the app installed, with ids of its own; listed by the proxy's
    /// `GET /v1/installations` from now on.
    pub fn site(&self, name: &str) -> ForgeSite {
        let site = ForgeSite::random(name);
        self.shared
            .installations
            .lock()
            .expect("not poisoned")
            .push((site.installation_id.clone(), site.cloud_id.clone()));
        site
    }

    /// Makes an invocation whose context is `context`; returns its id.
    pub fn invocation(&self, context: Value) -> String {
        let id = uuid_like(rand08::random());
        self.shared
            .contexts
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), context);
        id
    }

    /// The context of `account_id`'s invocation from `site`'s issue panel on `issue`.
    pub fn user_context(site: &ForgeSite, account_id: &str, issue: &str) -> Value {
        json!({
            "app": {
                "id": CONTAINER_APP_ID,
                "installationId": site.installation_id,
                "environment": { "type": "DEVELOPMENT", "id": uuid_like(1) },
                "module": { "key": "notes-panel", "type": "jira:issuePanel" },
            },
            "context": {
                "cloudId": site.cloud_id,
                "siteUrl": site.url(),
                "moduleKey": "notes-panel",
                "accountId": account_id,
                "userAccess": { "enabled": true },
                "extension": { "issue": { "key": issue, "id": "10001" }, "type": "jira:issuePanel" },
            },
        })
    }

    /// The context of an invocation of the app itself for `site` (a trigger): no user.
    pub fn app_context(site: &ForgeSite) -> Value {
        json!({
            "app": {
                "id": CONTAINER_APP_ID,
                "installationId": site.installation_id,
                "environment": { "type": "DEVELOPMENT", "id": uuid_like(1) },
                "module": { "key": "on-issue-deleted", "type": "core:endpoint" },
            },
            "context": { "cloudId": site.cloud_id, "siteUrl": site.url() },
        })
    }

    /// Forgets the invocation `id`: its context is refused from now on, as an ended one is.
    pub fn end(&self, id: &str) {
        self.shared
            .contexts
            .lock()
            .expect("not poisoned")
            .remove(id);
    }

    /// Answers every call 503 from now on (`true`), or serves again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Its Forge SQL, over MariaDB.
    pub fn sql(&self) -> &FakeForgeSql {
        &self.shared.sql
    }

    /// How many times a context was asked for.
    pub fn context_fetches(&self) -> usize {
        self.shared.context_fetches.load(Ordering::SeqCst)
    }

    /// Every `forge-proxy-authorization` the sidecar received, in order (`<none>` for a call
    /// without one).
    pub fn authorizations(&self) -> Vec<String> {
        self.shared
            .authorizations
            .lock()
            .expect("not poisoned")
            .clone()
    }

    /// Answers the container's `method` calls to `path` on the proxy (`/jira/rest/api/3/…`) with
    /// `reply`, whoever they are made for (the [`EgressCall`] says).
    pub fn on_product(
        &self,
        method: &str,
        path: &str,
        reply: impl Fn(&EgressCall) -> Reply + Send + Sync + 'static,
    ) {
        self.shared
            .product_handlers
            .lock()
            .expect("not poisoned")
            .push((
                method.to_owned(),
                path.to_owned(),
                std::sync::Arc::new(reply),
            ));
    }

    /// Every product call the container made through the proxy, in order.
    pub fn product_calls(&self) -> Vec<EgressCall> {
        self.shared
            .egress_calls
            .lock()
            .expect("not poisoned")
            .clone()
    }

    /// Every event the container pushed onto Forge's async events, in order; a test delivers
    /// one back to the app's consumer endpoint as Forge would.
    pub fn pushed_events(&self) -> Vec<PushedEvent> {
        self.shared.pushed.lock().expect("not poisoned").clone()
    }

    /// The Forge storage behind the proxy: what each installation stored, and every call.
    pub fn storage(&self) -> &FakeForgeApi {
        &self.shared.api
    }

    /// Sends `method path` to `app` as the sidecar forwards an invocation: with the invocation
    /// id `id` and a JSON `body`, no token.
    pub async fn invoke(
        &self,
        app: &TestApp,
        id: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> TestResponse {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("a method"))
            .uri(path)
            .header(INVOCATION_ID_HEADER, id);
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(json).expect("JSON"))
            }
            None => Body::empty(),
        };
        app.send(request.body(body).expect("a request")).await
    }
}

impl Shared {
    /// Records the call's `forge-proxy-authorization` (`<none>` without one) and returns it.
    fn received(&self, headers: &HeaderMap) -> String {
        let authorization = headers
            .get(PROXY_AUTHORIZATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
            .to_owned();
        self.authorizations
            .lock()
            .expect("not poisoned")
            .push(authorization.clone());
        authorization
    }

    /// The installation a header's scope names: its own, or that of the invocation it names
    /// (`None` for an invocation the sidecar did not make).
    fn installation_of(&self, scope: &ProxyScope) -> Option<String> {
        match scope {
            ProxyScope::Installation(id) => Some(id.clone()),
            ProxyScope::Invocation(id) => self
                .contexts
                .lock()
                .expect("not poisoned")
                .get(id)
                .and_then(|c| c["app"]["installationId"].as_str().map(str::to_owned)),
        }
    }
}

/// `GET /invocation/context`: the context of the invocation the header names, 404 for one the
/// sidecar did not make, 401 without a header of the proxy's grammar.
async fn context(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.context_fetches.fetch_add(1, Ordering::SeqCst);
    let authorization = shared.received(&headers);
    if shared.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let Ok(ProxyAuthorization {
        scope: ProxyScope::Invocation(id),
        ..
    }) = ProxyAuthorization::parse(&authorization)
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match shared.contexts.lock().expect("not poisoned").get(&id) {
        Some(context) => axum::Json(context.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
