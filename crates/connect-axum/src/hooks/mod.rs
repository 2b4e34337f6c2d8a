//! What the doors deliver to the app, apart from its own routes: Forge's lifecycle, product events,
//! preUninstall and scheduled triggers.

pub mod forge;
