//! Work the server does outside any request: the Forge event queue's worker, and in a Forge
//! Container the sweep that brings every installation's Forge SQL database up to date.

pub mod forge_queue;
pub mod sql_sweep;
