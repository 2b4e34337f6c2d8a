//! HTTP tests of the library through the real router, on a probe app that adds nothing but one
//! route of each authentication, each on Postgres and SQLite.

mod probe;

mod auth;
mod container;
mod example;
mod forge_api;
mod forge_app_only;
mod forge_calls;
mod forge_cloud_id;
mod forge_context;
mod forge_events;
mod forge_sql;
mod keys;
mod lifecycle;
mod product;
mod tenant_limits;
