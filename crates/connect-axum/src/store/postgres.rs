//! The Postgres backend, for production.

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Transaction};
use tokio::task::AbortHandle;

use super::StoreError;
use super::transaction::{PgTransaction, TenantTransaction};
use super::{ClientKey, PoolUsage, StoreOptions};

/// The channel the `tenant` table's trigger notifies with the changed `client_key`.
const TENANT_CHANNEL: &str = "connect_axum_tenant";

/// The role every pooled connection works as: it does not bypass row-level security.
pub const APP_ROLE: &str = "connect_axum_app";

/// A store's Postgres backend.
#[derive(Clone)]
pub struct PgStore {
    /// [`begin_tenant`](Self::begin_tenant)'s, for an app's Postgres-only SQL; it connects when
    /// first used.
    pool: PgPool,
    /// Every statement of the store's own and [`Store::tenant_transaction`](super::Store::tenant_transaction)'s,
    /// on tokio-postgres, which sends a transaction's `BEGIN`, key and first statement in one
    /// write (sqlx waits for each answer before it sends the next statement).
    tenant_pool: deadpool_postgres::Pool,
    /// The serving login, for the change listener's own connection.
    connect_options: PgConnectOptions,
    acquire_timeout: Duration,
    listener: Arc<Mutex<Option<Listening>>>,
}

/// The change listener: its connection (a pool of one, apart from the requests') and its task.
struct Listening {
    pool: PgPool,
    task: AbortHandle,
}

