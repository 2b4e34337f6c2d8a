//! Work the server does outside any request: the Forge event queue's worker.

pub mod forge_queue;
