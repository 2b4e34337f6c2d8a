//! Why a store call failed: one error for both backends and both drivers (sqlx for the registry
//! and SQLite, tokio-postgres for tenant transactions on Postgres), classified once here.

use super::{NotATenantTable, UnreadableSecret};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `DATABASE_URL` names no backend, or does not parse.
    #[error("{0}")]
    Url(String),
    /// The database cannot be reached now: no connection within the wait, a connection lost, the
    /// pool closed, the server shutting down. A later attempt may succeed (a request answers 503).
    #[error("the store is unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The database refused the statement.
    #[error(transparent)]
    Database(DatabaseError),
    /// The statement returned no row where one was required.
    #[error("no row was found")]
    RowNotFound,
    /// A row did not read into the type asked for.
    #[error("a row did not read: {0}")]
    Decode(#[source] BoxError),
    /// A tenant's stored sharedSecret does not open.
    #[error(transparent)]
    UnreadableSecret(#[from] UnreadableSecret),
    /// A table an app declared a tenant table cannot be one.
    #[error(transparent)]
    NotATenantTable(#[from] NotATenantTable),
    /// A migration failed, or the applied migrations differ from the known ones.
    #[error("migrating the store failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Anything else the driver reported.
    #[error("the store failed: {0}")]
    Other(#[source] BoxError),
}

/// What the database answered when it refused a statement.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DatabaseError {
    message: String,
    code: Option<String>,
    constraint: Option<String>,
    unique: bool,
    #[source]
    source: BoxError,
}

impl DatabaseError {
    /// The SQLSTATE (Postgres) or extended result code (SQLite), when the database gave one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The constraint that refused the statement, when the database names it.
    pub fn constraint(&self) -> Option<&str> {
        self.constraint.as_deref()
    }
}

impl StoreError {
    /// What the database answered, when it refused the statement.
    pub fn database(&self) -> Option<&DatabaseError> {
        match self {
            StoreError::Database(e) => Some(e),
            _ => None,
        }
    }

    /// The database's code for the refusal, if it refused the statement.
    pub fn code(&self) -> Option<&str> {
        self.database().and_then(DatabaseError::code)
    }

    /// A unique or primary-key constraint refused the write (on either backend).
    pub fn is_unique_violation(&self) -> bool {
        self.database().is_some_and(|e| e.unique)
    }

    /// The database could not be reached: retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// The store's wait for a connection ran out.
    pub(crate) fn timed_out() -> Self {
        StoreError::Unavailable("no connection to the store in time".into())
    }
}

/// Postgres shutting down (57P01–57P03) or a connection failure (08xxx).
fn unavailable_code(code: &str) -> bool {
    code.starts_with("57P") || code.starts_with("08")
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned());
                if code.as_deref().is_some_and(unavailable_code) {
                    return StoreError::Unavailable(db.into_error());
                }
                StoreError::Database(DatabaseError {
                    message: db.message().to_owned(),
                    constraint: db.constraint().map(str::to_owned),
                    unique: db.is_unique_violation(),
                    code,
                    source: db.into_error(),
                })
            }
            sqlx::Error::RowNotFound => StoreError::RowNotFound,
            sqlx::Error::Decode(e) => match e.downcast::<UnreadableSecret>() {
                Ok(unreadable) => StoreError::UnreadableSecret(*unreadable),
                Err(e) => StoreError::Decode(e),
            },
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::TypeNotFound { .. } => StoreError::Decode(Box::new(e)),
            sqlx::Error::Migrate(e) => StoreError::Migration(*e),
            sqlx::Error::Configuration(e) => match e.downcast::<NotATenantTable>() {
                Ok(table) => StoreError::NotATenantTable(*table),
                Err(e) => StoreError::Other(e),
            },
            e => StoreError::Other(Box::new(e)),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            if unavailable_code(code) {
                return StoreError::Unavailable(Box::new(e));
            }
            return StoreError::Database(DatabaseError {
                message: db.message().to_owned(),
                unique: *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION,
                code: Some(code.to_owned()),
                constraint: db.constraint().map(str::to_owned),
                source: Box::new(e),
            });
        }
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        if e.is_closed() || io || e.to_string().starts_with("error connecting") {
            return StoreError::Unavailable(Box::new(e));
        }
        StoreError::Other(Box::new(e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => StoreError::Unavailable(Box::new(e)),
        }
    }
}

impl From<StoreError> for crate::error::Error {
    /// A store that cannot be reached is 503 (the client may retry); any other store error is 500.
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            crate::error::Error::StoreUnavailable(Box::new(e))
        } else {
            crate::error::Error::Database(Box::new(e))
        }
    }
}

impl From<sqlx::Error> for crate::error::Error {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_and_a_server_shutting_down_are_unavailable_and_the_rest_are_not() {
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(StoreError::from(sqlx::Error::PoolClosed).is_unavailable());
        assert!(StoreError::from(sqlx::Error::Io(std::io::Error::other("reset"))).is_unavailable());
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_unavailable());
        assert!(matches!(
            StoreError::from(sqlx::Error::RowNotFound),
            StoreError::RowNotFound
        ));
        assert!(unavailable_code("57P01") && unavailable_code("08006"));
        assert!(!unavailable_code("23505") && !unavailable_code("42501"));
    }

    #[test]
    fn an_unreadable_secret_inside_a_decode_error_is_named() {
        let unreadable = UnreadableSecret {
            client_key: "k".into(),
            source: crate::store::secrets::OpenError::Corrupt,
        };
        let e = StoreError::from(sqlx::Error::Decode(Box::new(unreadable)));
        assert!(matches!(e, StoreError::UnreadableSecret(u) if u.client_key == "k"));
    }
}
