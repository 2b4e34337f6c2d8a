//! What the doors deliver to the app, apart from its own routes: Connect's lifecycle hooks and the
//! descriptor route ([`connect`]); Forge's lifecycle, product events, preUninstall and scheduled
//! triggers ([`forge`]); a Forge Container's trigger deliveries and their async events
//! ([`container`]).

pub mod connect;
pub mod container;
pub mod forge;
