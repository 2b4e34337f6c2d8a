//! A second feature built on connect-axum, outside the crate: a Jira webhook counter.
//!
//! It adds two routes to the library's router — a webhook that counts deliveries per event and an
//! API that reads the counts — both behind the library's JWT check, both scoped to the verified
//! tenant. Counts live in memory, keyed by `ClientKey`, so one site never sees another's.
//!
//! Run it like the server (`cargo run --example webhook-counter`), declare the webhook in your
//! descriptor (`{"event": "jira:issue_updated", "url": "/webhooks/count?event=jira:issue_updated"}`),
//! and read `GET /api/webhook-counts` with a tenant JWT.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use connect_axum::app::{self, AppState};
use connect_axum::auth::{self, ProductJwt, Tenant};
use connect_axum::config::Config;
use connect_axum::server::ConnectApp;
use connect_axum::store::ClientKey;
use serde::Deserialize;

/// Deliveries per (tenant, event).
#[derive(Clone, Default)]
pub struct Counts(Arc<Mutex<HashMap<(ClientKey, String), u64>>>);

#[derive(Deserialize)]
struct Event {
    event: String,
}

/// The feature's routes, behind a product JWT.
pub fn feature(state: &AppState, counts: Counts) -> Router<AppState> {
    Router::new()
        .route("/webhooks/count", post(count))
        .route("/api/webhook-counts", get(list))
        .route_layer(middleware::from_fn_with_state(
            state.auth().clone(),
            auth::require_jwt::<ProductJwt>,
        ))
        .with_state(counts)
}

/// The library's router with the feature's routes, merged before its middleware stack.
pub fn router(state: AppState, counts: Counts) -> Router {
    let feature = feature(&state, counts);
    app::router_with(state, feature)
}

async fn count(
    tenant: Tenant,
    State(counts): State<Counts>,
    Query(event): Query<Event>,
) -> StatusCode {
    let mut counts = counts.0.lock().unwrap_or_else(|e| e.into_inner());
    *counts
        .entry((tenant.client_key().clone(), event.event))
        .or_default() += 1;
    StatusCode::NO_CONTENT
}

async fn list(tenant: Tenant, State(counts): State<Counts>) -> Json<HashMap<String, u64>> {
    let counts = counts.0.lock().unwrap_or_else(|e| e.into_inner());
    Json(
        counts
            .iter()
            .filter(|((key, _), _)| key == tenant.client_key())
            .map(|((_, event), n)| (event.clone(), *n))
            .collect(),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let _logs = connect_axum::telemetry::init(config.server.log_format);
    let counts = Counts::default();
    ConnectApp::builder(config)
        .routes_with(move |state| feature(state, counts))
        .build()
        .await?
        .serve_until(app::shutdown_signal())
        .await?;
    Ok(())
}
