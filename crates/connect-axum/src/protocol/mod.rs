//! What the protocols define, apart from any server: JWTs and their verification, the query string
//! hash, the credentials a tenant or Forge hands the app. Nothing here knows of the store, the
//! doors or axum.

pub mod credentials;
pub mod egress;
pub mod jwt;
pub mod qsh;

pub use credentials::{ForgeToken, SharedSecret};
