//! The embedded SQLite backend: the zero-setup default, for one replica.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::{ClientKey, Database, Db, Keyring, PoolUsage, Registry};

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
        Self::connect_with_migrations(url, pool_size, keyring, &super::AppMigrations::default())
            .await
    }

    /// [`connect`](Self::connect), running the app's migrations with the library's and checking
    /// its tenant tables.
    pub async fn connect_with_migrations(
        url: &str,
        pool_size: u32,
        keyring: Arc<Keyring>,
        app: &super::AppMigrations,
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
        let library = sqlx::migrate!("migrations/sqlite");
        let applied: bool = sqlx::query_scalar(
            "select count(*) > 0 from sqlite_master where type = 'table' and name = '_sqlx_migrations'",
        )
        .fetch_one(&pool)
        .await?;
        if applied {
            for (version, old, new) in super::rewritten(super::Backend::Sqlite, &library) {
                sqlx::query(
                    "update _sqlx_migrations set checksum = $1 where version = $2 and checksum = $3",
                )
                .bind(new)
                .bind(version)
                .bind(old)
                .execute(&pool)
                .await?;
            }
        }
        super::combined_migrator(&library, &app.sqlite)
            .await?
            .run(&pool)
            .await?;
        for table in &app.tenant_tables {
            let (keyed,): (bool,) = sqlx::query_as(
                "select count(*) > 0 from pragma_table_info($1) where name = 'client_key'",
            )
            .bind(table)
            .fetch_one(&pool)
            .await?;
            if !keyed {
                return Err(sqlx::Error::Configuration(Box::new(
                    super::NotATenantTable(table.clone()),
                )));
            }
        }
        Ok(Self { pool, keyring })
    }

    /// A transaction for `key`'s data. SQLite has no row-level security: as everywhere, every
    /// statement in it must filter by the key.
    pub async fn begin_tenant(
        &self,
        _key: &ClientKey,
    ) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.begin().await
    }

    /// A transaction outside any tenant (the registry tables).
    pub(super) async fn begin(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.pool.begin().await
    }

    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl super::SqlBackend for SqliteStore {
    fn registry(&self) -> Registry<'_> {
        Registry {
            db: Db::Sqlite(self),
            keyring: &self.keyring,
        }
    }

    fn pool_usage(&self) -> PoolUsage {
        super::pool_usage(&self.pool)
    }

    fn database(&self) -> Database {
        Database::Sqlite(self.clone())
    }

    async fn tenant_transaction(&self, key: &ClientKey) -> sqlx::Result<super::TenantTransaction> {
        Ok(super::TenantTransaction::sqlite(
            self.begin_tenant(key).await?,
        ))
    }

    async fn close_pool(&self) {
        self.pool.close().await;
    }
}
