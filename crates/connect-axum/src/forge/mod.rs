//! Forge Remote beyond the invocation token (whose check is in [`crate::auth::forge`]): the
//! lifecycle and event endpoints, the app's stored system token, offline user impersonation and
//! Forge hosted storage.

pub mod impersonation;
pub mod storage;
