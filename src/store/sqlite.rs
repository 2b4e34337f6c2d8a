//! The embedded SQLite backend: the zero-setup default, for one replica.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::{ClientKey, Keyring};

/// A [`TenantStore`](super::TenantStore) in an SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    keyring: Arc<Keyring>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file with a pool of `pool_size` and runs the
    /// migrations; secrets are sealed with `keyring`.
    pub async fn connect(url: &str, pool_size: u32, keyring: Arc<Keyring>) -> sqlx::Result<Self> {
        Self::connect_with_migrations(url, pool_size, keyring, &[]).await
    }

    /// [`connect`](Self::connect), running the app's migrations `app` with the library's.
    pub async fn connect_with_migrations(
        url: &str,
        pool_size: u32,
        keyring: Arc<Keyring>,
        app: &[sqlx::migrate::Migration],
    ) -> sqlx::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_size)
            .connect_with(options)
            .await?;
        super::combined_migrator(&sqlx::migrate!("migrations/sqlite"), app)
            .await?
            .run(&pool)
            .await?;
        Ok(Self { pool, keyring })
    }

    /// A transaction for `key`'s data. SQLite has no row-level security: as everywhere, every
    /// statement in it must filter by the key.
    pub async fn tenant_transaction(
        &self,
        _key: &ClientKey,
    ) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.begin().await
    }

    /// A transaction outside any tenant (the registry tables).
    async fn begin(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.pool.begin().await
    }

    async fn close_connections(&self) {
        self.pool.close().await;
    }
}

super::shared_queries!(SqliteStore, Sqlite, super::Database::Sqlite);
