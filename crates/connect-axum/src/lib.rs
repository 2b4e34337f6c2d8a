//! connect-axum: a backend for Atlassian Connect multitenant apps, built on axum.
//!
//! Jira and Confluence cloud sites install the app through its descriptor; this crate verifies
//! every lifecycle hook (RS256 signed install for `installed`/`uninstalled`, HS256 for
//! `enabled`/`disabled`), stores each site as a tenant, and puts every other route behind JWT +
//! query-string-hash verification whose verified [`auth::Tenant`] scopes every query.
//!
//! A request walks one way: [`app::router`] → [`auth::require_jwt`] → [`auth::Tenant`] →
//! handler → [`store::TenantStore`].
//!
//! - [`config`]: configuration from the environment.
//! - [`lifecycle`]: the descriptor and the lifecycle hooks.
//! - [`auth`]: JWT and QSH verification, the authentication modes, session tokens.
//! - [`store`]: tenants and app data on Postgres or embedded SQLite, behind a tenant cache.
//! - [`product`]: calls back into the tenant's product, as the app or as a user.
//! - [`personal_data`]: reporting stored account ids to Atlassian and anonymising closed ones.
//! - [`residency`]: data residency (realm migration) hooks and the `RealmMover` trait.
//! - [`retention`]: the purge of uninstalled tenants once their retention window ends.
//! - [`slots`]: the concurrency limits of authenticated and of anonymous work.
//! - [`cli`], [`telemetry`], [`monitoring`]: the command line, logs and metrics.
//!
//! A feature of your own is a router whose handlers take [`auth::Tenant`], layered with the
//! authentication mode it needs and handed to [`app::router_with`], which merges it before the
//! middleware stack (request ids, traces, limits, timeout, load shedding, metrics):
//!
//! ```no_run
//! use axum::{Json, Router, middleware, routing::get};
//! use connect_axum::app::{self, AppState};
//! use connect_axum::auth::{self, ProductJwt, Tenant};
//!
//! async fn whoami(tenant: Tenant) -> Json<serde_json::Value> {
//!     Json(serde_json::json!({
//!         "clientKey": tenant.client_key().as_str(),
//!         "accountId": tenant.account_id(),
//!     }))
//! }
//!
//! fn router(state: AppState) -> Router {
//!     let mine: Router<AppState> = Router::new()
//!         .route("/api/whoami", get(whoami))
//!         .route_layer(middleware::from_fn_with_state(
//!             state.auth.clone(),
//!             auth::require_jwt::<ProductJwt>,
//!         ));
//!     app::router_with(state, mine)
//! }
//! ```
//!
//! `examples/webhook_counter.rs` is a complete one.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod data;
pub mod descriptor;
pub mod error;
pub mod lifecycle;
pub mod monitoring;
mod outbound;
pub mod personal_data;
pub mod product;
pub mod residency;
pub mod retention;
pub mod server;
pub mod slots;
pub mod state;
pub mod store;
pub mod telemetry;
