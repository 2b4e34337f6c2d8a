//! The application: shared state, the router with each route's authentication mode, and serving.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath, Request, State};
use axum::http::HeaderName;
use axum::http::StatusCode;
use axum::middleware;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::auth::{
    self, Authenticator, ContextJwt, ForgeKeys, ForgeSettings, InstallKeys, LifecycleJwt,
    ProductJwt,
};
use crate::config::Config;
use crate::error::Error;
use crate::lifecycle::{self, Descriptor};
use crate::monitoring;
use crate::notes;
use crate::product::ProductClient;
use crate::residency::{self, RealmMover};
use crate::store::TenantStore;

/// The header that carries a request's id: kept when the client sends one, made otherwise.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn TenantStore>,
    pub auth: Authenticator,
    pub descriptor: Arc<Descriptor>,
    pub product: ProductClient,
    /// Moves a tenant's data between realms when Atlassian migrates it (data residency); the
    /// sample app's by default.
    pub realm_mover: Arc<dyn RealmMover>,
}

impl AppState {
    /// Wires the state for `config` over `store`.
    pub fn new(config: Config, store: Arc<dyn TenantStore>) -> Self {
        monitoring::handle();
        let descriptor = Descriptor::for_config(&config);
        let install_keys = InstallKeys::new(&config.install_keys_url, config.install_keys_timeout);
        let auth = Authenticator::new(
            store.clone(),
            descriptor.key().to_owned(),
            &config.base_url,
            config.jwt_leeway,
            config.max_token_lifetime,
            config.max_body_bytes,
            install_keys,
        )
        .with_rate_limit(config.tenant_rate_limit);
        let auth = match &config.forge_app_ari {
            Some(app_ari) => auth.with_forge(ForgeSettings {
                app_ari: app_ari.clone(),
                keys: ForgeKeys::new(
                    &config.forge_jwks_url,
                    config.forge_jwks_refresh,
                    config.install_keys_timeout,
                ),
            }),
            None => auth,
        };
        let product = ProductClient::new(
            descriptor.key(),
            &config.oauth_auth_server_url,
            config.product_timeout,
        );
        Self {
            config: Arc::new(config),
            store,
            auth,
            descriptor: Arc::new(descriptor),
            product,
            realm_mover: residency::default_mover(),
        }
    }
}

impl AppState {
    /// Starts the server's background work on this state: the purge of uninstalled tenants past
    /// their retention, and personal data reporting.
    pub fn spawn_upkeep(&self) {
        crate::retention::spawn(
            self.store.clone(),
            self.config.uninstall_retention,
            self.config.purge_interval,
        );
        crate::personal_data::spawn(self.clone());
    }
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// The whole HTTP surface. Each group of routes names the authentication it requires.
pub fn router(state: AppState) -> Router {
    let lifecycle_hooks = lifecycle::hooks_router().route_layer(middleware::from_fn_with_state(
        state.auth.clone(),
        auth::require_jwt::<LifecycleJwt>,
    ));
    let notes_api = notes::router().route_layer(middleware::from_fn_with_state(
        state.auth.clone(),
        auth::require_jwt::<ContextJwt>,
    ));
    let notes_product = notes::product_router().route_layer(middleware::from_fn_with_state(
        state.auth.clone(),
        auth::require_jwt::<ProductJwt>,
    ));
    let realm_migration = Router::new()
        .nest(&state.config.data_residency_path, residency::router())
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_jwt::<ProductJwt>,
        ));
    let notes_forge = notes::forge_router().route_layer(middleware::from_fn_with_state(
        state.auth.clone(),
        auth::require_forge,
    ));
    Router::new()
        // No authentication.
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(monitoring::render))
        .merge(lifecycle::descriptor_router())
        .merge(notes::public_router())
        // RS256 signed install, verified by the handlers' `SignedInstall` extractor.
        .merge(lifecycle::signed_install_router())
        // HS256 with the QSH of the hook; never a context token.
        .merge(lifecycle_hooks)
        // A product JWT bound to the request, or the iframe's context / session token.
        .merge(notes_api)
        // A product JWT bound to the request: the issue panel page and webhooks.
        .merge(notes_product)
        // HS256 with the QSH of the hook, from Atlassian's migration service.
        .merge(realm_migration)
        // A Forge Invocation Token (RS256, Forge's JWKS) of a mapped installation.
        .merge(notes_forge)
        .fallback(not_found)
        .route_layer(middleware::from_fn(monitoring::track))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.config.max_header_bytes,
            limit_headers,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::new(Semaphore::new(state.config.max_concurrent_requests)),
            shed_load,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.config.request_timeout,
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
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = request.uri().path(),
                        route,
                        request_id,
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

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(app): State<AppState>) -> Result<Json<serde_json::Value>, Error> {
    app.store.ping().await.map_err(Error::StoreUnavailable)?;
    Ok(Json(json!({ "status": "ok" })))
}

/// Answers 503 at once when the server already handles its maximum of requests, rather than
/// queueing without bound.
async fn shed_load(State(slots): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    match slots.try_acquire() {
        Ok(_slot) => next.run(request).await,
        Err(_) => Error::Overloaded.into_response(),
    }
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

async fn not_found() -> impl IntoResponse {
    Error::NotFound
}

async fn method_not_allowed() -> impl IntoResponse {
    Error::MethodNotAllowed
}

/// How long in-flight requests may take to finish once shutdown has begun.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting connections and
/// lets in-flight requests finish, for at most [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stopping.send(true);
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(signal);
    let grace = async move {
        let _ = stopped.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server.into_future() => served,
        () = grace => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
            Ok(())
        }
    }
}
