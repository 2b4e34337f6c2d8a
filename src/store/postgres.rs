//! The Postgres backend, for production.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};

/// The channel the `tenant` table's trigger notifies with the changed `client_key`.
const TENANT_CHANNEL: &str = "connect_axum_tenant";

/// A [`TenantStore`](super::TenantStore) on Postgres.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects with a pool of `pool_size` and runs the migrations.
    pub async fn connect(url: &str, pool_size: u32) -> sqlx::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Calls `on_change` with the key of every tenant changed by any replica, and with `None`
    /// when the listening connection was lost (changes may have been missed). Listens before it
    /// returns.
    pub async fn listen_for_changes(
        &self,
        on_change: impl Fn(Option<&str>) + Send + 'static,
    ) -> sqlx::Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(TENANT_CHANNEL).await?;
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => on_change(Some(notification.payload())),
                    // The connection dropped; the next call reconnects and listens again.
                    Ok(None) => on_change(None),
                    Err(e) => {
                        tracing::warn!(error = %e, "tenant change listener failed; retrying");
                        on_change(None);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(())
    }
}

super::shared_queries!(PgStore);
