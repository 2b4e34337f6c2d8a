//! Where a request's notes are kept, one place to choose it: the tenant's rows in the store
//! (Postgres or SQLite, each statement in the tenant's transaction, [`crate::store`]), or, when
//! the app runs as a Forge Container, the installation's own Forge SQL database
//! ([`crate::forge_sql`]). Handlers speak to [`Notes`] and never know which.

use connect_axum::app::AppState;
use connect_axum::auth::Tenant;
use connect_axum::auth::container::ContainerInvocation;
use connect_axum::error::Result;
use connect_axum::forge::sql::Sql;
use connect_axum::store::{ClientKey, Store};

use crate::forge_sql;
use crate::store::{self, NewNote, NoteCaps, NoteCreation, NoteDeletion, NotesPage};

/// One tenant's notes, in the store that keeps them.
pub enum Notes<'a> {
    /// The tenant's rows in the store.
    Store {
        /// The store.
        store: &'a Store,
        /// The tenant whose rows they are.
        key: &'a ClientKey,
    },
    /// The installation's Forge SQL database.
    ForgeSql(Sql<'a>),
}

impl<'a> Notes<'a> {
    /// The notes of the request's tenant: in its installation's Forge SQL database when the
    /// request came through Forge's sidecar, in the store otherwise.
    ///
    /// # Errors
    /// The installation's Forge SQL migrations failed.
    pub async fn of_request(
        app: &'a AppState,
        tenant: &'a Tenant,
        invocation: Option<&ContainerInvocation>,
    ) -> Result<Self> {
        match (app.forge_sql(), invocation) {
            (Some(_), Some(invocation)) => Ok(Self::ForgeSql(app.sql_in(invocation).await?)),
            _ => Ok(Self::Store {
                store: app.store(),
                key: tenant.client_key(),
            }),
        }
    }

    /// The notes of the tenant `key` outside a request (an event handler): in Forge SQL as the
    /// app when the app runs as a Forge Container, in the store otherwise.
    ///
    /// # Errors
    /// The installation's Forge SQL migrations failed.
    pub async fn of_tenant(app: &'a AppState, key: &'a ClientKey) -> Result<Self> {
        match app.forge_sql() {
            Some(_) => Ok(Self::ForgeSql(app.sql_of(key.as_str()).await?)),
            None => Ok(Self::Store {
                store: app.store(),
                key,
            }),
        }
    }

    /// Up to `limit` notes on `issue_key` whose id is above `after`, oldest first.
    pub async fn list(&self, issue_key: &str, after: i64, limit: u32) -> Result<NotesPage> {
        Ok(match self {
            Self::Store { store, key } => {
                store::list_notes(store, key, issue_key, after, limit).await?
            }
            Self::ForgeSql(sql) => forge_sql::list_notes(sql, issue_key, after, limit).await?,
        })
    }

    /// Adds a note unless the issue or the tenant is at its cap.
    pub async fn create(&self, note: NewNote, caps: NoteCaps) -> Result<NoteCreation> {
        Ok(match self {
            Self::Store { store, key } => store::create_note(store, key, note, caps).await?,
            Self::ForgeSql(sql) => forge_sql::create_note(sql, note, caps).await?,
        })
    }

    /// Deletes one note; with `author`, only if that account wrote it.
    pub async fn delete(
        &self,
        issue_key: &str,
        id: i64,
        author: Option<&str>,
    ) -> Result<NoteDeletion> {
        Ok(match self {
            Self::Store { store, key } => {
                store::delete_note(store, key, issue_key, id, author).await?
            }
            Self::ForgeSql(sql) => forge_sql::delete_note(sql, issue_key, id, author).await?,
        })
    }

    /// Deletes every note on `issue_key`; returns how many there were.
    pub async fn delete_issue(&self, issue_key: &str) -> Result<u64> {
        Ok(match self {
            Self::Store { store, key } => store::delete_issue_notes(store, key, issue_key).await?,
            Self::ForgeSql(sql) => forge_sql::delete_issue_notes(sql, issue_key).await?,
        })
    }
}
