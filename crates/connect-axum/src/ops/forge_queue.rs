//! The durable queue between Forge's trigger deliveries and the app's event handlers: a delivery
//! is answered as soon as it is stored (Forge waits 5 s), and the server's worker runs the
//! handlers from the store, retrying with backoff, on whichever replica takes it first.

use std::time::Duration;

use serde_json::Value;

use crate::state::AppState;
use crate::state::forge_events::ForgeEvent;
use crate::store::StoreError;
use crate::store::{self, EventOutcome, QueuedEvent};

/// How long a taken event is held before another run may take it (a replica that died mid-run).
pub const LEASE: Duration = Duration::from_secs(120);

/// How long one handler run may take.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(90);

/// The first retry's wait; each further one doubles, up to [`MAX_RETRY_WAIT`].
pub const FIRST_RETRY_WAIT: Duration = Duration::from_secs(5);

/// The longest wait between two runs of a failing event.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(10 * 60);

/// How long a finished event is remembered, so that a redelivery does not run it again.
pub const DONE_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

const BATCH: u32 = 16;

/// The wait before run `attempt + 1` of an event whose run `attempt` failed.
pub fn retry_wait(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    FIRST_RETRY_WAIT
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_WAIT)
}

/// Runs the handlers of every event due now, until none is left; returns how many runs were made.
/// The worker calls it; a test may call it to run queued events at once.
pub async fn run_due(app: &AppState) -> Result<usize, StoreError> {
    let mut runs = 0;
    loop {
        let now = store::now();
        let batch = app.store.events().claim(now, now + LEASE, BATCH).await?;
        if batch.is_empty() {
            break;
        }
        runs += batch.len();
        let mut running = tokio::task::JoinSet::new();
        for event in batch {
            let app = app.clone();
            running.spawn(async move {
                let outcome = run_one(&app, &event).await;
                (event, outcome)
            });
        }
        while let Some(done) = running.join_next().await {
            let Ok((event, outcome)) = done else { continue };
            let label = match &outcome {
                EventOutcome::Done => "done",
                EventOutcome::Retry { .. } => "retry",
                EventOutcome::GaveUp { .. } => "gave_up",
            };
            metrics::counter!("forge_events_processed_total", "outcome" => label).increment(1);
            if let EventOutcome::GaveUp { error } = &outcome {
                tracing::error!(
                    tenant.client_key = %event.client_key,
                    event_type = %event.event_type,
                    attempts = event.attempts,
                    "gave up a Forge event: {error}"
                );
            }
            app.store.events().finish(&event, &outcome).await?;
        }
    }
    if let Ok(pending) = app.store.events().pending().await {
        metrics::gauge!("forge_events_pending").set(pending as f64);
    }
    Ok(runs)
}

async fn run_one(app: &AppState, event: &QueuedEvent) -> EventOutcome {
    let body: Value = serde_json::from_str(&event.body).unwrap_or(Value::Null);
    let payload = match body.get("payload") {
        Some(payload) if payload.is_object() => payload.clone(),
        _ => body,
    };
    let forge_event = ForgeEvent {
        client_key: event.client_key.clone(),
        event_type: event.event_type.clone(),
        payload,
        attempt: event.attempts,
        received_at: event.received_at,
    };
    let mut failure = None;
    for handler in app.forge_events.handlers().iter() {
        if !handler.handles(&event.event_type) {
            continue;
        }
        match tokio::time::timeout(HANDLER_TIMEOUT, handler.handle(app, &forge_event)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e.to_string()),
            Err(_) => failure = Some(format!("the handler ran longer than {HANDLER_TIMEOUT:?}")),
        }
        if failure.is_some() {
            break;
        }
    }
    match failure {
        None => EventOutcome::Done,
        Some(error) if event.attempts >= app.config.forge.event_attempts => {
            EventOutcome::GaveUp { error }
        }
        Some(error) => {
            tracing::warn!(
                tenant.client_key = %event.client_key,
                event_type = %event.event_type,
                attempt = event.attempts,
                "a Forge event handler failed; it runs again later: {error}"
            );
            EventOutcome::Retry {
                at: store::now() + retry_wait(event.attempts),
                error,
            }
        }
    }
}

/// Runs [`run_due`] whenever this replica queues an event and every `FORGE_EVENT_POLL_MS`
/// (events other replicas queued, retries), and forgets finished events after [`DONE_MEMORY`].
pub fn spawn(app: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let poll = app.config.forge.event_poll;
        let mut last_prune = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = app.forge_events.queued() => {}
                () = tokio::time::sleep(poll) => {}
            }
            if let Err(e) = run_due(&app).await {
                tracing::warn!(error = %e, "running queued Forge events failed; next try in {poll:?}");
            }
            if last_prune.elapsed() > Duration::from_secs(600) {
                last_prune = tokio::time::Instant::now();
                let before = store::now() - DONE_MEMORY;
                if let Err(e) = app.store.events().prune(before).await {
                    tracing::warn!(error = %e, "could not forget finished Forge events");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_doubling_from_five_seconds_up_to_ten_minutes() {
        let waits: Vec<u64> = (1..=10).map(|a| retry_wait(a).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(retry_wait(u32::MAX), MAX_RETRY_WAIT);
    }
}
