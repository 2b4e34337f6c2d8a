//! `GET /metrics`: the Prometheus text format, on the metrics listener or behind a bearer token.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use subtle::ConstantTimeEq;

use super::handle;
use crate::error::Error;
use crate::state::AppState;

/// The routes of the metrics listener (`METRICS_PORT`): `GET /metrics` and nothing else.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(render))
        .fallback(|| async { Error::NotFound })
        .with_state(state)
}

/// `GET /metrics`: the Prometheus text format.
pub async fn render(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, Error> {
    if let Some(expected) = &app.config.metrics.token {
        let given = crate::auth::credentials(&headers, "Bearer")
            .ok()
            .flatten()
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes())) {
            return Err(Error::Unauthorized {
                reason: "bad_metrics_token",
                message: "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>".to_owned(),
            });
        }
    }
    let Some(handle) = handle() else {
        return Err(Error::NotFound);
    };
    let pool = app.store.pool_usage();
    metrics::gauge!("db_pool_connections", "state" => "open").set(pool.open as f64);
    metrics::gauge!("db_pool_connections", "state" => "idle").set(pool.idle as f64);
    metrics::gauge!("db_pool_connections", "state" => "max").set(pool.max as f64);
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response())
}
