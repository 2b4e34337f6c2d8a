//! An app that installs a metrics recorder of its own before the library: the library neither
//! panics nor replaces it, and `/metrics` is not served. A binary of its own: the recorder is
//! process-wide.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use connect_axum::app::{self, AppState};
use connect_axum::config::Config;
use connect_axum::lifecycle::Descriptor;
use connect_axum::store::{self, AppMigrations, Keyring, StoreOptions};
use tower::ServiceExt;

#[tokio::test]
async fn an_apps_own_metrics_recorder_is_kept_and_the_library_does_not_panic() {
    metrics::set_global_recorder(metrics::NoopRecorder).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        database_url: format!("sqlite://{}", dir.path().join("app.db").display()),
        migration_url: None,
        pool_size: 2,
        acquire_timeout: store::DEFAULT_ACQUIRE_TIMEOUT,
        tenant_cache_size: 10,
        keyring: Arc::new(Keyring::new(&[1; 32], &[])),
        app_migrations: AppMigrations::default(),
    };
    let store = store::connect(&options).await.unwrap();
    let config = Config::from_vars(|_| None).unwrap();
    let descriptor = Descriptor::from_json(r#"{"key": "probe"}"#, &config).unwrap();
    let state = AppState::with_descriptor(config, store, descriptor);
    let router = app::router(state);
    let metrics = router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::NOT_FOUND);
    let health = router
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}
