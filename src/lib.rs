//! connect-axum: a backend for Atlassian Connect multitenant apps.
//!
//! A request walks one way: [`app::router`] → [`auth::require_jwt`] → [`auth::Tenant`] →
//! handler → [`store::TenantStore`]. Lifecycle hooks live in [`lifecycle`], the sample
//! tenant-scoped feature in [`notes`]; calls back into the product go through [`product`].

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod lifecycle;
pub mod monitoring;
pub mod notes;
pub mod product;
pub mod store;
pub mod telemetry;
