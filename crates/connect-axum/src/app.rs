//! The library's routes under the one middleware stack (with an app's merged before it), and
//! serving.

use std::future::Future;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderName;
use axum::http::StatusCode;
use axum::middleware;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::auth::{LifecycleJwt, ProductJwt};
use crate::error::Error;
use crate::monitoring;
use crate::protocol::egress::{self, INVOCATION_ID_HEADER, INVOCATION_LOG_ATTRIBUTES_HEADER};
use crate::residency;
use crate::store::StoreError;

/// The header that carries a request's id: kept when the client sends one, made otherwise.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub use crate::state::AppState;

/// The library's HTTP surface: health, the descriptor, the lifecycle and realm migration hooks,
/// metrics. Each group of routes names the authentication it requires.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The library's HTTP surface with an app's own `routes` (each group layered with the
/// authentication it requires, e.g. by [`AppState::with_jwt`]), merged before the middleware
/// stack: a layer covers only the routes that exist when it is added, so routes merged into
/// [`router`]'s result afterwards would have no request id, trace span, limits, timeout, load
/// shedding or metrics.
pub fn router_with(state: AppState, routes: Router<AppState>) -> Router {
    let lifecycle_hooks = state.with_jwt::<LifecycleJwt, _>(crate::hooks::connect::hooks_router());
    let realm_migration = state.with_jwt::<ProductJwt, _>(Router::new().nest(
        &state.config.compliance.data_residency_path,
        residency::router(),
    ));
    // The same hooks for Forge's migration service, with a Forge Invocation Token of the app.
    let forge_realm_migration = state.with_forge_app(
        &state.config.forge.module_keys.migration,
        Router::new().nest(&state.config.forge.migration_path, residency::router()),
    );
    let mut public = Router::new().merge(crate::hooks::connect::descriptor_router());
    if state.config.metrics_on_public_port() {
        public = public.route("/metrics", get(monitoring::endpoint::render));
    }
    let public = state.public(public);
    Router::new()
        // No authentication, and no slot: they must answer while anonymous clients fill theirs.
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // No authentication; within the anonymous slots.
        .merge(public)
        // RS256 signed install, verified by the handlers' `SignedInstall` extractor.
        .merge(crate::hooks::connect::signed_install_router())
        // HS256 with the QSH of the hook; never a context token.
        .merge(lifecycle_hooks)
        // HS256 with the QSH of the hook, from Atlassian's migration service.
        .merge(realm_migration)
        .merge(forge_realm_migration)
        // Forge trigger deliveries, preUninstall and the scheduled trigger: a Forge Invocation
        // Token, verified by the handlers before the body is read; in a container, the trigger
        // deliveries and the async events' consumer behind the container door.
        .merge(if state.auth.is_container() {
            crate::hooks::container::router(&state)
        } else {
            crate::hooks::forge::router(&state)
        })
        // The app's own, each group with its authentication.
        .merge(routes)
        .fallback(crate::error::not_found)
        .route_layer(middleware::from_fn(monitoring::track))
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.config.server.max_header_bytes,
            limit_headers,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.config.server.request_timeout,
        ))
        .layer(middleware::map_response(timeout_as_json))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    // The path only: a query may carry a JWT.
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map(|p| p.as_str().to_owned());
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let header = |name: &str| request.headers().get(name)?.to_str().ok();
                    // Forge's B3 ids, so a remote's log lines meet Forge's invocation logs.
                    let b3 = |name: &str| header(name).filter(|id| is_b3_id(id));
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = request.uri().path(),
                        route,
                        request_id,
                        trace_id = b3("x-b3-traceid"),
                        span_id = b3("x-b3-spanid"),
                        forge_invocation = egress::log_attributes(header(INVOCATION_LOG_ATTRIBUTES_HEADER)),
                        invocation_id = header(INVOCATION_ID_HEADER).filter(|id| egress::is_valid_id(id)),
                        client_key = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(|response: &Response, latency: Duration, _span: &Span| {
                    tracing::info!(
                        status = response.status().as_u16(),
                        latency_us = latency.as_micros() as u64,
                        "{}",
                        response.status()
                    );
                })
                .on_failure(()),
        )
        // Outside the trace layer, so that every log line of the request carries its id.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// A B3 trace or span id: 16 or 32 hex digits (64 or 128 bits).
fn is_b3_id(id: &str) -> bool {
    matches!(id.len(), 16 | 32) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// How long `/readyz` waits for the store: under the 1 s a Kubernetes probe waits by default,
/// so that an unreachable store is a 503 rather than a probe timeout.
pub const READYZ_TIMEOUT: Duration = Duration::from_millis(800);

async fn readyz(State(app): State<AppState>) -> Result<Json<serde_json::Value>, Error> {
    tokio::time::timeout(READYZ_TIMEOUT, app.store.ping())
        .await
        .map_err(|_| StoreError::timed_out())
        .and_then(|pinged| pinged)
        .map_err(|e| Error::StoreUnavailable(Box::new(e)))?;
    Ok(Json(json!({ "status": "ok" })))
}

/// Refuses a request whose headers add up to more than `max` bytes (hyper's own bound is far
/// larger), before anything reads them.
async fn limit_headers(State(max): State<usize>, request: Request, next: Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > max {
        return Error::HeadersTooLarge.into_response();
    }
    next.run(request).await
}

/// The timeout layer answers with a bare status; give it the JSON body every error has.
async fn timeout_as_json(response: Response) -> Response {
    if response.status() == StatusCode::REQUEST_TIMEOUT
        && !response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        return Error::RequestTimeout.into_response();
    }
    response
}

/// Completes on SIGTERM or Ctrl-C: the shutdown of a server process.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// How long in-flight requests may take to finish once shutdown has begun.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves each router on its listener until `shutdown` completes; then stops accepting
/// connections and lets in-flight requests finish, for at most [`SHUTDOWN_GRACE`].
///
/// Connections speak HTTP/1.1. One that has not sent a whole request head within
/// `header_read_timeout` of being accepted, or of its previous response, is closed: clients that
/// send headers slowly (or nothing) cannot hold connections open.
pub async fn serve(
    listeners: Vec<(TcpListener, Router)>,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let (accepted, mut incoming) = tokio::sync::mpsc::channel::<(TcpStream, Router)>(64);
    let mut acceptors = tokio::task::JoinSet::new();
    for (listener, router) in listeners {
        let accepted = accepted.clone();
        acceptors.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        if accepted.send((stream, router.clone())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        });
    }
    drop(accepted);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            Some((stream, router)) = incoming.recv() => {
                // Responses are written whole; waiting to coalesce them only adds latency.
                let _ = stream.set_nodelay(true);
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    tower::Service::call(&mut router.clone(), request)
                });
                let connection =
                    graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    // Dropping the listeners stops accepting; connections accepted but not yet served are closed.
    acceptors.shutdown().await;
    drop(incoming);
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
}

/// After a failed accept (too many open files, say) waits a second rather than spin; a connection
/// its client dropped before it was accepted is no fault of the server.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %e, "could not accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
