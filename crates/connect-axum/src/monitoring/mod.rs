//! Prometheus metrics: requests by route and status, latency, authentication failures by reason,
//! tenant cache hits and misses, database pool usage, and lifecycle events. Served at `/metrics`:
//! on a listener of its own when `METRICS_PORT` is set; otherwise on the public port with the
//! embedded store or behind `METRICS_TOKEN` (on Postgres, a deployment, not without one of them).
//! When `METRICS_TOKEN` is set, every `/metrics` needs it as a bearer token.

pub mod endpoint;

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process-wide recorder, installed on first use; `None` when the app installed a recorder
/// of its own first (its metrics go there, and `/metrics` answers 404).
pub fn handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(install).clone()
}

fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("http_request_duration_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ],
        )
        .expect("the bucket list is not empty")
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::info!("the app installed a metrics recorder of its own; /metrics is not served");
        return None;
    }
    // Histogram samples pile up between scrapes unless folded into their buckets.
    let upkeep = handle.clone();
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "could not start the metrics upkeep thread");
    }
    Some(handle)
}

/// Middleware counting and timing every request by route template, method and status.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
