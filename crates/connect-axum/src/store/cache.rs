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

use super::{
    ClientKey, ForgeInstallation, ForgeSaved, Installation, LifecycleToken, Purged, SaveOutcome,
    StoreError, TenantRecord, Tenants,
};

/// Entries live at most this long, a bound on staleness should a change ever go unnoticed.
const MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// Reads a second, in bursts of as many, of client keys the cache does not know: enough for the
/// requests that follow installs on another replica, and all a flood of made-up issuers costs.
pub const UNKNOWN_KEY_READS_PER_SEC: u32 = 10;

/// The tenant registry answering lookups from memory.
#[derive(Clone)]
pub(crate) struct TenantCache {
    inner: Arc<dyn Tenants>,
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

impl TenantCache {
    /// Caches up to `capacity` tenants of `inner`.
    pub(crate) fn new(inner: Arc<dyn Tenants>, capacity: u64) -> Self {
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
    pub(crate) async fn load_known_keys(&self) -> Result<(), StoreError> {
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
    pub(crate) fn forget(&self, client_key: Option<&str>) {
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
impl Tenants for TenantCache {
    async fn find(&self, client_key: &str) -> Result<Option<Arc<TenantRecord>>, StoreError> {
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
        let found = self.inner.find(client_key).await?;
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

    async fn find_by_installation_id(
        &self,
        installation_id: &str,
    ) -> Result<Option<Arc<TenantRecord>>, StoreError> {
        if let Some(key) = self.installations.get(installation_id)
            && let Some(tenant) = self.find(&key).await?
            && tenant.is_installed()
            && tenant.installation.installation_id.as_deref() == Some(installation_id)
        {
            return Ok(Some(tenant));
        }
        let found = self.inner.find_by_installation_id(installation_id).await?;
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

    async fn client_keys(&self) -> Result<Vec<String>, StoreError> {
        self.inner.client_keys().await
    }

    async fn list(&self) -> Result<Vec<Arc<TenantRecord>>, StoreError> {
        self.inner.list().await
    }

    async fn save(
        &self,
        tenant: &Installation,
        token: &LifecycleToken,
    ) -> Result<SaveOutcome, StoreError> {
        let saved = self.inner.save(tenant, token).await;
        self.forget(Some(tenant.client_key.as_str()));
        saved
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

    async fn mark_uninstalled(
        &self,
        key: &ClientKey,
        token: &LifecycleToken,
    ) -> Result<bool, StoreError> {
        let done = self.inner.mark_uninstalled(key, token).await;
        self.forget(Some(key.as_str()));
        done
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

    async fn purge_uninstalled(&self, before: DateTime<Utc>) -> Result<Vec<Purged>, StoreError> {
        let purged = self.inner.purge_uninstalled(before).await;
        for p in purged.iter().flatten() {
            self.forget(Some(p.client_key.as_str()));
        }
        purged
    }

    async fn reencrypt_secrets(&self) -> Result<u64, StoreError> {
        let done = self.inner.reencrypt_secrets().await;
        self.forget(None);
        done
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;
    use crate::store::registry::Registry;
    use crate::store::{Database, Keyring, SqliteStore};

    /// Delegates to a real registry, counting tenant reads, and holds `find` after its read
    /// until released when `hold` is set.
    struct SlowReads {
        registry: Registry,
        read: Arc<Notify>,
        release: Arc<Notify>,
        hold: Mutex<bool>,
        reads: AtomicU64,
    }

    #[async_trait]
    impl Tenants for SlowReads {
        async fn find(&self, key: &str) -> Result<Option<Arc<TenantRecord>>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let found = self.registry.find(key).await;
            let hold = std::mem::take(&mut *self.hold.lock().unwrap());
            if hold {
                self.read.notify_one();
                self.release.notified().await;
            }
            found
        }
        async fn find_by_installation_id(
            &self,
            id: &str,
        ) -> Result<Option<Arc<TenantRecord>>, StoreError> {
            self.registry.find_by_installation_id(id).await
        }
        async fn find_installed_by_cloud_id(
            &self,
            id: &str,
            product: Option<&str>,
        ) -> Result<Vec<Arc<TenantRecord>>, StoreError> {
            self.registry.find_installed_by_cloud_id(id, product).await
        }
        async fn client_keys(&self) -> Result<Vec<String>, StoreError> {
            self.registry.client_keys().await
        }
        async fn list(&self) -> Result<Vec<Arc<TenantRecord>>, StoreError> {
            self.registry.list().await
        }
        async fn save(
            &self,
            t: &Installation,
            token: &LifecycleToken,
        ) -> Result<SaveOutcome, StoreError> {
            self.registry.save(t, token).await
        }
        async fn save_forge_installation(
            &self,
            i: &ForgeInstallation,
            t: &LifecycleToken,
        ) -> Result<ForgeSaved, StoreError> {
            self.registry.save_forge_installation(i, t).await
        }
        async fn mark_uninstalled(
            &self,
            k: &ClientKey,
            t: &LifecycleToken,
        ) -> Result<bool, StoreError> {
            self.registry.mark_uninstalled(k, t).await
        }
        async fn set_enabled(
            &self,
            k: &ClientKey,
            enabled: bool,
            t: &LifecycleToken,
        ) -> Result<bool, StoreError> {
            self.registry.set_enabled(k, enabled, t).await
        }
        async fn purge_uninstalled(
            &self,
            before: DateTime<Utc>,
        ) -> Result<Vec<Purged>, StoreError> {
            self.registry.purge_uninstalled(before).await
        }
        async fn reencrypt_secrets(&self) -> Result<u64, StoreError> {
            self.registry.reencrypt_secrets().await
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
        let store = SqliteStore::connect(&url, 2).await.unwrap();
        Arc::new(SlowReads {
            registry: Registry {
                db: Database::Sqlite(store),
                keyring: Arc::new(Keyring::new(&[3; 32], &[])),
            },
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
        slow.save(&install("s"), &token(1)).await.unwrap();
        let mut cache = TenantCache::new(slow.clone(), 10);
        cache.load_known_keys().await.unwrap();
        let started = std::time::Instant::now();
        for i in 0..200 {
            assert!(cache.find(&format!("random-{i}")).await.unwrap().is_none());
        }
        // The burst, and what the quota gave back while the lookups ran.
        let refilled =
            started.elapsed().as_millis() as u64 * u64::from(UNKNOWN_KEY_READS_PER_SEC) / 1000;
        let unknown = slow.reads.load(Ordering::SeqCst);
        assert!(
            (1..=u64::from(UNKNOWN_KEY_READS_PER_SEC) + refilled + 1).contains(&unknown),
            "{unknown} reads for 200 unknown issuers"
        );
        assert!(cache.find("acme").await.unwrap().is_some());
        assert_eq!(slow.reads.load(Ordering::SeqCst), unknown + 1);

        // A key another replica announces is looked up from then on.
        cache.unknown_reads = Arc::new(governor::RateLimiter::direct(governor::Quota::per_hour(
            std::num::NonZeroU32::MIN,
        )));
        let _ = cache.unknown_reads.check();
        assert!(cache.find("announced").await.unwrap().is_none());
        assert_eq!(slow.reads.load(Ordering::SeqCst), unknown + 1);
        cache.forget(Some("announced"));
        assert!(cache.find("announced").await.unwrap().is_none());
        assert_eq!(slow.reads.load(Ordering::SeqCst), unknown + 2);
    }

    #[tokio::test]
    async fn a_tenant_another_replica_just_installed_is_found_before_its_change_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let slow = slow_reads(&dir, false).await;
        let cache = TenantCache::new(slow.clone(), 10);
        cache.load_known_keys().await.unwrap();
        // Saved past this cache, as another replica saves it; no change has reached this one.
        slow.save(&install("s"), &token(1)).await.unwrap();
        assert!(cache.find("acme").await.unwrap().is_some());
        assert_eq!(slow.reads.load(Ordering::SeqCst), 1);
        // Known from then on, and cached.
        assert!(cache.known.may_exist("acme"));
        assert!(cache.find("acme").await.unwrap().is_some());
        assert_eq!(slow.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_lookup_racing_a_reinstall_does_not_cache_the_old_secret() {
        let dir = tempfile::tempdir().unwrap();
        let slow = slow_reads(&dir, true).await;
        let (read, release) = (slow.read.clone(), slow.release.clone());
        slow.save(&install("old"), &token(1)).await.unwrap();
        let cache = TenantCache::new(slow, 10);

        let lookup = tokio::spawn({
            let cache = cache.clone();
            async move { cache.find("acme").await }
        });
        read.notified().await;
        assert_eq!(
            cache.save(&install("new"), &token(2)).await.unwrap(),
            SaveOutcome::Saved
        );
        release.notify_one();
        let raced = lookup.await.unwrap().unwrap().unwrap();
        assert_eq!(raced.installation.shared_secret.expose(), "old");

        let now = cache.find("acme").await.unwrap().unwrap();
        assert_eq!(now.installation.shared_secret.expose(), "new");
    }
}
