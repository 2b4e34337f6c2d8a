//! The notes' SQL, one text for both stores, each statement in the tenant's transaction (on
//! Postgres, row-level security admits only that tenant's rows).

use chrono::{DateTime, Utc};
use connect_axum::store::StoreError;
use connect_axum::store::{self, ClientKey, Store};
use serde::{Deserialize, Serialize};

/// A note attached to a Jira issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all(serialize = "camelCase"))]
pub struct Note {
    /// The note's id, numbered per tenant in the order written; pages run in its order.
    pub id: i64,
    /// The issue the note is on, `PROJ-1`.
    pub issue_key: String,
    /// The note's text.
    pub body: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// The Atlassian account id of the user who wrote it; `None` when no user was behind the
    /// request (the product's own call).
    pub author: Option<String>,
}

/// A note to create.
#[derive(Debug, Clone)]
pub struct NewNote {
    /// The issue it goes on, `PROJ-1`.
    pub issue_key: String,
    /// Its text, already checked.
    pub body: String,
    /// The account id of the writing user; `None` when no user is behind the request.
    pub author: Option<String>,
}

impl NewNote {
    /// The note as stored with `id` at `created_at`.
    pub fn stored(self, id: i64, created_at: DateTime<Utc>) -> Note {
        Note {
            id,
            issue_key: self.issue_key,
            body: self.body,
            author: self.author,
            created_at,
        }
    }
}

/// A page of a tenant's notes on one issue, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotesPage {
    /// The page's notes, oldest first.
    pub notes: Vec<Note>,
    /// Whether notes follow the last of this page.
    pub more: bool,
}

/// How many notes one tenant may keep: on one issue, and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoteCaps {
    /// `NOTES_PER_ISSUE_LIMIT`: notes on one issue.
    pub per_issue: u64,
    /// `NOTES_PER_TENANT_LIMIT`: notes in all.
    pub per_tenant: u64,
}

/// What adding a note did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteCreation {
    /// The note was written, as stored.
    Created(Note),
    /// The issue holds [`NoteCaps::per_issue`] notes; nothing was written.
    IssueFull,
    /// The tenant holds [`NoteCaps::per_tenant`] notes; nothing was written.
    TenantFull,
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

/// Up to `limit` of the tenant's notes on one issue whose id is above `after`, oldest first: a
/// keyset page, as fast for the last page as for the first.
pub async fn list_notes(
    store: &Store,
    key: &ClientKey,
    issue_key: &str,
    after: i64,
    limit: u32,
) -> Result<NotesPage, StoreError> {
    let mut tx = store.tenant_transaction(key).await?;
    // Read-only: dropped rather than committed, so the read is one round trip (the ROLLBACK is
    // sent without waiting for its answer). One more than the page tells whether more follow.
    let mut notes: Vec<Note> = tx
        .query(
            "select id, issue_key, body, author, created_at from note \
             where client_key = $1 and issue_key = $2 and id > $3 order by id limit $4",
        )
        .bind(key.as_str())
        .bind(issue_key)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all()
        .await?;
    let more = notes.len() > limit as usize;
    notes.truncate(limit as usize);
    Ok(NotesPage { notes, more })
}

/// Adds a note for the tenant, numbered after the tenant's last one, unless the issue or the
/// tenant holds as many notes as `caps` allow.
///
/// The tenant's row of `note_sequence` is taken first: it numbers the note and, held to the end
/// of the transaction, makes the tenant's inserts wait for each other, so the counts that follow
/// cannot be passed by a concurrent insert.
pub async fn create_note(
    store: &Store,
    key: &ClientKey,
    note: NewNote,
    caps: NoteCaps,
) -> Result<NoteCreation, StoreError> {
    let created_at = store::now();
    let mut tx = store.tenant_transaction(key).await?;
    let (id,): (i64,) = tx
        .query(
            "insert into note_sequence (client_key, last_id) \
             values ($1, (select coalesce(max(id), 0) + 1 from note where client_key = $1)) \
             on conflict (client_key) do update set last_id = note_sequence.last_id + 1 \
             returning last_id",
        )
        .bind(key.as_str())
        .fetch_one()
        .await?;
    let (on_issue,): (i64,) = tx
        .query("select count(*) from note where client_key = $1 and issue_key = $2")
        .bind(key.as_str())
        .bind(&note.issue_key)
        .fetch_one()
        .await?;
    if on_issue as u64 >= caps.per_issue {
        return Ok(NoteCreation::IssueFull);
    }
    let (in_all,): (i64,) = tx
        .query("select count(*) from note where client_key = $1")
        .bind(key.as_str())
        .fetch_one()
        .await?;
    if in_all as u64 >= caps.per_tenant {
        return Ok(NoteCreation::TenantFull);
    }
    tx.query(
        "insert into note (client_key, id, issue_key, body, author, created_at) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(key.as_str())
    .bind(id)
    .bind(&note.issue_key)
    .bind(&note.body)
    .bind(&note.author)
    .bind(created_at)
    .execute()
    .await?;
    tx.commit().await?;
    Ok(NoteCreation::Created(note.stored(id, created_at)))
}

/// Deletes one of the tenant's notes; with `author`, only if that account wrote it (the
/// condition is part of the delete, so no other request can slip in between).
pub async fn delete_note(
    store: &Store,
    key: &ClientKey,
    issue_key: &str,
    id: i64,
    author: Option<&str>,
) -> Result<NoteDeletion, StoreError> {
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
    store: &Store,
    key: &ClientKey,
    issue_key: &str,
) -> Result<u64, StoreError> {
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
