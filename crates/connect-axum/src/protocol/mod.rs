//! What the protocols define, apart from any server: the credentials a tenant or Forge hands the
//! app. Nothing here knows of the store, the doors or axum.

pub mod credentials;

pub use credentials::{ForgeToken, SharedSecret};
