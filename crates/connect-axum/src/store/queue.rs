//! The queue of Forge trigger deliveries for the app's event handlers, shared by every replica.

use chrono::{DateTime, Utc};

use super::{ClientKey, Database, StoreError, now};

/// A trigger delivery taken from the queue for the app's handlers.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    /// The tenant the delivery's verified invocation token named.
    pub client_key: ClientKey,
    /// The delivery's id: the hash of its body without `retryContext`.
    pub id: String,
    /// The delivery's `eventType` (`avi:jira:created:issue`, …), or the library's name for a
    /// scheduled trigger or preUninstall.
    pub event_type: String,
    /// The delivery's body as received.
    pub body: String,
    /// How many times it was taken, this time included.
    pub attempts: u32,
    /// When the delivery was first queued.
    pub received_at: DateTime<Utc>,
}

/// What a handler run made of a queued event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// Handled; kept, marked done, until pruned.
    Done,
    /// Failed; taken again at `at`.
    Retry {
        /// When it is due again.
        at: DateTime<Utc>,
        /// The handler's error, stored as the event's last error.
        error: String,
    },
    /// Failed for the last time; kept, marked done, with its error.
    GaveUp {
        /// The handler's last error, stored with the event.
        error: String,
    },
}

/// The event queue of a [`Store`](super::Store), from [`Store::events`](super::Store::events).
#[derive(Clone, Copy)]
pub struct EventQueue<'s> {
    pub(super) db: &'s Database,
}

impl EventQueue<'_> {
    /// Queues a trigger delivery for the app's handlers; false when it is queued already (a
    /// redelivery).
    pub async fn enqueue(
        &self,
        key: &ClientKey,
        id: &str,
        event_type: &str,
        body: &str,
    ) -> Result<bool, StoreError> {
        let now = now();
        let added = self
            .db
            .connection()
            .await?
            .query(
                "insert into forge_event (client_key, id, event_type, body, run_after, \
                 received_at) values ($1, $2, $3, $4, $5, $5) on conflict do nothing",
            )
            .bind(key.as_str())
            .bind(id)
            .bind(event_type)
            .bind(body)
            .bind(now)
            .execute()
            .await?;
        Ok(added > 0)
    }

    /// Takes up to `limit` queued events due at `now`, each held until `lease_until` (taken
    /// again then if its run never finishes).
    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        // On Postgres replicas share the queue: each takes rows no other holds. SQLite has one
        // writer at a time, and the update takes what it selects in the same statement.
        let lock = match self.db {
            Database::Postgres(_) => " for update skip locked",
            Database::Sqlite(_) => "",
        };
        let sql = format!(
            "update forge_event set attempts = attempts + 1, run_after = $2 \
             where (client_key, id) in (select client_key, id from forge_event \
             where done_at is null and run_after <= $1 order by run_after limit $3{lock}) \
             returning client_key, id, event_type, body, attempts, received_at"
        );
        let rows: Vec<(String, String, String, String, i32, DateTime<Utc>)> = self
            .db
            .connection()
            .await?
            .query(&sql)
            .bind(now)
            .bind(lease_until)
            .bind(i64::from(limit))
            .fetch_all()
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(client_key, id, event_type, body, attempts, received_at)| QueuedEvent {
                    client_key: ClientKey::new(client_key),
                    id,
                    event_type,
                    body,
                    attempts: attempts.max(0) as u32,
                    received_at,
                },
            )
            .collect())
    }

    /// Records what a run of a taken event came to.
    pub async fn finish(
        &self,
        event: &QueuedEvent,
        outcome: &EventOutcome,
    ) -> Result<(), StoreError> {
        let now = now();
        let (done_at, run_after, error) = match outcome {
            EventOutcome::Done => (Some(now), now, None),
            EventOutcome::Retry { at, error } => (None, *at, Some(error.as_str())),
            EventOutcome::GaveUp { error } => (Some(now), now, Some(error.as_str())),
        };
        self.db
            .connection()
            .await?
            .query(
                "update forge_event set done_at = $3, run_after = $4, last_error = $5 \
                 where client_key = $1 and id = $2",
            )
            .bind(event.client_key.as_str())
            .bind(&event.id)
            .bind(done_at)
            .bind(run_after)
            .bind(error)
            .execute()
            .await?;
        Ok(())
    }

    /// How many queued events are not done.
    pub async fn pending(&self) -> Result<u64, StoreError> {
        let n: Option<(i64,)> = self
            .db
            .connection()
            .await?
            .query("select count(*) from forge_event where done_at is null")
            .fetch_optional()
            .await?;
        Ok(n.map_or(0, |(n,)| n.max(0) as u64))
    }

    /// Forgets events done before `done_before`; a redelivery after that runs again.
    pub async fn prune(&self, done_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.db
            .connection()
            .await?
            .query("delete from forge_event where done_at is not null and done_at < $1")
            .bind(done_before)
            .execute()
            .await
    }
}
