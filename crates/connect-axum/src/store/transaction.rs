//! A tenant's transaction, the one door an app's SQL has to its tables: one SQL text for both
//! backends (`$1` placeholders, `on conflict`, `returning`), rows read through serde. The
//! registry's own SQL runs on the same statements, in transactions outside any tenant or on a
//! connection of its own.
//!
//! On Postgres the transaction costs no round trip of its own: `BEGIN` and the tenant's key travel
//! in the same write as its first statement, and a transaction dropped without `COMMIT` sends its
//! `ROLLBACK` without waiting for the answer. A read is one round trip.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use serde::de::DeserializeOwned;
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Encode, Postgres, Sqlite, Transaction, Type};
use tokio_postgres::types::ToSql;

use super::StoreError;
use super::rows;

/// A value either backend can bind: text, integers, booleans, floats, bytes, timestamps, their
/// `Option`s and references. Postgres receives it typed as the value's Rust type says (`i64` as
/// `int8`, `&str` as `text`), as sqlx binds it.
pub trait Bind<'q>:
    'q + Send + Sync + ToSql + Type<Postgres> + Encode<'q, Sqlite> + Type<Sqlite>
{
}

impl<'q, T> Bind<'q> for T where
    T: 'q + Send + Sync + ToSql + Type<Postgres> + Encode<'q, Sqlite> + Type<Sqlite>
{
}

/// A row either backend can read: any `serde::Deserialize` type. A struct reads the columns by
/// its fields' names, a tuple reads them in order, any other type reads a single column.
/// Timestamps arrive as RFC 3339 text (what `chrono`'s `DateTime` reads), booleans may be stored
/// as integers (SQLite), `json`/`jsonb` columns read as nested values.
pub trait Row: DeserializeOwned + Send {}

impl<T: DeserializeOwned + Send> Row for T {}

/// A transaction on one tenant's rows, on either backend; see
/// [`Store::tenant_transaction`](super::Store::tenant_transaction).
///
/// On Postgres, row-level security admits only that tenant's rows in it; SQLite has none, so every
/// statement still filters by the key. Dropped without [`commit`](Self::commit), it rolls back.
pub struct TenantTransaction(Tx);

// Boxing the Postgres side would cost an allocation per transaction, on every request.
#[expect(clippy::large_enum_variant)]
enum Tx {
    Postgres(PgTransaction),
    Sqlite(Transaction<'static, Sqlite>),
    /// Statements each on their own, outside any transaction (the registry's).
    SqliteConnection(PoolConnection<Sqlite>),
}

/// A pooled Postgres connection in a transaction begun lazily, or (begun with nothing) running
/// each statement on its own.
pub(super) struct PgTransaction {
    conn: deadpool_postgres::Object,
    /// `BEGIN` (and the tenant's key), sent with the first statement; `None` once sent.
    begin: Option<String>,
    /// Begun and neither committed nor rolled back.
    open: bool,
    /// How long preparing a statement and `BEGIN` wait for the database's answer, which a
    /// database that answers at all gives at once: one that stops answering is a 503 then, not
    /// a request held until it times out.
    answer: Duration,
    /// How long the store's own statements wait for their answer (an app's may take longer).
    deadline: Option<Duration>,
}

impl PgTransaction {
    pub(super) fn new(
        conn: deadpool_postgres::Object,
        begin: Option<String>,
        answer: Duration,
        deadline: Option<Duration>,
    ) -> Self {
        Self {
            conn,
            begin,
            open: false,
            answer,
            deadline,
        }
    }

    /// `work`, within the deadline if there is one.
    async fn answered<T>(
        deadline: Option<Duration>,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match deadline {
            Some(deadline) => tokio::time::timeout(deadline, work)
                .await
                .map_err(|_| StoreError::timed_out())?,
            None => work.await,
        }
    }

    async fn statement(
        &mut self,
        sql: &str,
        types: &[tokio_postgres::types::Type],
    ) -> Result<tokio_postgres::Statement, StoreError> {
        let prepared = self.conn.prepare_typed_cached(sql, types);
        Self::answered(Some(self.answer), async {
            prepared.await.map_err(StoreError::from)
        })
        .await
    }

    /// Runs `op` on the connection, after `BEGIN` and the key in the same write when this is the
    /// transaction's first statement.
    async fn run<'c, T, F>(
        &'c mut self,
        op: impl FnOnce(&'c tokio_postgres::Client) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>> + 'c,
    {
        let begin = self.begin.take();
        if begin.is_some() {
            // From here a ROLLBACK is owed, whatever becomes of this future.
            self.open = true;
        }
        let client: &'c tokio_postgres::Client = &self.conn;
        let answer = self.answer;
        let work = async move {
            match begin {
                Some(begin) => {
                    // Polled in this order, the two requests leave in this order: the key is set
                    // before the statement runs, and if setting it fails the statement runs in an
                    // aborted transaction and fails too.
                    let begun = Self::answered(Some(answer), async {
                        client.batch_execute(&begin).await.map_err(StoreError::from)
                    });
                    let ran = async { op(client).await.map_err(StoreError::from) };
                    tokio::try_join!(begun, ran).map(|((), result)| result)
                }
                None => op(client).await.map_err(StoreError::from),
            }
        };
        Self::answered(self.deadline, work).await
    }

    async fn finish(&mut self, end: &str) -> Result<(), StoreError> {
        if !self.open {
            return Ok(());
        }
        let ended = self.conn.batch_execute(end);
        Self::answered(self.deadline, async {
            ended.await.map_err(StoreError::from)
        })
        .await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        if self.open {
            // One poll hands the ROLLBACK to the connection, ahead of anything its next user
            // sends; its answer is read and discarded there.
            let mut rollback = pin!(self.conn.batch_execute("rollback"));
            let _ = rollback
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()));
        }
    }
}

