//! The tenant cache: tenants resolved from memory, so an authenticated request costs no query.
//!
//! Every change made through this store forgets the tenant at once; on Postgres, every
//! replica's change reaches the others through `NOTIFY` and is forgotten there too.
//!
//! The cache also knows which client keys exist at all (loaded at start, kept current by the
//! same changes), so that a token naming an issuer no tenant has costs no query: issuers are
//! whatever an unauthenticated client writes, and each new one would otherwise be a read. A few
//! keys a second that it does not know are still read ([`UNKNOWN_KEY_READS_PER_SEC`]): a tenant
//! another replica has just installed is found before that replica's change arrives.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;

use chrono::{DateTime, Utc};

use super::StoreError;
use super::{
    ClientKey, EventOutcome, ForgeInstallation, ForgeSaved, Installation, LifecycleToken,
    PoolUsage, Purged, QueuedEvent, RealmMigration, SaveOutcome, StoredSystemToken, TenantRecord,
    TenantStore, TenantTransaction,
};
use crate::protocol::ForgeToken;

/// Entries live at most this long, a bound on staleness should a change ever go unnoticed.
const MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// Reads a second, in bursts of as many, of client keys the cache does not know: enough for the
/// requests that follow installs on another replica, and all a flood of made-up issuers costs.
pub const UNKNOWN_KEY_READS_PER_SEC: u32 = 10;

/// A [`TenantStore`] that answers tenant lookups from memory.
#[derive(Clone)]
pub struct CachedStore {
    inner: Arc<dyn TenantStore>,
    tenants: Cache<String, Arc<TenantRecord>>,
    /// Forge installation ids to client keys; an entry is trusted only while the cached tenant
    /// still carries that installation id.
    installations: Cache<String, String>,
    /// Counts forgets, so that a lookup racing a change does not cache what it read before it.
    changes: Arc<AtomicU64>,
    known: Arc<KnownKeys>,
    unknown_reads: Arc<governor::DefaultDirectRateLimiter>,
}

/// The client keys the store holds, as keyed hashes (8 bytes a tenant). A collision only costs
/// a query; the random hash key keeps anyone from aiming for one.
struct KnownKeys {
    hasher: std::collections::hash_map::RandomState,
    hashes: RwLock<HashSet<u64>>,
    /// Until the first load completes, every lookup goes to the store.
    loaded: std::sync::atomic::AtomicBool,
}

impl KnownKeys {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn may_exist(&self, key: &str) -> bool {
        !self.loaded.load(Ordering::SeqCst)
            || self
                .hashes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&self.hash(key))
    }

    fn add(&self, key: &str) {
        let hash = self.hash(key);
        self.hashes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hash);
    }
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
            installations: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(MAX_AGE)
                .build(),
            changes: Arc::new(AtomicU64::new(0)),
            known: Arc::new(KnownKeys {
                hasher: Default::default(),
                hashes: RwLock::default(),
                loaded: false.into(),
            }),
            unknown_reads: Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(
                std::num::NonZeroU32::new(UNKNOWN_KEY_READS_PER_SEC).expect("not zero"),
            ))),
        }
    }

    /// Loads the client keys the store holds; until it has, every lookup asks the store.
    /// Keys only ever join the set (a purged one costs a query, nothing more), so loading again
    /// after missed changes cannot lose one.
    pub async fn load_known_keys(&self) -> Result<(), StoreError> {
        let keys = self.inner.client_keys().await?;
        {
            let mut hashes = self.known.hashes.write().unwrap_or_else(|e| e.into_inner());
            hashes.extend(keys.iter().map(|k| self.known.hash(k)));
        }
        self.known.loaded.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Forgets one tenant, or every tenant when `None` (changes may have been missed: the known
    /// keys are then loaded again, in the background).
    pub fn forget(&self, client_key: Option<&str>) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        match client_key {
            Some(key) => {
                // A change names a key that exists, or existed.
                self.known.add(key);
                self.tenants.invalidate(key);
            }
            None => {
                self.tenants.invalidate_all();
                self.installations.invalidate_all();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let cache = self.clone();
                    runtime.spawn(async move {
                        if let Err(e) = cache.load_known_keys().await {
                            tracing::warn!(error = %e, "could not reload the known client keys");
                        }
                    });
                }
            }
        }
    }
}

