//! The Postgres backend, for production.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Transaction};

use super::{ClientKey, Keyring};

/// The channel the `tenant` table's trigger notifies with the changed `client_key`.
const TENANT_CHANNEL: &str = "connect_axum_tenant";

/// The role every pooled connection works as: it does not bypass row-level security.
pub const APP_ROLE: &str = "connect_axum_app";

/// A [`TenantStore`](super::TenantStore) on Postgres.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    keyring: Arc<Keyring>,
}

impl PgStore {
    /// Runs the migrations as the connecting user, then opens a pool of `pool_size` whose
    /// connections all work as [`APP_ROLE`]; secrets are sealed with `keyring`.
    pub async fn connect(url: &str, pool_size: u32, keyring: Arc<Keyring>) -> sqlx::Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let mut owner = PgConnection::connect_with(&options).await?;
        sqlx::migrate!("migrations/postgres")
            .run(&mut owner)
            .await?;
        owner.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let set_role = format!("set role {APP_ROLE}");
                    conn.execute(set_role.as_str()).await.map(|_| ())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool, keyring })
    }

    /// A transaction in which row-level security admits only `key`'s rows: `app.client_key` is
    /// set for this transaction only. A statement that forgets to filter by tenant sees no other
    /// tenant's rows and cannot write them; outside such a transaction no tenant's rows are
    /// visible at all.
    ///
    /// The setting travels with `BEGIN` in one round trip; the key is sent hex-encoded, so no
    /// character of it is ever read as SQL.
    pub async fn tenant_transaction(
        &self,
        key: &ClientKey,
    ) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.pool
            .begin_with(format!(
                "begin; select set_config('app.client_key', \
                 convert_from(decode('{}', 'hex'), 'UTF8'), true)",
                hex::encode(key.as_str())
            ))
            .await
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

super::shared_queries!(PgStore, Postgres);