impl TenantTransaction {
    pub(super) fn postgres(tx: PgTransaction) -> Self {
        TenantTransaction(Tx::Postgres(tx))
    }

    pub(super) fn sqlite(tx: Transaction<'static, Sqlite>) -> Self {
        TenantTransaction(Tx::Sqlite(tx))
    }

    pub(super) fn sqlite_connection(conn: PoolConnection<Sqlite>) -> Self {
        TenantTransaction(Tx::SqliteConnection(conn))
    }

    /// A statement in this transaction; bind its parameters in order.
    pub fn query<'t>(&'t mut self, sql: &'t str) -> Statement<'t> {
        Statement(match &mut self.0 {
            Tx::Postgres(tx) => Stmt::Postgres {
                tx,
                sql,
                params: Vec::new(),
                types: Vec::new(),
            },
            Tx::Sqlite(tx) => Stmt::Sqlite(tx, sqlx::query(sql)),
            Tx::SqliteConnection(conn) => Stmt::Sqlite(conn, sqlx::query(sql)),
        })
    }

    /// Makes the transaction's writes durable.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self.0 {
            Tx::Postgres(mut tx) => tx.finish("commit").await,
            Tx::Sqlite(tx) => Ok(tx.commit().await?),
            Tx::SqliteConnection(_) => Ok(()),
        }
    }

    /// Undoes the transaction's writes now (dropping it does the same, without waiting).
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.0 {
            Tx::Postgres(mut tx) => tx.finish("rollback").await,
            Tx::Sqlite(tx) => Ok(tx.rollback().await?),
            Tx::SqliteConnection(_) => Ok(()),
        }
    }
}

/// A statement of a [`TenantTransaction`], run with `execute` or one of the `fetch`es.
#[must_use = "a statement does nothing until it is executed or fetched"]
pub struct Statement<'t>(Stmt<'t>);

enum Stmt<'t> {
    Postgres {
        tx: &'t mut PgTransaction,
        sql: &'t str,
        params: Vec<Box<dyn ToSql + Send + Sync + 't>>,
        types: Vec<tokio_postgres::types::Type>,
    },
    Sqlite(
        &'t mut sqlx::SqliteConnection,
        Query<'t, Sqlite, SqliteArguments<'t>>,
    ),
}

/// The Postgres type sqlx would bind `T` as.
fn pg_type<T: Type<Postgres>>() -> tokio_postgres::types::Type {
    T::type_info()
        .oid()
        .and_then(|oid| tokio_postgres::types::Type::from_oid(oid.0))
        .unwrap_or(tokio_postgres::types::Type::UNKNOWN)
}

impl<'t> Statement<'t> {
    /// Binds the next parameter (`$1`, `$2`, … in order).
    pub fn bind<T: Bind<'t>>(self, value: T) -> Self {
        Statement(match self.0 {
            Stmt::Postgres {
                tx,
                sql,
                mut params,
                mut types,
            } => {
                types.push(pg_type::<T>());
                params.push(Box::new(value));
                Stmt::Postgres {
                    tx,
                    sql,
                    params,
                    types,
                }
            }
            Stmt::Sqlite(conn, query) => Stmt::Sqlite(conn, query.bind(value)),
        })
    }

    /// Runs the statement; returns how many rows it changed.
    pub async fn execute(self) -> Result<u64, StoreError> {
        match self.0 {
            Stmt::Postgres {
                tx,
                sql,
                params,
                types,
            } => {
                let statement = tx.statement(sql, &types).await?;
                let params = refs(&params);
                tx.run(|client| async move { client.execute(&statement, &params).await })
                    .await
            }
            Stmt::Sqlite(conn, query) => Ok(query.execute(conn).await?.rows_affected()),
        }
    }

    /// Every row the statement returns.
    pub async fn fetch_all<R: Row>(self) -> Result<Vec<R>, StoreError> {
        match self.0 {
            Stmt::Postgres {
                tx,
                sql,
                params,
                types,
            } => {
                let statement = tx.statement(sql, &types).await?;
                let params = refs(&params);
                let rows = tx
                    .run(|client| async move { client.query(&statement, &params).await })
                    .await?;
                rows.iter().map(rows::from_postgres).collect()
            }
            Stmt::Sqlite(conn, query) => {
                let rows: Vec<SqliteRow> = query.fetch_all(conn).await?;
                rows.iter().map(rows::from_sqlite).collect()
            }
        }
    }

    /// The one row the statement returns ([`StoreError::RowNotFound`] when there is none).
    pub async fn fetch_one<R: Row>(self) -> Result<R, StoreError> {
        self.fetch_optional().await?.ok_or(StoreError::RowNotFound)
    }

    /// The first row the statement returns, if any.
    pub async fn fetch_optional<R: Row>(self) -> Result<Option<R>, StoreError> {
        match self.0 {
            Stmt::Postgres { .. } => Ok(self.fetch_all().await?.into_iter().next()),
            Stmt::Sqlite(conn, query) => query
                .fetch_optional(conn)
                .await?
                .map(|row: SqliteRow| rows::from_sqlite(&row))
                .transpose(),
        }
    }
}

fn refs<'p>(params: &'p [Box<dyn ToSql + Send + Sync + '_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}
