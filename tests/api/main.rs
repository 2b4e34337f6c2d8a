//! HTTP tests of the real router, each run on Postgres and on SQLite.

mod helpers;

mod auth;
mod bounds;
mod browser;
mod cli;
mod concurrency;
mod container;
mod faults;
mod forge;
mod forge_door;
mod keys;
mod lifecycle;
mod notes;
mod page;
mod personal_data;
mod pool;
mod replicas;
mod residency;
mod retention;
mod scoping;
mod security;
mod starvation;
mod store;
mod transactions;
