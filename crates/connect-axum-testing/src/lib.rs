//! The testing kit of connect-axum apps: start the app you built with its own builder function
//! on a fresh store (a Postgres database of its own, or an SQLite file), install tenants through
//! signed installs from a fake site, and drive every route through the whole middleware stack.
//!
//! ```no_run
//! use connect_axum::server::{Builder, ConnectApp};
//! use connect_axum_testing::AppUnderTest;
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
//! ```

pub mod app;
mod both;
pub mod site;
pub mod store;

pub use app::{AppUnderTest, BASE_URL, TestApp, TestResponse};
pub use site::{KeyServer, Site, TestTenant};
