//! The Forge clients beyond the invocation token (whose check is in [`crate::auth::forge`]):
//! offline user impersonation, Forge hosted storage, Forge SQL and, from a container, Forge's
//! async events. The lifecycle and event endpoints are in
//! [`crate::hooks::forge`], the handlers' types in [`crate::state::forge_events`].

pub mod events;
pub mod impersonation;
pub mod sql;
pub mod storage;
