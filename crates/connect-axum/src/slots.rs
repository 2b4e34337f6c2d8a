//! Concurrency limits that keep anonymous clients from starving verified tenants: one pool of
//! slots for requests whose sender has been authenticated (`MAX_CONCURRENT_REQUESTS`), and a
//! smaller, separate one for work done before anyone is known (`MAX_ANONYMOUS_REQUESTS`). A
//! request that finds its pool full is answered 503 `overloaded` at once, never queued.
//!
//! Verifying a token held in a header or the query takes no slot: it reads nothing from the client,
//! and its time is bounded by the server (key fetch and store time limits), so a slow client cannot
//! stretch it. What a client can stretch, sending a form body slowly to hide its token in it, holds
//! an anonymous slot; a tenant slot is taken only once the token verified.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// The two pools; cheap to clone.
#[derive(Clone)]
pub struct Slots {
    tenant: Arc<Semaphore>,
    anonymous: Arc<Semaphore>,
}

/// One request's place in a pool, given back when dropped.
#[derive(Debug)]
pub struct Slot(#[expect(dead_code, reason = "held for its drop")] OwnedSemaphorePermit);

impl Slots {
    /// Pools of `tenant` slots for authenticated requests and `anonymous` slots for the rest.
    pub fn new(tenant: usize, anonymous: usize) -> Self {
        Self {
            tenant: Arc::new(Semaphore::new(tenant.min(Semaphore::MAX_PERMITS))),
            anonymous: Arc::new(Semaphore::new(anonymous.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Pools too large to run out, for an authenticator built without limits.
    pub fn unlimited() -> Self {
        Self::new(Semaphore::MAX_PERMITS, Semaphore::MAX_PERMITS)
    }

    /// A slot for a request whose sender was just verified.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when every tenant slot is taken.
    pub fn tenant(&self) -> Result<Slot, Error> {
        take(&self.tenant)
    }

    /// A slot for work done before the sender is known.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when every anonymous slot is taken.
    pub fn anonymous(&self) -> Result<Slot, Error> {
        take(&self.anonymous)
    }
}

fn take(pool: &Arc<Semaphore>) -> Result<Slot, Error> {
    pool.clone()
        .try_acquire_owned()
        .map(Slot)
        .map_err(|_| Error::Overloaded)
}

/// Middleware for public routes: each request holds an anonymous slot until it is answered.
pub async fn anonymous(State(slots): State<Slots>, request: Request, next: Next) -> Response {
    match slots.anonymous() {
        Ok(_slot) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}
