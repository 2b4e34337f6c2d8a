//! What the library asks of an app about its data: where it keeps Atlassian account ids
//! (personal data reporting) and how it moves a tenant's data between realms (data residency).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::store::StoreError;
use crate::store::{ClientKey, Store};

/// A place where an app keeps Atlassian account ids (authors, assignees, …), registered with
/// [`Builder::account_ids`](crate::server::Builder::account_ids): its ids are reported for each
/// tenant, and its data of accounts Atlassian reports closed is anonymised.
#[async_trait]
pub trait AccountIdSource: Send + Sync + 'static {
    /// The account ids the tenant's data holds, each with the time its oldest data was stored.
    async fn account_ids(
        &self,
        store: &Store,
        key: &ClientKey,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError>;

    /// Removes `account_id` from the tenant's data; returns how many rows changed.
    async fn anonymise(
        &self,
        store: &Store,
        key: &ClientKey,
        account_id: &str,
    ) -> Result<u64, StoreError>;
}

/// Moves one tenant's data to a realm; the app supplies it with
/// [`Builder::realm_mover`](crate::server::Builder::realm_mover).
#[async_trait]
pub trait RealmMover: Send + Sync + 'static {
    /// Where the tenant's data is now (`None`: the realm it was installed in).
    async fn location(&self, store: &Store, key: &ClientKey) -> Result<Option<String>, String>;

    /// Moves the tenant's data to `location` (`None`: back to where it was installed).
    async fn move_to(
        &self,
        store: &Store,
        key: &ClientKey,
        location: Option<&str>,
    ) -> Result<(), String>;
}

/// The mover of an app that keeps no data of its own in a realm: nothing moves, and the data is
/// always where the tenant was installed.
pub struct NothingToMove;

#[async_trait]
impl RealmMover for NothingToMove {
    async fn location(&self, _store: &Store, _key: &ClientKey) -> Result<Option<String>, String> {
        Ok(None)
    }

    async fn move_to(
        &self,
        _store: &Store,
        _key: &ClientKey,
        _location: Option<&str>,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// The mover of an app that names none: [`NothingToMove`].
pub fn default_mover() -> Arc<dyn RealmMover> {
    Arc::new(NothingToMove)
}
