//! Forge Remote beyond the invocation token (whose check is in [`crate::auth::forge`]): the
//! lifecycle and event endpoints, the app's stored system token, offline user impersonation and
//! Forge hosted storage.

pub mod events;
pub mod impersonation;
pub mod queue;
pub mod storage;
pub mod tokens;

pub use queue::{ForgeEvent, ForgeEventHandler, ForgeEvents, HandlerError};
