//! The Forge clients beyond the invocation token (whose check is in [`crate::auth::forge`]):
//! offline user impersonation and Forge hosted storage. The lifecycle and event endpoints are in
//! [`crate::hooks::forge`], the handlers' types in [`crate::state::forge_events`].

pub mod impersonation;
pub mod storage;
