//! What the doors deliver to the app, apart from its own routes: Connect's lifecycle hooks and the
//! descriptor route ([`connect`]); Forge's lifecycle, product events, preUninstall and scheduled
//! triggers ([`forge`]).

pub mod connect;
pub mod forge;
