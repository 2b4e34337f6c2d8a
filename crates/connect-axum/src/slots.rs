//! Concurrency limits that keep anonymous clients from starving verified tenants, and one tenant
//! from starving the others: one pool of slots for requests whose sender has been authenticated
//! (`MAX_CONCURRENT_REQUESTS`), of which one tenant may hold a share
//! (`MAX_CONCURRENT_REQUESTS_PER_TENANT`), and a smaller, separate one for work done before anyone
//! is known (`MAX_ANONYMOUS_REQUESTS`). A request that finds its pool full is answered 503
//! `overloaded` at once, never queued; one whose tenant holds its share is answered 429
//! `tenant_busy`.
//!
//! Verifying a token held in a header or the query takes no slot: it reads nothing from the client,
//! and its time is bounded by the server (key fetch and store time limits), so a slow client cannot
//! stretch it. What a client can stretch, sending a form body slowly to hide its token in it, holds
//! an anonymous slot; a tenant slot is taken only once the token verified, and its body must then
//! arrive within `BODY_READ_TIMEOUT_SECS` (see [`crate::body`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// The two pools and the tenants' shares; cheap to clone.
#[derive(Clone)]
pub struct Slots {
    tenant: Arc<Semaphore>,
    anonymous: Arc<Semaphore>,
    per_tenant: usize,
    /// The tenant slots each tenant holds; a tenant holding none has no entry, so there are never
    /// more entries than tenant slots.
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One request's place in a pool, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _share: Option<Share>,
}

/// A tenant's count of the slot's pool, decremented when the slot is dropped.
#[derive(Debug)]
struct Share {
    held: Arc<Mutex<HashMap<String, usize>>>,
    tenant: String,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.tenant);
            }
        }
    }
}

impl Slots {
    /// Pools of `tenant` slots for authenticated requests and `anonymous` slots for the rest;
    /// one tenant holds at most `per_tenant` of the tenant slots.
    pub fn new(tenant: usize, anonymous: usize, per_tenant: usize) -> Self {
        Self {
            tenant: Arc::new(Semaphore::new(tenant.min(Semaphore::MAX_PERMITS))),
            anonymous: Arc::new(Semaphore::new(anonymous.min(Semaphore::MAX_PERMITS))),
            per_tenant: per_tenant.max(1),
            held: Arc::default(),
        }
    }

    /// Pools too large to run out, for an authenticator built without limits.
    pub fn unlimited() -> Self {
        Self::new(
            Semaphore::MAX_PERMITS,
            Semaphore::MAX_PERMITS,
            Semaphore::MAX_PERMITS,
        )
    }

    /// A slot for a request whose sender was just verified as the tenant `client_key`.
    ///
    /// # Errors
    /// [`Error::TenantBusy`] when that tenant holds its share; [`Error::Overloaded`] when every
    /// tenant slot is taken.
    pub fn tenant(&self, client_key: &str) -> Result<Slot, Error> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.get(client_key).copied().unwrap_or(0);
        if count >= self.per_tenant {
            return Err(Error::TenantBusy);
        }
        let permit = self
            .tenant
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded)?;
        held.insert(client_key.to_owned(), count + 1);
        Ok(Slot {
            _permit: permit,
            _share: Some(Share {
                held: self.held.clone(),
                tenant: client_key.to_owned(),
            }),
        })
    }

    /// A slot of the tenant pool for a request whose sender is Atlassian itself, before a tenant
    /// is known (a signed install).
    ///
    /// # Errors
    /// [`Error::Overloaded`] when every tenant slot is taken.
    pub fn signed(&self) -> Result<Slot, Error> {
        take(&self.tenant)
    }

    /// A slot for work done before the sender is known.
    ///
    /// # Errors
    /// [`Error::Overloaded`] when every anonymous slot is taken.
    pub fn anonymous(&self) -> Result<Slot, Error> {
        take(&self.anonymous)
    }

    /// How many tenant slots `client_key` holds now.
    pub fn held_by(&self, client_key: &str) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(client_key).copied().unwrap_or(0)
    }
}

fn take(pool: &Arc<Semaphore>) -> Result<Slot, Error> {
    pool.clone()
        .try_acquire_owned()
        .map(|permit| Slot {
            _permit: permit,
            _share: None,
        })
        .map_err(|_| Error::Overloaded)
}

/// Middleware for public routes: each request holds an anonymous slot until it is answered.
pub async fn anonymous(State(slots): State<Slots>, request: Request, next: Next) -> Response {
    match slots.anonymous() {
        Ok(_slot) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_holds_at_most_its_share_and_gets_it_back_when_slots_drop() {
        let slots = Slots::new(4, 1, 2);
        let a1 = slots.tenant("a").unwrap();
        let _a2 = slots.tenant("a").unwrap();
        assert!(matches!(slots.tenant("a"), Err(Error::TenantBusy)));
        let _b1 = slots.tenant("b").unwrap();
        let _b2 = slots.tenant("b").unwrap();
        assert!(matches!(slots.tenant("c"), Err(Error::Overloaded)));
        assert_eq!(slots.held_by("c"), 0, "a refused request holds nothing");
        drop(a1);
        assert_eq!(slots.held_by("a"), 1);
        let _c = slots.tenant("c").unwrap();
        assert!(matches!(slots.tenant("a"), Err(Error::Overloaded)));
    }

    #[test]
    fn tenants_holding_nothing_leave_no_entry() {
        let slots = Slots::new(8, 1, 8);
        let held: Vec<Slot> = (0..8)
            .map(|i| slots.tenant(&i.to_string()).unwrap())
            .collect();
        drop(held);
        assert!(slots.held.lock().unwrap().is_empty());
    }
}
