//! The notes' SQL, one text for both stores, each statement in the tenant's transaction (on
//! Postgres, row-level security admits only that tenant's rows).

use chrono::{DateTime, Utc};
use connect_axum::store::{self, ClientKey, TenantStore};
use serde::{Deserialize, Serialize};

/// A note attached to a Jira issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "camelCase"))]
pub struct Note {
    pub id: i64,
    pub issue_key: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub author: Option<String>,
}

/// A note to create.
#[derive(Debug, Clone)]
pub struct NewNote {
    pub issue_key: String,
    pub body: String,
    pub author: Option<String>,
}

/// What deleting a note did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteDeletion {
    /// The note is gone.
    Deleted,
    /// The tenant has no such note on that issue.
    Missing,
    /// The note is there, written by someone else, and was kept.
    OtherAuthor,
}

/// The tenant's notes on one issue, oldest first.
pub async fn list_notes(
    store: &dyn TenantStore,
    key: &ClientKey,
    issue_key: &str,
) -> sqlx::Result<Vec<Note>> {
    let mut tx = store.tenant_transaction(key).await?;
    // Read-only: dropped rather than committed, so the read is one round trip (the ROLLBACK is
    // sent without waiting for its answer).
    tx.query(
        "select id, issue_key, body, author, created_at from note \
         where client_key = $1 and issue_key = $2 order by id",
    )
    .bind(key.as_str())
    .bind(issue_key)
    .fetch_all()
    .await
}

/// Adds a note for the tenant.
pub async fn create_note(
    store: &dyn TenantStore,
    key: &ClientKey,
    note: NewNote,
) -> sqlx::Result<Note> {
    let created_at = store::now();
    let mut tx = store.tenant_transaction(key).await?;
    let (id,): (i64,) = tx
        .query(
            "insert into note (client_key, issue_key, body, author, created_at) \
             values ($1, $2, $3, $4, $5) returning id",
        )
        .bind(key.as_str())
        .bind(&note.issue_key)
        .bind(&note.body)
        .bind(&note.author)
        .bind(created_at)
        .fetch_one()
        .await?;
    tx.commit().await?;
    Ok(Note {
        id,
        issue_key: note.issue_key,
        body: note.body,
        author: note.author,
        created_at,
    })
}

/// Deletes one of the tenant's notes; with `author`, only if that account wrote it (the
/// condition is part of the delete, so no other request can slip in between).
pub async fn delete_note(
    store: &dyn TenantStore,
    key: &ClientKey,
    issue_key: &str,
    id: i64,
    author: Option<&str>,
) -> sqlx::Result<NoteDeletion> {
    let mut tx = store.tenant_transaction(key).await?;
    let deleted = tx
        .query(
            "delete from note where client_key = $1 and issue_key = $2 and id = $3 \
             and ($4 is null or author = $4)",
        )
        .bind(key.as_str())
        .bind(issue_key)
        .bind(id)
        .bind(author)
        .execute()
        .await?;
    if deleted > 0 {
        tx.commit().await?;
        return Ok(NoteDeletion::Deleted);
    }
    if author.is_none() {
        return Ok(NoteDeletion::Missing);
    }
    // Only to tell the caller why nothing was deleted; the delete itself held the condition.
    let (kept,): (i64,) = tx
        .query("select count(*) from note where client_key = $1 and issue_key = $2 and id = $3")
        .bind(key.as_str())
        .bind(issue_key)
        .bind(id)
        .fetch_one()
        .await?;
    Ok(if kept > 0 {
        NoteDeletion::OtherAuthor
    } else {
        NoteDeletion::Missing
    })
}

/// Deletes all of the tenant's notes on an issue; returns how many there were.
pub async fn delete_issue_notes(
    store: &dyn TenantStore,
    key: &ClientKey,
    issue_key: &str,
) -> sqlx::Result<u64> {
    let mut tx = store.tenant_transaction(key).await?;
    let deleted = tx
        .query("delete from note where client_key = $1 and issue_key = $2")
        .bind(key.as_str())
        .bind(issue_key)
        .execute()
        .await?;
    tx.commit().await?;
    Ok(deleted)
}
