//! The sidecar's egress routes: what a container's calls reach through `FORGE_EGRESS_PROXY_URL`.
//! Forge storage is served by a [`FakeForgeApi`] of the sidecar's own, for the installation the
//! call's `forge-proxy-authorization` names; product calls (`/{product}/{path}`) are answered by
//! the handlers a test registers, 404 where none matches; pushes onto Forge's async events are
//! kept for a test to deliver back. Every call is recorded.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use connect_axum::protocol::egress::{ProxyActor, ProxyAuthorization};
use serde_json::{Value, json};

use super::Shared;
use crate::product::Reply;

/// A product's answer to a call through the proxy, by the call.
pub(super) type Handler = Arc<dyn Fn(&EgressCall) -> Reply + Send + Sync>;

/// A call a container made through the egress proxy.
#[derive(Debug, Clone)]
pub struct EgressCall {
    /// The HTTP method.
    pub method: String,
    /// The path on the proxy, `/jira/rest/api/3/myself`.
    pub path: String,
    /// The query string without its `?`.
    pub query: Option<String>,
    /// The `forge-proxy-authorization` it carried, `<none>` without one.
    pub authorization: String,
    /// The installation the header resolved to (through the invocation for `id=`).
    pub installation_id: Option<String>,
    /// Whom the header made the call for.
    pub actor: Option<ProxyActor>,
    /// The body as sent.
    pub body: Vec<u8>,
}

/// An event the container pushed onto Forge's async events.
#[derive(Debug, Clone)]
pub struct PushedEvent {
    /// The `forge-proxy-authorization` the push carried.
    pub authorization: String,
    /// The installation the header resolved to.
    pub installation_id: Option<String>,
    /// The push's `queueName`.
    pub queue: String,
    /// The push's `jobId`.
    pub job_id: String,
    /// The event's `body` (the first of the push's `payload`).
    pub body: Value,
}

impl Shared {
    /// Records `headers`' proxy authorization and resolves it to an installation.
    pub(super) fn resolve(
        &self,
        headers: &HeaderMap,
    ) -> (String, Option<ProxyAuthorization>, Option<String>) {
        let authorization = self.received(headers);
        let parsed = ProxyAuthorization::parse(&authorization).ok();
        let installation = parsed.as_ref().and_then(|p| self.installation_of(&p.scope));
        (authorization, parsed, installation)
    }
}

fn refused(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(json!({ "code": code, "message": code }))).into_response()
}

/// `POST /forge/storage/kvs/v1/{op}`: the installation's storage.
pub(super) async fn storage(
    State(shared): State<Arc<Shared>>,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, _, installation) = shared.resolve(&headers);
    if shared.down.load(std::sync::atomic::Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match installation {
        Some(id) => shared.api.storage_for(&id, &op, &body),
        None => refused(StatusCode::UNAUTHORIZED, "INVALID_PROXY_AUTHORIZATION"),
    }
}

/// `/{product}/{*path}`: a product call, answered by the first handler registered for its
/// method and path.
pub(super) async fn product(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path((product, path)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (authorization, parsed, installation_id) = shared.resolve(&headers);
    let call = EgressCall {
        method: method.as_str().to_owned(),
        path: format!("/{product}/{path}"),
        query,
        authorization,
        installation_id,
        actor: parsed.and_then(|p| p.actor),
        body: body.to_vec(),
    };
    shared
        .egress_calls
        .lock()
        .expect("not poisoned")
        .push(call.clone());
    if shared.down.load(std::sync::atomic::Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if call.installation_id.is_none() {
        return refused(StatusCode::UNAUTHORIZED, "INVALID_PROXY_AUTHORIZATION");
    }
    let handler = shared
        .product_handlers
        .lock()
        .expect("not poisoned")
        .iter()
        .find(|(m, p, _)| *m == call.method && *p == call.path)
        .map(|(_, _, h)| h.clone());
    let Some(handler) = handler else {
        return refused(StatusCode::NOT_FOUND, "NOT_FOUND");
    };
    let reply = handler(&call);
    let mut response = (reply.status, reply.body).into_response();
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name),
            axum::http::HeaderValue::try_from(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// `POST /atlassian/forge/events/v1/async-events`: a push, kept; answers its job id.
pub(super) async fn push_event(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (authorization, _, installation_id) = shared.resolve(&headers);
    if shared.down.load(std::sync::atomic::Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if installation_id.is_none() {
        return refused(StatusCode::UNAUTHORIZED, "INVALID_PROXY_AUTHORIZATION");
    }
    let push: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(queue), Some(job_id), Some(event)) = (
        push["queueName"].as_str(),
        push["jobId"].as_str(),
        push.pointer("/payload/0/body"),
    ) else {
        return refused(StatusCode::BAD_REQUEST, "INVALID_PUSH");
    };
    let pushed = PushedEvent {
        authorization,
        installation_id,
        queue: queue.to_owned(),
        job_id: job_id.to_owned(),
        body: event.clone(),
    };
    shared.pushed.lock().expect("not poisoned").push(pushed);
    (StatusCode::OK, axum::Json(json!({ "jobId": job_id }))).into_response()
}

/// `GET /v1/installations?pageSize=&cursor=`: the sites made, a page at a time (at most 100),
/// `{results: [{id, installationContext}], cursor}` with the next page's cursor, none on the last.
/// The shape the library reads; Forge's own is unconfirmed.
pub(super) async fn installations(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if shared.down.load(std::sync::atomic::Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let size = query
        .get("pageSize")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 100);
    let start = query
        .get("cursor")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0);
    let all = shared.installations.lock().expect("not poisoned").clone();
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(size)
        .map(|(id, cloud)| json!({ "id": id, "installationContext": format!("ari:cloud:jira::site/{cloud}") }))
        .collect();
    let next = (start + size < all.len()).then(|| (start + size).to_string());
    axum::Json(json!({ "results": page, "cursor": next })).into_response()
}
