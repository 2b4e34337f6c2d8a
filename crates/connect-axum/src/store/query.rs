//! One SQL text for both backends: a transaction and its statements dispatch to Postgres or
//! SQLite, so an app's handlers (and the library's own registry) write each statement once, in the
//! dialect the two share (`$1` placeholders, `on conflict`, `returning`).

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Encode, FromRow, PgConnection, Postgres, Sqlite, SqliteConnection, Transaction, Type};

use super::ClientKey;

/// A value either backend can bind: text, integers, booleans, timestamps, their `Option`s.
pub trait Bind<'q>:
    'q + Send + Encode<'q, Postgres> + Type<Postgres> + Encode<'q, Sqlite> + Type<Sqlite>
{
}

impl<'q, T> Bind<'q> for T where
    T: 'q + Send + Encode<'q, Postgres> + Type<Postgres> + Encode<'q, Sqlite> + Type<Sqlite>
{
}

/// A row either backend can read: a `#[derive(sqlx::FromRow)]` struct, or a tuple.
pub trait Row: Send + Unpin + for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> {}

impl<T> Row for T where T: Send + Unpin + for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow>
{}

/// A transaction on one tenant's rows, on either backend; see
/// [`TenantStore::tenant_transaction`](super::TenantStore::tenant_transaction).
///
/// On Postgres, row-level security admits only that tenant's rows in it; SQLite has none, so every
/// statement still filters by the key. Dropped without [`commit`](Self::commit), it rolls back.
pub struct TenantTransaction {
    key: Option<ClientKey>,
    tx: Tx,
}

enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl TenantTransaction {
    pub(crate) fn postgres(key: Option<ClientKey>, tx: Transaction<'static, Postgres>) -> Self {
        Self {
            key,
            tx: Tx::Postgres(tx),
        }
    }

    pub(crate) fn sqlite(key: Option<ClientKey>, tx: Transaction<'static, Sqlite>) -> Self {
        Self {
            key,
            tx: Tx::Sqlite(tx),
        }
    }

    /// The tenant whose rows this transaction reaches.
    pub fn client_key(&self) -> Option<&ClientKey> {
        self.key.as_ref()
    }

    /// A statement in this transaction; bind its parameters in order.
    pub fn query<'t>(&'t mut self, sql: &'t str) -> Statement<'t> {
        Statement(match &mut self.tx {
            Tx::Postgres(tx) => Stmt::Postgres(tx, sqlx::query(sql)),
            Tx::Sqlite(tx) => Stmt::Sqlite(tx, sqlx::query(sql)),
        })
    }

    /// Makes the transaction's writes durable.
    pub async fn commit(self) -> sqlx::Result<()> {
        match self.tx {
            Tx::Postgres(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }

    /// Undoes the transaction's writes now (dropping it does the same, later).
    pub async fn rollback(self) -> sqlx::Result<()> {
        match self.tx {
            Tx::Postgres(tx) => tx.rollback().await,
            Tx::Sqlite(tx) => tx.rollback().await,
        }
    }
}

/// A statement of a [`TenantTransaction`], run with `execute` or one of the `fetch`es.
#[must_use = "a statement does nothing until it is executed or fetched"]
pub struct Statement<'t>(Stmt<'t>);

enum Stmt<'t> {
    Postgres(&'t mut PgConnection, Query<'t, Postgres, PgArguments>),
    Sqlite(
        &'t mut SqliteConnection,
        Query<'t, Sqlite, SqliteArguments<'t>>,
    ),
}

impl<'t> Statement<'t> {
    /// Binds the next parameter (`$1`, `$2`, … in order).
    pub fn bind<T: Bind<'t>>(self, value: T) -> Self {
        Statement(match self.0 {
            Stmt::Postgres(conn, query) => Stmt::Postgres(conn, query.bind(value)),
            Stmt::Sqlite(conn, query) => Stmt::Sqlite(conn, query.bind(value)),
        })
    }

    /// Runs the statement; returns how many rows it changed.
    pub async fn execute(self) -> sqlx::Result<u64> {
        Ok(match self.0 {
            Stmt::Postgres(conn, query) => query.execute(conn).await?.rows_affected(),
            Stmt::Sqlite(conn, query) => query.execute(conn).await?.rows_affected(),
        })
    }

    /// Every row the statement returns.
    pub async fn fetch_all<R: Row>(self) -> sqlx::Result<Vec<R>> {
        match self.0 {
            Stmt::Postgres(conn, query) => {
                query
                    .try_map(|row: PgRow| R::from_row(&row))
                    .fetch_all(conn)
                    .await
            }
            Stmt::Sqlite(conn, query) => {
                query
                    .try_map(|row: SqliteRow| R::from_row(&row))
                    .fetch_all(conn)
                    .await
            }
        }
    }

    /// The one row the statement returns ([`sqlx::Error::RowNotFound`] when there is none).
    pub async fn fetch_one<R: Row>(self) -> sqlx::Result<R> {
        self.fetch_optional().await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// The first row the statement returns, if any.
    pub async fn fetch_optional<R: Row>(self) -> sqlx::Result<Option<R>> {
        match self.0 {
            Stmt::Postgres(conn, query) => {
                query
                    .try_map(|row: PgRow| R::from_row(&row))
                    .fetch_optional(conn)
                    .await
            }
            Stmt::Sqlite(conn, query) => {
                query
                    .try_map(|row: SqliteRow| R::from_row(&row))
                    .fetch_optional(conn)
                    .await
            }
        }
    }
}
