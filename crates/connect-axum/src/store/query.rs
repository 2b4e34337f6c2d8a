//! The registry's SQL, one text for both backends: its transactions and statements dispatch to
//! the sqlx pool of Postgres or SQLite, rows read by `sqlx::FromRow`. (An app's SQL goes through
//! [`RegistryTx`](super::RegistryTx).)

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{
    Encode, FromRow, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool,
    Transaction, Type,
};

use super::StoreError;
use super::{ClientKey, PgStore, SqliteStore};

/// A value either backend can bind.
pub(super) trait Bind<'q>:
    'q + Send + Encode<'q, Postgres> + Type<Postgres> + Encode<'q, Sqlite> + Type<Sqlite>
{
}

impl<'q, T> Bind<'q> for T where
    T: 'q + Send + Encode<'q, Postgres> + Type<Postgres> + Encode<'q, Sqlite> + Type<Sqlite>
{
}

/// A row either backend can read: a `#[derive(sqlx::FromRow)]` struct, or a tuple.
pub(super) trait Row:
    Send + Unpin + for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow>
{
}

impl<T> Row for T where T: Send + Unpin + for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow>
{}

/// A store's backend, for the registry's SQL: statements on its pool, and transactions begun the
/// backend's way.
#[derive(Clone, Copy)]
pub(super) enum Db<'s> {
    Postgres(&'s PgStore),
    Sqlite(&'s SqliteStore),
}

impl<'s> Db<'s> {
    /// A statement outside any transaction, on a connection the pool lends for it alone.
    pub(super) fn query(self, sql: &'s str) -> Statement<'s> {
        Statement(match self {
            Db::Postgres(pg) => Stmt::Postgres(On::Pool(pg.pool()), sqlx::query(sql)),
            Db::Sqlite(db) => Stmt::Sqlite(On::Pool(db.pool()), sqlx::query(sql)),
        })
    }

    /// A transaction outside any tenant (the registry tables).
    pub(super) async fn begin(self) -> Result<RegistryTx, StoreError> {
        Ok(match self {
            Db::Postgres(pg) => RegistryTx(Tx::Postgres(pg.begin().await?)),
            Db::Sqlite(db) => RegistryTx(Tx::Sqlite(db.begin().await?)),
        })
    }

    /// The backend's `begin_tenant`, for SQL both backends speak.
    pub(super) async fn begin_tenant(self, key: &ClientKey) -> Result<RegistryTx, StoreError> {
        Ok(match self {
            Db::Postgres(pg) => RegistryTx(Tx::Postgres(pg.begin_tenant(key).await?)),
            Db::Sqlite(db) => RegistryTx(Tx::Sqlite(db.begin_tenant(key).await?)),
        })
    }
}

/// A registry transaction; with [`Db::begin_tenant`], row-level security in force for one tenant.
/// Dropped without [`commit`](Self::commit), it rolls back.
pub(super) struct RegistryTx(Tx);

enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl RegistryTx {
    /// A statement in this transaction; bind its parameters in order.
    pub(super) fn query<'t>(&'t mut self, sql: &'t str) -> Statement<'t> {
        Statement(match &mut self.0 {
            Tx::Postgres(tx) => Stmt::Postgres(On::Transaction(&mut **tx), sqlx::query(sql)),
            Tx::Sqlite(tx) => Stmt::Sqlite(On::Transaction(&mut **tx), sqlx::query(sql)),
        })
    }

    /// Makes the transaction's writes durable.
    pub(super) async fn commit(self) -> Result<(), StoreError> {
        match self.0 {
            Tx::Postgres(tx) => Ok(tx.commit().await?),
            Tx::Sqlite(tx) => Ok(tx.commit().await?),
        }
    }

    /// Undoes the transaction's writes now (dropping it does the same, later).
    pub(super) async fn rollback(self) -> Result<(), StoreError> {
        match self.0 {
            Tx::Postgres(tx) => Ok(tx.rollback().await?),
            Tx::Sqlite(tx) => Ok(tx.rollback().await?),
        }
    }
}

/// A registry statement, run with `execute` or one of the `fetch`es.
#[must_use = "a statement does nothing until it is executed or fetched"]
pub(super) struct Statement<'t>(Stmt<'t>);

enum Stmt<'t> {
    Postgres(
        On<'t, PgConnection, PgPool>,
        Query<'t, Postgres, PgArguments>,
    ),
    Sqlite(
        On<'t, SqliteConnection, SqlitePool>,
        Query<'t, Sqlite, SqliteArguments<'t>>,
    ),
}

/// Where a statement runs: in a transaction's connection, or on the pool.
enum On<'t, C, P> {
    Transaction(&'t mut C),
    Pool(&'t P),
}

impl<'t> Statement<'t> {
    /// Binds the next parameter (`$1`, `$2`, … in order).
    pub(super) fn bind<T: Bind<'t>>(self, value: T) -> Self {
        Statement(match self.0 {
            Stmt::Postgres(on, query) => Stmt::Postgres(on, query.bind(value)),
            Stmt::Sqlite(on, query) => Stmt::Sqlite(on, query.bind(value)),
        })
    }

    /// Runs the statement; returns how many rows it changed.
    pub(super) async fn execute(self) -> Result<u64, StoreError> {
        Ok(match self.0 {
            Stmt::Postgres(On::Transaction(conn), query) => {
                query.execute(conn).await?.rows_affected()
            }
            Stmt::Postgres(On::Pool(pool), query) => query.execute(pool).await?.rows_affected(),
            Stmt::Sqlite(On::Transaction(conn), query) => {
                query.execute(conn).await?.rows_affected()
            }
            Stmt::Sqlite(On::Pool(pool), query) => query.execute(pool).await?.rows_affected(),
        })
    }

    /// Every row the statement returns.
    pub(super) async fn fetch_all<R: Row>(self) -> Result<Vec<R>, StoreError> {
        match self.0 {
            Stmt::Postgres(on, query) => {
                let rows = query.try_map(|row: PgRow| R::from_row(&row));
                match on {
                    On::Transaction(conn) => Ok(rows.fetch_all(conn).await?),
                    On::Pool(pool) => Ok(rows.fetch_all(pool).await?),
                }
            }
            Stmt::Sqlite(on, query) => {
                let rows = query.try_map(|row: SqliteRow| R::from_row(&row));
                match on {
                    On::Transaction(conn) => Ok(rows.fetch_all(conn).await?),
                    On::Pool(pool) => Ok(rows.fetch_all(pool).await?),
                }
            }
        }
    }

    /// The first row the statement returns, if any.
    pub(super) async fn fetch_optional<R: Row>(self) -> Result<Option<R>, StoreError> {
        match self.0 {
            Stmt::Postgres(on, query) => {
                let rows = query.try_map(|row: PgRow| R::from_row(&row));
                match on {
                    On::Transaction(conn) => Ok(rows.fetch_optional(conn).await?),
                    On::Pool(pool) => Ok(rows.fetch_optional(pool).await?),
                }
            }
            Stmt::Sqlite(on, query) => {
                let rows = query.try_map(|row: SqliteRow| R::from_row(&row));
                match on {
                    On::Transaction(conn) => Ok(rows.fetch_optional(conn).await?),
                    On::Pool(pool) => Ok(rows.fetch_optional(pool).await?),
                }
            }
        }
    }
}
