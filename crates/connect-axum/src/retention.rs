//! The retention of uninstalled tenants: their data is kept for `UNINSTALL_RETENTION_DAYS` so a
//! quick reinstall finds it, then a background task purges the tenant with all its rows (an app's tables reference
//! `tenant (client_key) on delete cascade`, so theirs go too).

use std::time::Duration;

use crate::store::StoreError;
use crate::store::{self, Purged, Store};

/// Purges every tenant uninstalled more than `retention` ago, logging each one.
pub async fn purge_due(store: &Store, retention: Duration) -> Result<Vec<Purged>, StoreError> {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let before = store::now()
        .checked_sub_signed(retention)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let purged = store.tenants().purge_uninstalled(before).await?;
    for p in &purged {
        metrics::counter!("tenants_purged_total").increment(1);
        tracing::info!(
            tenant.client_key = %p.client_key,
            "purged tenant {} (uninstalled at {}) with all its rows",
            p.client_key,
            p.uninstalled_at.to_rfc3339(),
        );
    }
    Ok(purged)
}

/// Runs [`purge_due`] every `interval`, the first time at once, until the runtime stops.
pub fn spawn(store: Store, retention: Duration, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = purge_due(&store, retention).await {
                tracing::warn!(error = %e, "purging uninstalled tenants failed; next try in {interval:?}");
            }
        }
    })
}
