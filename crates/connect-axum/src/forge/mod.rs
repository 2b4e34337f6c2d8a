//! The Forge clients beyond the invocation token (whose check is in [`crate::auth::forge`]):
//! offline user impersonation, Forge hosted storage and Forge SQL. The lifecycle and event endpoints are in
//! [`crate::hooks::forge`], the handlers' types in [`crate::state::forge_events`].

pub mod impersonation;
pub mod sql;
pub mod storage;
