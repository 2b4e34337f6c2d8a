//! The embedded SQLite backend: the zero-setup default, for one replica.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::StoreError;
use super::{ClientKey, PoolUsage, TenantTransaction};

/// A store's SQLite backend, in one file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file with a pool of `pool_size` and runs the
    /// migrations.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        Self::connect_with_migrations(url, pool_size, &super::AppMigrations::default()).await
    }

    /// [`connect`](Self::connect), running the app's migrations with the library's and checking
    /// its tenant tables.
    pub async fn connect_with_migrations(
        url: &str,
        pool_size: u32,
        app: &super::AppMigrations,
    ) -> Result<Self, StoreError> {
        let in_memory = crate::config::sqlite_file(url).is_none();
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = if in_memory {
            // The database lives as long as one connection to it does: keep one, always.
            SqlitePoolOptions::new()
                .max_connections(pool_size)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options.journal_mode(SqliteJournalMode::Memory))
                .await?
        } else {
            let options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            owner_only(options.get_filename()).map_err(sqlx::Error::Io)?;
            SqlitePoolOptions::new()
                .max_connections(pool_size)
                .connect_with(options)
                .await?
        };
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
                return Err(super::NotATenantTable(table.clone()).into());
            }
        }
        Ok(Self { pool })
    }

    /// A transaction for `key`'s data. SQLite has no row-level security: as everywhere, every
    /// statement in it must filter by the key.
    pub async fn begin_tenant(
        &self,
        _key: &ClientKey,
    ) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// A transaction outside any tenant, as a store transaction.
    pub(super) async fn begin(&self) -> Result<TenantTransaction, StoreError> {
        Ok(TenantTransaction::sqlite(self.pool.begin().await?))
    }

    /// A pooled connection running each statement on its own.
    pub(super) async fn connection(&self) -> Result<TenantTransaction, StoreError> {
        Ok(TenantTransaction::sqlite_connection(
            self.pool.acquire().await?,
        ))
    }

    pub(super) fn pool_usage(&self) -> PoolUsage {
        PoolUsage::of(&self.pool)
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

/// Makes the database file (made now if missing) and its `-wal` and `-shm` files readable by
/// their owner alone: they hold every tenant's data. SQLite gives the files it makes beside the
/// database the database file's mode.
fn owner_only(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                done => done?,
            }
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[tokio::test]
    async fn the_database_and_its_wal_and_shm_files_are_the_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("notes.db");
        // A file left readable by an older version is closed too.
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let url = format!("sqlite://{}", db.display());
        let store = SqliteStore::connect(&url, 2).await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("notes.db{suffix}"));
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        drop(store);
    }
}
