//! [`Store`], the one handle on the store: every part of it, by concern.

use std::sync::Arc;

use super::{
    Bookkeeping, ClientKey, Database, EventQueue, ForgeRecords, Keyring, PoolUsage, StoreError,
    TenantCache, TenantTransaction, Tenants,
};

/// The store: tenants and their data on one backend. Cheap to clone; clones share the pools
/// and the tenant cache.
///
/// Every part that touches tenant data takes the tenant's [`ClientKey`] and touches only that
/// tenant's rows.
#[derive(Clone)]
pub struct Store(Arc<Parts>);

struct Parts {
    database: Database,
    keyring: Arc<Keyring>,
    tenants: TenantCache,
}

impl Store {
    pub(super) fn new(database: Database, keyring: Arc<Keyring>, tenants: TenantCache) -> Self {
        Store(Arc::new(Parts {
            database,
            keyring,
            tenants,
        }))
    }

    /// The tenant registry, lookups answered from memory (kept in step with other replicas
    /// through Postgres notifications).
    pub fn tenants(&self) -> &dyn Tenants {
        &self.0.tenants
    }

    /// The Forge records: upgrade permissions and the app's system tokens.
    pub fn forge(&self) -> ForgeRecords<'_> {
        ForgeRecords {
            db: &self.0.database,
            keyring: &self.0.keyring,
        }
    }

    /// The queue of Forge trigger deliveries.
    pub fn events(&self) -> EventQueue<'_> {
        EventQueue {
            db: &self.0.database,
        }
    }

    /// Realm migrations and personal-data reporting.
    pub fn bookkeeping(&self) -> Bookkeeping<'_> {
        Bookkeeping {
            db: &self.0.database,
        }
    }

    /// A transaction on `key`'s rows, for an app's own tables: one SQL text for both backends,
    /// and on Postgres row-level security admits only `key`'s rows in it.
    pub async fn tenant_transaction(
        &self,
        key: &ClientKey,
    ) -> Result<TenantTransaction, StoreError> {
        self.0.database.tenant_transaction(key).await
    }

    /// The backend itself, for SQL that only one backend speaks.
    pub fn database(&self) -> &Database {
        &self.0.database
    }

    /// Checks that the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.0.database.connection().await?;
        conn.query("select 1").execute().await.map(|_| ())
    }

    /// How many connections the pools hold.
    pub fn pool_usage(&self) -> PoolUsage {
        self.0.database.pool_usage()
    }

    /// Closes the pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.0.database.close().await;
    }
}
