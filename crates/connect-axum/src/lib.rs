//! connect-axum: the framework for Atlassian cloud apps with their own backend (Connect apps and
//! Forge Remote backends), built on axum.
//!
//! Sites install the app through its descriptor; the library verifies every lifecycle hook (RS256
//! signed install for `installed`/`uninstalled`, HS256 for `enabled`/`disabled`), stores each site
//! as a tenant, and puts every other route behind a Connect JWT with its query-string hash, a
//! session token, or a Forge Invocation Token, whose verified [`auth::Tenant`] scopes every query.
//!
//! An app is its descriptor, its migrations and its route groups, handed to
//! [`server::ConnectApp::builder`]; [`cli::main`] is its whole `main`:
//!
//! ```no_run
//! use axum::{Json, Router, routing::get};
//! use connect_axum::{ConnectApp, ContextJwt, Tenant};
//!
//! async fn whoami(tenant: Tenant) -> Json<serde_json::Value> {
//!     Json(serde_json::json!({
//!         "clientKey": tenant.client_key().as_str(),
//!         "accountId": tenant.account_id(),
//!     }))
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     connect_axum::cli::main(|config| {
//!         ConnectApp::builder(config)
//!             .descriptor(r#"{"key": "whoami", "authentication": {"type": "jwt"}}"#)
//!             .routes::<ContextJwt>(Router::new().route("/api/whoami", get(whoami)))
//!     })
//!     .await
//! }
//! ```
//!
//! Every route, the library's or the app's, is under one middleware stack (request ids, trace
//! spans, limits, timeout, load shedding, metrics). A request walks: [`app::serve`] → the stack →
//! the group's authentication ([`auth::require_jwt`], [`auth::require_forge`]) → the handler with
//! its [`auth::Tenant`] → [`store::Store::tenant_transaction`] (row-level security on
//! Postgres).
//!
//! The names an app author reaches for first are at the root: [`ConnectApp`], [`Builder`],
//! [`AppState`], [`Config`], [`Tenant`] and the authentication modes ([`ContextJwt`],
//! [`ProductJwt`], [`ForgeInvocation`], [`AuthMode`]), [`Store`], [`ClientKey`],
//! [`ProductClient`], [`Error`] and [`Result`]. The rest is reached through its module:
//!
//! - [`server`], [`cli`]: composing an app, and its command line.
//! - [`state`], [`app`]: the state handlers reach; the routes under the stack, and serving.
//! - [`auth`]: JWT and QSH verification, the authentication modes, session tokens, Forge tokens.
//! - [`descriptor`], [`lifecycle`]: the descriptor and the lifecycle hooks.
//! - [`store`]: the tenant registry and tenant-scoped SQL on Postgres or embedded SQLite.
//! - [`product`]: calls back into the tenant's product, as the app or as a user.
//! - [`data`], [`personal_data`], [`residency`], [`retention`]: what the app tells the library about
//!   its data, personal data reporting, data residency, the purge of uninstalled tenants.
//! - [`config`], [`slots`], [`telemetry`], [`monitoring`], [`error`]: configuration, concurrency
//!   limits, logs, metrics, JSON errors.
//!
//! The testing kit, `connect-axum-testing`, starts an app from its builder on a fresh store and
//! signs like a site; `examples/webhook_counter.rs` is a complete second app.

pub mod app;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod cors;
pub mod data;
pub mod descriptor;
pub mod error;
pub mod forge;
pub mod hooks;
/// The Connect lifecycle hooks and the descriptor route, by their earlier path.
pub use hooks::connect as lifecycle;
pub mod monitoring;
pub mod ops;
mod outbound;
pub mod personal_data;
pub mod product;
pub mod protocol;
pub mod residency;
pub mod retention;
pub mod server;
pub mod slots;
pub mod state;
pub mod store;
pub mod telemetry;

pub use auth::{AuthMode, ContextJwt, ForgeInvocation, ProductJwt, Tenant};
pub use config::Config;
pub use error::{Error, Result};
pub use product::ProductClient;
pub use server::{Builder, ConnectApp};
pub use state::AppState;
pub use store::{ClientKey, Store};