impl PgStore {
    /// Runs the migrations as the login of `options.migration_url` (the tables' owner), or of
    /// `options.database_url` when there is none.
    pub async fn migrate(options: &StoreOptions) -> Result<(), StoreError> {
        let url = options
            .migration_url
            .as_deref()
            .unwrap_or(&options.database_url);
        let owner_options = PgConnectOptions::from_str(url)?;
        let connecting = PgConnection::connect_with(&owner_options);
        let mut owner = tokio::time::timeout(options.acquire_timeout, connecting)
            .await
            .map_err(|_| {
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the database did not accept a connection in time",
                ))
            })??;
        let library = sqlx::migrate!("migrations/postgres");
        let applied: bool =
            sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
                .fetch_one(&mut owner)
                .await?;
        if applied {
            for (version, old, new) in super::rewritten(super::Backend::Postgres, &library) {
                sqlx::query(
                    "update _sqlx_migrations set checksum = $1 where version = $2 and checksum = $3",
                )
                .bind(new)
                .bind(version)
                .bind(old)
                .execute(&mut owner)
                .await?;
            }
        }
        super::combined_migrator(&library, &options.app_migrations.postgres)
            .await?
            .run(&mut owner)
            .await?;
        for table in &options.app_migrations.tenant_tables {
            sqlx::query("select connect_axum_tenant_table(to_regclass($1))")
                .bind(table)
                .execute(&mut owner)
                .await
                .map_err(|e| match e {
                    sqlx::Error::Database(_) => super::NotATenantTable(table.clone()).into(),
                    e => StoreError::from(e),
                })?;
        }
        Ok(owner.close().await?)
    }

    /// Runs the migrations (see [`migrate`](Self::migrate)), then opens a pool of
    /// `options.pool_size` connections as the login of `options.database_url`, each working as
    /// [`APP_ROLE`]; secrets are sealed with `options.keyring`.
    pub async fn connect(options: &StoreOptions) -> Result<Self, StoreError> {
        Self::migrate(options).await?;
        let connect_options = PgConnectOptions::from_str(&options.database_url)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size)
            // Bounds connecting too: a new connection to a host that does not answer gives up
            // when the wait does.
            .acquire_timeout(options.acquire_timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let set_role = format!("set role {APP_ROLE}");
                    conn.execute(set_role.as_str()).await.map(|_| ())
                })
            })
            .connect_lazy_with(connect_options.clone());
        let store = Self {
            pool,
            tenant_pool: tenant_pool(options)?,
            connect_options,
            acquire_timeout: options.acquire_timeout,
            listener: Arc::default(),
        };
        // The serving login connects and takes its role, or the store does not open.
        store
            .connection()
            .await?
            .query("select 1")
            .execute()
            .await?;
        Ok(store)
    }

    /// A transaction in which row-level security admits only `key`'s rows: `app.client_key` is
    /// set for this transaction only. A statement that forgets to filter by tenant sees no other
    /// tenant's rows and cannot write them; outside such a transaction no tenant's rows are
    /// visible at all.
    ///
    /// The setting travels with `BEGIN` in one round trip, the key hex-encoded; the same
    /// refusal of a transaction an earlier message began applies as in tenant transactions.
    pub async fn begin_tenant(
        &self,
        key: &ClientKey,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.begin_in_task(enter_tenant(key)).await
    }

    /// A tenant transaction on the pipelining pool: no round trip until its first statement.
    pub(super) async fn tenant_transaction(
        &self,
        key: &ClientKey,
    ) -> Result<TenantTransaction, StoreError> {
        let conn = self.tenant_pool.get().await?;
        Ok(TenantTransaction::postgres(PgTransaction::new(
            conn,
            Some(enter_tenant(key)),
            self.acquire_timeout,
            None,
        )))
    }

    /// A transaction outside any tenant (the registry tables), begun with its first statement.
    pub(super) async fn begin(&self) -> Result<TenantTransaction, StoreError> {
        let conn = self.tenant_pool.get().await?;
        Ok(TenantTransaction::postgres(PgTransaction::new(
            conn,
            Some("begin".to_owned()),
            self.acquire_timeout,
            Some(self.acquire_timeout),
        )))
    }

    /// A pooled connection running each statement on its own.
    pub(super) async fn connection(&self) -> Result<TenantTransaction, StoreError> {
        let conn = self.tenant_pool.get().await?;
        Ok(TenantTransaction::postgres(PgTransaction::new(
            conn,
            None,
            self.acquire_timeout,
            Some(self.acquire_timeout),
        )))
    }

    /// The connections of both pools.
    pub(super) fn pool_usage(&self) -> PoolUsage {
        let sqlx = PoolUsage::of(&self.pool);
        let tenants = self.tenant_pool.status();
        PoolUsage {
            open: sqlx.open + tenants.size as u32,
            idle: sqlx.idle + tenants.available as u32,
            max: sqlx.max + tenants.max_size as u32,
        }
    }

    /// Begins a transaction (with `statement` in place of `BEGIN`) in a task of its own.
    ///
    /// sqlx 0.8.6 counts a transaction as open only once the server has answered `BEGIN`: a
    /// caller dropped while it waits (a cancelled or timed-out request) leaves the session inside
    /// a transaction that nothing rolls back, and the pool hands the connection on, so that the
    /// next user's writes are made in it and lost (launchbadge/sqlx#4393). The task always sees
    /// the answer; a transaction nobody takes from it is dropped there and rolls back before its
    /// connection is used again. This costs a task, not a round trip.
    async fn begin_in_task(
        &self,
        statement: String,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        let pool = self.pool.clone();
        let begun = tokio::spawn(async move { pool.begin_with(statement).await });
        match begun.await {
            Ok(transaction) => Ok(transaction?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels the task.
            Err(_) => Err(sqlx::Error::PoolClosed.into()),
        }
    }

    /// Calls `on_change` with the key of every tenant changed by any replica, and with `None`
    /// when the listening connection was lost (changes may have been missed). Listens before it
    /// returns, on a connection of its own: a `LISTEN` holds its connection for good, and in the
    /// pool it would take one of the requests' (all of them at `DB_POOL_SIZE=1`). Closing the
    /// store stops it.
    pub async fn listen_for_changes(
        &self,
        on_change: impl Fn(Option<&str>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.acquire_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(self.connect_options.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(TENANT_CHANNEL).await?;
        let task = tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => on_change(Some(notification.payload())),
                    // The connection dropped; the listener has connected and listens again.
                    Ok(None) => on_change(None),
                    Err(sqlx::Error::PoolClosed) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "tenant change listener failed; retrying");
                        on_change(None);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let listening = Listening {
            pool,
            task: task.abort_handle(),
        };
        let previous = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(listening);
        if let Some(previous) = previous {
            previous.stop().await;
        }
        Ok(())
    }

    /// Stops the change listener, then closes the pool once the connections in use are back.
    pub(super) async fn close_connections(&self) {
        let listening = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(listening) = listening {
            listening.stop().await;
        }
        self.tenant_pool.close();
        self.pool.close().await;
    }
}

/// `BEGIN` and `key` as the tenant of that transaction, in one message. The key is sent
/// hex-encoded, so no character of it is ever read as SQL; `connect_axum_enter_tenant` refuses to
/// run in a transaction begun by an earlier message (one a cancelled request would have left
/// open), so no statement ever joins another's.
fn enter_tenant(key: &ClientKey) -> String {
    format!(
        "begin; select connect_axum_enter_tenant(convert_from(decode('{}', 'hex'), 'UTF8'))",
        hex::encode(key.as_str())
    )
}

/// The tenant transactions' pool: `options.pool_size` connections of the serving login, each
/// working as [`APP_ROLE`], opened when needed.
fn tenant_pool(options: &StoreOptions) -> Result<deadpool_postgres::Pool, StoreError> {
    let mut config: tokio_postgres::Config = options
        .database_url
        .parse()
        .map_err(|e: tokio_postgres::Error| StoreError::Url(format!("DATABASE_URL: {e}")))?;
    config.connect_timeout(options.acquire_timeout);
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(options.pool_size as usize)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(options.acquire_timeout))
        .create_timeout(Some(options.acquire_timeout))
        .post_create(deadpool_postgres::Hook::async_fn(|client, _| {
            Box::pin(async move {
                client
                    .batch_execute(&format!("set role {APP_ROLE}"))
                    .await
                    .map_err(deadpool_postgres::HookError::Backend)
            })
        }))
        .build()
        .map_err(|e| StoreError::Other(Box::new(e)))
}

impl Listening {
    async fn stop(self) {
        self.task.abort();
        self.pool.close().await;
    }
}
