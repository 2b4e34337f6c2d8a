//! The testing kit of connect-axum apps: start the app you built with its own builder function
//! on a fresh store (a Postgres database of its own, or an SQLite file), install tenants through
//! signed installs from a fake site, and drive every route through the whole middleware stack.
//! Beside the site, [`FakeForge`] serves Forge's signing keys, mints invocation tokens for an
//! app's Forge remote and makes sites that install it through Forge alone ([`ForgeSite`]:
//! lifecycle, event, preUninstall and scheduled deliveries with [`TestApp::deliver`], redelivered
//! with `retryContext` by [`forge::redelivered`]); [`FakeForgeApi`] stands in for Atlassian's
//! GraphQL impersonation and Forge storage APIs, and [`FakeProduct`] for the product API the app
//! calls back.
//!
//! ```no_run
//! use axum::http::StatusCode;
//! use connect_axum::server::{Builder, ConnectApp};
//! use connect_axum_testing::{AppUnderTest, FakeForge, FakeProduct, Reply};
//! use serde_json::json;
//!
//! fn app(config: connect_axum::config::Config) -> Builder {
//!     ConnectApp::builder(config).descriptor(r#"{"key": "my-app"}"#)
//! }
//!
//! # async fn test() {
//! let app = AppUnderTest::new(app).sqlite().await;
//! let site = app.install("acme").await;
//! let response = app.signed(&site, "GET", "/api/things", None).await;
//! assert_eq!(response.status, 404);
//! # }
//!
//! // A Forge remote: the app trusts a fake Forge and is invoked with its tokens.
//! # async fn forge() {
//! let forge = FakeForge::start("ari:cloud:ecosystem::app/my-app-id", &[0]).await;
//! let app = AppUnderTest::new(app).sqlite_with(forge.vars()).await;
//! let site = app.install("acme").await;
//! let token = forge.fit(&site).principal(None).sign();
//! let response = app.invoke("GET", "/forge/things", &token, None).await;
//! # }
//!
//! // Calls to the product: the tenant lives on a fake product that checks and records them.
//! # async fn product() {
//! let product = FakeProduct::builder("my-app").user("user-1").start().await;
//! product.on("GET", "/rest/api/3/issue/PROJ-1", |_| {
//!     Reply::json(StatusCode::OK, &json!({ "key": "PROJ-1" }))
//! });
//! let app = AppUnderTest::new(app).sqlite_with(product.vars()).await;
//! let site = app.install_tenant(product.tenant(&app.site, "acme")).await;
//! // … the app calls the product for `site` …
//! assert_eq!(product.received().len(), 1);
//! # }
//! ```

pub mod app;
mod both;
pub mod forge;
pub mod forge_api;
pub mod product;
pub mod sidecar;
pub mod site;
pub mod store;

pub use app::{AppUnderTest, BASE_URL, TestApp, TestResponse};
pub use forge::{FakeForge, Fit, ForgeSite};
pub use forge_api::FakeForgeApi;
pub use product::{Call, Caller, FakeProduct, ProductBuilder, Reply};
pub use sidecar::{FakeForgeSql, FakeSidecar};
pub use site::{KeyServer, Site, TestTenant};