#[async_trait]
impl TenantStore for CachedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn pool_usage(&self) -> PoolUsage {
        self.inner.pool_usage()
    }

    fn database(&self) -> super::Database {
        self.inner.database()
    }

    async fn close(&self) {
        self.inner.close().await;
    }

    async fn save_tenant(
        &self,
        tenant: &Installation,
        token: &LifecycleToken,
    ) -> Result<SaveOutcome, StoreError> {
        let saved = self.inner.save_tenant(tenant, token).await;
        self.forget(Some(tenant.client_key.as_str()));
        saved
    }

    async fn client_keys(&self) -> Result<Vec<String>, StoreError> {
        self.inner.client_keys().await
    }

    async fn find_tenant(&self, client_key: &str) -> Result<Option<Arc<TenantRecord>>, StoreError> {
        if let Some(tenant) = self.tenants.get(client_key) {
            metrics::counter!("tenant_cache_total", "result" => "hit").increment(1);
            return Ok(Some(tenant));
        }
        let known = self.known.may_exist(client_key);
        if !known && self.unknown_reads.check().is_err() {
            metrics::counter!("tenant_cache_total", "result" => "unknown").increment(1);
            return Ok(None);
        }
        let result = if known { "miss" } else { "unknown_read" };
        metrics::counter!("tenant_cache_total", "result" => result).increment(1);
        let before = self.changes.load(Ordering::SeqCst);
        let found = self.inner.find_tenant(client_key).await?;
        if let Some(tenant) = &found {
            if !known {
                self.known.add(client_key);
            }
            self.tenants.insert(client_key.to_owned(), tenant.clone());
            // A change forgotten while the row was read may be newer than the row: drop it
            // again. A forget after this check removes the entry itself.
            if self.changes.load(Ordering::SeqCst) != before {
                self.tenants.invalidate(client_key);
            }
        }
        Ok(found)
    }

    async fn find_tenant_by_installation_id(
        &self,
        installation_id: &str,
    ) -> Result<Option<Arc<TenantRecord>>, StoreError> {
        if let Some(key) = self.installations.get(installation_id)
            && let Some(tenant) = self.find_tenant(&key).await?
            && tenant.is_installed()
            && tenant.installation.installation_id.as_deref() == Some(installation_id)
        {
            return Ok(Some(tenant));
        }
        let found = self
            .inner
            .find_tenant_by_installation_id(installation_id)
            .await?;
        match &found {
            Some(tenant) => self.installations.insert(
                installation_id.to_owned(),
                tenant.installation.client_key.as_str().to_owned(),
            ),
            None => self.installations.invalidate(installation_id),
        }
        Ok(found)
    }

    async fn find_installed_by_cloud_id(
        &self,
        cloud_id: &str,
        product: Option<&str>,
    ) -> Result<Vec<Arc<TenantRecord>>, StoreError> {
        self.inner
            .find_installed_by_cloud_id(cloud_id, product)
            .await
    }

    async fn list_tenants(&self) -> Result<Vec<Arc<TenantRecord>>, StoreError> {
        self.inner.list_tenants().await
    }

    async fn mark_uninstalled(
        &self,
        key: &ClientKey,
        token: &LifecycleToken,
    ) -> Result<bool, StoreError> {
        let done = self.inner.mark_uninstalled(key, token).await;
        self.forget(Some(key.as_str()));
        done
    }

    async fn reencrypt_secrets(&self) -> Result<u64, StoreError> {
        let done = self.inner.reencrypt_secrets().await;
        self.forget(None);
        done
    }

    async fn purge_uninstalled(&self, before: DateTime<Utc>) -> Result<Vec<Purged>, StoreError> {
        let purged = self.inner.purge_uninstalled(before).await;
        for p in purged.iter().flatten() {
            self.forget(Some(p.client_key.as_str()));
        }
        purged
    }

    async fn set_enabled(
        &self,
        key: &ClientKey,
        enabled: bool,
        token: &LifecycleToken,
    ) -> Result<bool, StoreError> {
        let done = self.inner.set_enabled(key, enabled, token).await;
        self.forget(Some(key.as_str()));
        done
    }

    async fn realm_migration(&self, key: &ClientKey) -> Result<Option<RealmMigration>, StoreError> {
        self.inner.realm_migration(key).await
    }

    async fn save_realm_migration(
        &self,
        key: &ClientKey,
        m: &RealmMigration,
    ) -> Result<(), StoreError> {
        self.inner.save_realm_migration(key, m).await
    }

    async fn personal_data_due(&self, now: DateTime<Utc>) -> Result<Vec<ClientKey>, StoreError> {
        self.inner.personal_data_due(now).await
    }

    async fn set_personal_data_due(
        &self,
        key: &ClientKey,
        reported_at: Option<DateTime<Utc>>,
        next_due_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner
            .set_personal_data_due(key, reported_at, next_due_at)
            .await
    }

    async fn tenant_transaction(&self, key: &ClientKey) -> Result<TenantTransaction, StoreError> {
        self.inner.tenant_transaction(key).await
    }

    async fn save_forge_installation(
        &self,
        installation: &ForgeInstallation,
        token: &LifecycleToken,
    ) -> Result<ForgeSaved, StoreError> {
        let saved = self
            .inner
            .save_forge_installation(installation, token)
            .await?;
        self.forget(Some(saved.client_key.as_str()));
        self.installations.invalidate(&installation.installation_id);
        Ok(saved)
    }

    async fn save_forge_permissions(
        &self,
        key: &ClientKey,
        permissions: &str,
    ) -> Result<(), StoreError> {
        self.inner.save_forge_permissions(key, permissions).await
    }

    async fn save_system_token(
        &self,
        key: &ClientKey,
        token: &ForgeToken,
        api_base_url: &str,
        expires_at: DateTime<Utc>,
        issued_at: i64,
    ) -> Result<bool, StoreError> {
        self.inner
            .save_system_token(key, token, api_base_url, expires_at, issued_at)
            .await
    }

    async fn system_token(&self, key: &ClientKey) -> Result<Option<StoredSystemToken>, StoreError> {
        self.inner.system_token(key).await
    }

    async fn enqueue_forge_event(
        &self,
        key: &ClientKey,
        id: &str,
        event_type: &str,
        body: &str,
    ) -> Result<bool, StoreError> {
        self.inner
            .enqueue_forge_event(key, id, event_type, body)
            .await
    }

    async fn claim_forge_events(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        self.inner.claim_forge_events(now, lease_until, limit).await
    }

    async fn finish_forge_event(
        &self,
        event: &QueuedEvent,
        outcome: &EventOutcome,
    ) -> Result<(), StoreError> {
        self.inner.finish_forge_event(event, outcome).await
    }

    async fn forge_events_pending(&self) -> Result<u64, StoreError> {
        self.inner.forge_events_pending().await
    }

    async fn prune_forge_events(&self, done_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.prune_forge_events(done_before).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;
    use crate::store::{Keyring, SqliteStore};

    /// Delegates to a real store, counting tenant reads, and holds `find_tenant` after its
    /// read until released when `hold` is set.
    struct SlowReads {
        store: SqliteStore,
        read: Arc<Notify>,
        release: Arc<Notify>,
        hold: Mutex<bool>,
        reads: AtomicU64,
    }

    #[async_trait]
    impl TenantStore for SlowReads {
        async fn ping(&self) -> Result<(), StoreError> {
            self.store.ping().await
        }
        fn pool_usage(&self) -> PoolUsage {
            self.store.pool_usage()
        }
        fn database(&self) -> crate::store::Database {
            self.store.database()
        }
        async fn close(&self) {
            self.store.close().await
        }
        async fn save_tenant(
            &self,
            t: &Installation,
            token: &LifecycleToken,
        ) -> Result<SaveOutcome, StoreError> {
            self.store.save_tenant(t, token).await
        }
        async fn client_keys(&self) -> Result<Vec<String>, StoreError> {
            self.store.client_keys().await
        }
        async fn find_tenant(&self, key: &str) -> Result<Option<Arc<TenantRecord>>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let found = self.store.find_tenant(key).await;
            let hold = std::mem::take(&mut *self.hold.lock().unwrap());
            if hold {
                self.read.notify_one();
                self.release.notified().await;
            }
            found
        }
        async fn find_tenant_by_installation_id(
            &self,
            id: &str,
        ) -> Result<Option<Arc<TenantRecord>>, StoreError> {
            self.store.find_tenant_by_installation_id(id).await
        }
        async fn find_installed_by_cloud_id(
            &self,
            id: &str,
            product: Option<&str>,
        ) -> Result<Vec<Arc<TenantRecord>>, StoreError> {
            self.store.find_installed_by_cloud_id(id, product).await
        }
        async fn list_tenants(&self) -> Result<Vec<Arc<TenantRecord>>, StoreError> {
            self.store.list_tenants().await
        }
        async fn mark_uninstalled(
            &self,
            k: &ClientKey,
            t: &LifecycleToken,
        ) -> Result<bool, StoreError> {
            self.store.mark_uninstalled(k, t).await
        }
        async fn reencrypt_secrets(&self) -> Result<u64, StoreError> {
            self.store.reencrypt_secrets().await
        }
        async fn purge_uninstalled(
            &self,
            before: DateTime<Utc>,
        ) -> Result<Vec<Purged>, StoreError> {
            self.store.purge_uninstalled(before).await
        }
        async fn set_enabled(
            &self,
            k: &ClientKey,
            enabled: bool,
            t: &LifecycleToken,
        ) -> Result<bool, StoreError> {
            self.store.set_enabled(k, enabled, t).await
        }
        async fn realm_migration(
            &self,
            k: &ClientKey,
        ) -> Result<Option<RealmMigration>, StoreError> {
            self.store.realm_migration(k).await
        }
        async fn save_realm_migration(
            &self,
            k: &ClientKey,
            m: &RealmMigration,
        ) -> Result<(), StoreError> {
            self.store.save_realm_migration(k, m).await
        }
        async fn personal_data_due(
            &self,
            now: DateTime<Utc>,
        ) -> Result<Vec<ClientKey>, StoreError> {
            self.store.personal_data_due(now).await
        }
        async fn set_personal_data_due(
            &self,
            k: &ClientKey,
            at: Option<DateTime<Utc>>,
            due: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            self.store.set_personal_data_due(k, at, due).await
        }
        async fn tenant_transaction(&self, k: &ClientKey) -> Result<TenantTransaction, StoreError> {
            self.store.tenant_transaction(k).await
        }
        async fn save_forge_installation(
            &self,
            i: &ForgeInstallation,
            t: &LifecycleToken,
        ) -> Result<ForgeSaved, StoreError> {
            self.store.save_forge_installation(i, t).await
        }
        async fn save_forge_permissions(&self, k: &ClientKey, p: &str) -> Result<(), StoreError> {
            self.store.save_forge_permissions(k, p).await
        }
        async fn save_system_token(
            &self,
            k: &ClientKey,
            t: &ForgeToken,
            u: &str,
            e: DateTime<Utc>,
            i: i64,
        ) -> Result<bool, StoreError> {
            self.store.save_system_token(k, t, u, e, i).await
        }
        async fn system_token(
            &self,
            k: &ClientKey,
        ) -> Result<Option<StoredSystemToken>, StoreError> {
            self.store.system_token(k).await
        }
        async fn enqueue_forge_event(
            &self,
            k: &ClientKey,
            id: &str,
            kind: &str,
            body: &str,
        ) -> Result<bool, StoreError> {
            self.store.enqueue_forge_event(k, id, kind, body).await
        }
        async fn claim_forge_events(
            &self,
            now: DateTime<Utc>,
            until: DateTime<Utc>,
            limit: u32,
        ) -> Result<Vec<QueuedEvent>, StoreError> {
            self.store.claim_forge_events(now, until, limit).await
        }
        async fn finish_forge_event(
            &self,
            e: &QueuedEvent,
            o: &EventOutcome,
        ) -> Result<(), StoreError> {
            self.store.finish_forge_event(e, o).await
        }
        async fn forge_events_pending(&self) -> Result<u64, StoreError> {
            self.store.forge_events_pending().await
        }
        async fn prune_forge_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
            self.store.prune_forge_events(before).await
        }
    }

    fn install(secret: &str) -> Installation {
        Installation::for_tests("acme", secret)
    }

    fn token(issued_at: i64) -> LifecycleToken {
        LifecycleToken {
            issued_at,
            expires_at: issued_at + 180,
            id: format!("token-{issued_at}"),
        }
    }

    async fn slow_reads(dir: &tempfile::TempDir, hold: bool) -> Arc<SlowReads> {
        let url = format!("sqlite://{}", dir.path().join("cache.db").display());
        let store = SqliteStore::connect(&url, 2, Arc::new(Keyring::new(&[3; 32], &[])))
            .await
            .unwrap();
        Arc::new(SlowReads {
            store,
            read: Arc::new(Notify::new()),
            release: Arc::new(Notify::new()),
            hold: Mutex::new(hold),
            reads: AtomicU64::new(0),
        })
    }

    #[tokio::test]
    async fn issuers_no_tenant_has_cost_only_the_unknown_key_reads_once_the_keys_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let slow = slow_reads(&dir, false).await;
        slow.save_tenant(&install("s"), &token(1)).await.unwrap();
        let mut cache = CachedStore::new(slow.clone(), 10);
        cache.load_known_keys().await.unwrap();
        let started = std::time::Instant::now();
        for i in 0..200 {
            assert!(
                cache
                    .find_tenant(&format!("random-{i}"))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        // The burst, and what the quota gave back while the lookups ran.
        let refilled =
            started.elapsed().as_millis() as u64 * u64::from(UNKNOWN_KEY_READS_PER_SEC) / 1000;
        let unknown = slow.reads.load(Ordering::SeqCst);
        assert!(
            (1..=u64::from(UNKNOWN_KEY_READS_PER_SEC) + refilled + 1).contains(&unknown),
            "{unknown} reads for 200 unknown issuers"
        );
        assert!(cache.find_tenant("acme").await.unwrap().is_some());
        assert_eq!(slow.reads.load(Ordering::SeqCst), unknown + 1);

        // A key another replica announces is looked up from then on.
        cache.unknown_reads = Arc::new(governor::RateLimiter::direct(governor::Quota::per_hour(
            std::num::NonZeroU32::MIN,
        )));
        let _ = cache.unknown_reads.check();
        assert!(cache.find_tenant("announced").await.unwrap().is_none());
        assert_eq!(slow.reads.load(Ordering::SeqCst), unknown + 1);
        cache.forget(Some("announced"));
        assert!(cache.find_tenant("announced").await.unwrap().is_none());
        assert_eq!(slow.reads.load(Ordering::SeqCst), unknown + 2);
    }

    #[tokio::test]
    async fn a_tenant_another_replica_just_installed_is_found_before_its_change_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let slow = slow_reads(&dir, false).await;
        let cache = CachedStore::new(slow.clone(), 10);
        cache.load_known_keys().await.unwrap();
        // Saved past this cache, as another replica saves it; no change has reached this one.
        slow.save_tenant(&install("s"), &token(1)).await.unwrap();
        assert!(cache.find_tenant("acme").await.unwrap().is_some());
        assert_eq!(slow.reads.load(Ordering::SeqCst), 1);
        // Known from then on, and cached.
        assert!(cache.known.may_exist("acme"));
        assert!(cache.find_tenant("acme").await.unwrap().is_some());
        assert_eq!(slow.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_lookup_racing_a_reinstall_does_not_cache_the_old_secret() {
        let dir = tempfile::tempdir().unwrap();
        let slow = slow_reads(&dir, true).await;
        let (read, release) = (slow.read.clone(), slow.release.clone());
        slow.save_tenant(&install("old"), &token(1)).await.unwrap();
        let cache = CachedStore::new(slow, 10);

        let lookup = tokio::spawn({
            let cache = cache.clone();
            async move { cache.find_tenant("acme").await }
        });
        read.notified().await;
        assert_eq!(
            cache.save_tenant(&install("new"), &token(2)).await.unwrap(),
            SaveOutcome::Saved
        );
        release.notify_one();
        let raced = lookup.await.unwrap().unwrap().unwrap();
        assert_eq!(raced.installation.shared_secret.expose(), "old");

        let now = cache.find_tenant("acme").await.unwrap().unwrap();
        assert_eq!(now.installation.shared_secret.expose(), "new");
    }
}
