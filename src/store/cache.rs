//! The tenant cache: tenants resolved from memory, so an authenticated request costs no query.
//!
//! Every change made through this store forgets the tenant at once; on Postgres, every
//! replica's change reaches the others through `NOTIFY` and is forgotten there too.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;

use chrono::{DateTime, Utc};

use super::{
    ClientKey, Installation, LifecycleToken, NewNote, Note, PoolUsage, Purged, TenantRecord,
    TenantStore,
};

/// Entries live at most this long, a bound on staleness should a change ever go unnoticed.
const MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// A [`TenantStore`] that answers tenant lookups from memory.
#[derive(Clone)]
pub struct CachedStore {
    inner: Arc<dyn TenantStore>,
    tenants: Cache<String, Arc<TenantRecord>>,
}

impl CachedStore {
    /// Caches up to `capacity` tenants of `inner`.
    pub fn new(inner: Arc<dyn TenantStore>, capacity: u64) -> Self {
        Self {
            inner,
            tenants: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(MAX_AGE)
                .build(),
        }
    }

    /// Forgets one tenant, or every tenant when `None` (changes may have been missed).
    pub fn forget(&self, client_key: Option<&str>) {
        match client_key {
            Some(key) => self.tenants.invalidate(key),
            None => self.tenants.invalidate_all(),
        }
    }
}

#[async_trait]
impl TenantStore for CachedStore {
    async fn ping(&self) -> sqlx::Result<()> {
        self.inner.ping().await
    }

    fn pool_usage(&self) -> PoolUsage {
        self.inner.pool_usage()
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    async fn save_tenant(
        &self,
        tenant: &Installation,
        token: &LifecycleToken,
    ) -> sqlx::Result<bool> {
        let saved = self.inner.save_tenant(tenant, token).await;
        self.forget(Some(tenant.client_key.as_str()));
        saved
    }

    async fn find_tenant(&self, client_key: &str) -> sqlx::Result<Option<Arc<TenantRecord>>> {
        if let Some(tenant) = self.tenants.get(client_key) {
            metrics::counter!("tenant_cache_total", "result" => "hit").increment(1);
            return Ok(Some(tenant));
        }
        metrics::counter!("tenant_cache_total", "result" => "miss").increment(1);
        let found = self.inner.find_tenant(client_key).await?;
        if let Some(tenant) = &found {
            self.tenants.insert(client_key.to_owned(), tenant.clone());
        }
        Ok(found)
    }

    async fn list_tenants(&self) -> sqlx::Result<Vec<Arc<TenantRecord>>> {
        self.inner.list_tenants().await
    }

    async fn mark_uninstalled(
        &self,
        key: &ClientKey,
        token: &LifecycleToken,
    ) -> sqlx::Result<bool> {
        let done = self.inner.mark_uninstalled(key, token).await;
        self.forget(Some(key.as_str()));
        done
    }

    async fn reencrypt_secrets(&self) -> sqlx::Result<u64> {
        let done = self.inner.reencrypt_secrets().await;
        self.forget(None);
        done
    }

    async fn purge_uninstalled(&self, before: DateTime<Utc>) -> sqlx::Result<Vec<Purged>> {
        let purged = self.inner.purge_uninstalled(before).await;
        for p in purged.iter().flatten() {
            self.forget(Some(p.client_key.as_str()));
        }
        purged
    }

    async fn set_enabled(&self, key: &ClientKey, enabled: bool) -> sqlx::Result<bool> {
        let done = self.inner.set_enabled(key, enabled).await;
        self.forget(Some(key.as_str()));
        done
    }

    async fn list_notes(&self, key: &ClientKey, issue_key: &str) -> sqlx::Result<Vec<Note>> {
        self.inner.list_notes(key, issue_key).await
    }

    async fn create_note(&self, key: &ClientKey, note: &NewNote) -> sqlx::Result<Note> {
        self.inner.create_note(key, note).await
    }

    async fn delete_note(&self, key: &ClientKey, issue_key: &str, id: i64) -> sqlx::Result<bool> {
        self.inner.delete_note(key, issue_key, id).await
    }

    async fn delete_issue_notes(&self, key: &ClientKey, issue_key: &str) -> sqlx::Result<u64> {
        self.inner.delete_issue_notes(key, issue_key).await
    }
}
