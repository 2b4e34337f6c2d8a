//! The notes' SQL on Forge SQL, for the app as a Forge Container: one database per installation
//! (so no tenant column), the MySQL dialect TiDB speaks, `?` placeholders, one statement a call.
//!
//! Forge SQL has no transactions, so each change is one statement: a note is numbered by one
//! upsert of its installation's counter (`LAST_INSERT_ID(expr)` hands the new number back in the
//! same answer) and written by one conditional insert that checks the caps as it inserts. What is
//! not atomic: the number is taken before the insert, so a refused or failed insert leaves a gap
//! in the numbering (ids stay increasing, which is all a page needs), and two writers racing
//! near a cap may both pass its count.

use chrono::{DateTime, NaiveDateTime, Utc};
use connect_axum::forge::sql::{Sql, SqlError, SqlMigrations, de, limit};
use connect_axum::sql_params;
use serde::Deserialize;

use crate::store::{NewNote, Note, NoteCaps, NoteCreation, NoteDeletion, NotesPage};

/// The notes' schema on Forge SQL, applied to each installation's database.
pub fn migrations() -> SqlMigrations {
    SqlMigrations::new()
        .add(
            "0001_note",
            "CREATE TABLE IF NOT EXISTS note (\
             id BIGINT NOT NULL PRIMARY KEY, \
             issue_key VARCHAR(255) NOT NULL, \
             body TEXT NOT NULL, \
             author VARCHAR(128) NULL, \
             created_at DATETIME(6) NOT NULL, \
             KEY note_issue (issue_key, id))",
        )
        .add(
            "0002_note_sequence",
            "CREATE TABLE IF NOT EXISTS note_sequence (\
             name VARCHAR(32) NOT NULL PRIMARY KEY, \
             last_id BIGINT NOT NULL)",
        )
}

/// A note as Forge SQL answers it: `BIGINT` and `DATETIME` as strings.
#[derive(Deserialize)]
struct Row {
    #[serde(deserialize_with = "de::int")]
    id: i64,
    issue_key: String,
    body: String,
    author: Option<String>,
    #[serde(deserialize_with = "de::datetime")]
    created_at: NaiveDateTime,
}

impl From<Row> for Note {
    fn from(row: Row) -> Self {
        Note {
            id: row.id,
            issue_key: row.issue_key,
            body: row.body,
            author: row.author,
            created_at: DateTime::from_naive_utc_and_offset(row.created_at, Utc),
        }
    }
}

#[derive(Deserialize)]
struct Count {
    #[serde(deserialize_with = "de::int")]
    n: i64,
}

/// Up to `page` notes on one issue whose id is above `after`, oldest first.
pub async fn list_notes(
    sql: &Sql<'_>,
    issue_key: &str,
    after: i64,
    page: u32,
) -> Result<NotesPage, SqlError> {
    let wanted = u64::from(page) + 1;
    let rows: Vec<Row> = sql
        .query(
            &format!(
                "SELECT id, issue_key, body, author, created_at FROM note \
                 WHERE issue_key = ? AND id > ? ORDER BY id {}",
                limit(wanted, u64::from(crate::MAX_PAGE_SIZE) + 1)
            ),
            &sql_params![issue_key, after],
        )
        .await?;
    let mut notes: Vec<Note> = rows.into_iter().map(Note::from).collect();
    let more = notes.len() > page as usize;
    notes.truncate(page as usize);
    Ok(NotesPage { notes, more })
}

/// Adds a note unless its issue or the installation holds as many notes as `caps` allow.
pub async fn create_note(
    sql: &Sql<'_>,
    note: NewNote,
    caps: NoteCaps,
) -> Result<NoteCreation, SqlError> {
    // Microseconds, as DATETIME(6) keeps them: the note answered is the note stored.
    let created_at = DateTime::from_timestamp_micros(Utc::now().timestamp_micros())
        .expect("now is a representable time");
    let numbered = sql
        .execute(
            "INSERT INTO note_sequence (name, last_id) VALUES ('note', LAST_INSERT_ID(1)) \
             ON DUPLICATE KEY UPDATE last_id = LAST_INSERT_ID(last_id + 1)",
            &[],
        )
        .await?;
    let id = numbered
        .last_insert_id
        .and_then(|id| i64::try_from(id).ok())
        .ok_or_else(|| SqlError::Decode("the note counter answered no number".to_owned()))?;
    let written = sql
        .execute(
            "INSERT INTO note (id, issue_key, body, author, created_at) \
             SELECT ?, ?, ?, ?, ? FROM DUAL \
             WHERE (SELECT COUNT(*) FROM note WHERE issue_key = ?) < ? \
             AND (SELECT COUNT(*) FROM note) < ?",
            &sql_params![
                id,
                note.issue_key.as_str(),
                note.body.as_str(),
                note.author.clone(),
                created_at.naive_utc(),
                note.issue_key.as_str(),
                caps.per_issue,
                caps.per_tenant,
            ],
        )
        .await?;
    if written.rows_affected == 0 {
        let on_issue: Option<Count> = sql
            .query_optional(
                "SELECT COUNT(*) AS n FROM note WHERE issue_key = ?",
                &sql_params![note.issue_key.as_str()],
            )
            .await?;
        return Ok(if on_issue.is_some_and(|c| c.n as u64 >= caps.per_issue) {
            NoteCreation::IssueFull
        } else {
            NoteCreation::TenantFull
        });
    }
    Ok(NoteCreation::Created(note.stored(id, created_at)))
}

/// Deletes one note; with `author`, only if that account wrote it (the condition is part of the
/// delete).
pub async fn delete_note(
    sql: &Sql<'_>,
    issue_key: &str,
    id: i64,
    author: Option<&str>,
) -> Result<NoteDeletion, SqlError> {
    let deleted = sql
        .execute(
            "DELETE FROM note WHERE issue_key = ? AND id = ? AND (? IS NULL OR author = ?)",
            &sql_params![issue_key, id, author, author],
        )
        .await?;
    if deleted.rows_affected > 0 {
        return Ok(NoteDeletion::Deleted);
    }
    if author.is_none() {
        return Ok(NoteDeletion::Missing);
    }
    let kept: Option<Count> = sql
        .query_optional(
            "SELECT COUNT(*) AS n FROM note WHERE issue_key = ? AND id = ?",
            &sql_params![issue_key, id],
        )
        .await?;
    Ok(if kept.is_some_and(|c| c.n > 0) {
        NoteDeletion::OtherAuthor
    } else {
        NoteDeletion::Missing
    })
}

/// Deletes every note on an issue; returns how many there were.
pub async fn delete_issue_notes(sql: &Sql<'_>, issue_key: &str) -> Result<u64, SqlError> {
    Ok(sql
        .execute(
            "DELETE FROM note WHERE issue_key = ?",
            &sql_params![issue_key],
        )
        .await?
        .rows_affected)
}
