//! A Forge Container's trigger deliveries, through the container door: the tenant is the
//! invocation's installation, and only Forge's calls as the app are taken (a user's invocation
//! is 403 `user_invocation`). A delivery is answered at once; an event the app's handlers want
//! is handed to Forge's async events (`CONTAINER_EVENTS_QUEUE`), which delivers it back to
//! `CONTAINER_EVENTS_CONSUMER_PATH` and redelivers it while the handlers fail, so that no work
//! waits in the instance's memory (it may be stopped at any time) or in its in-memory store.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{Value, json};

use super::forge::{checked_event_type, event_type, field};
use crate::auth::Tenant;
use crate::auth::container::ContainerInvocation;
use crate::error::{Error, JsonBody, Result};
use crate::ops::forge_queue::HANDLER_TIMEOUT;
use crate::state::AppState;
use crate::state::forge_events::ForgeEvent;

/// The container's Forge endpoints, each behind the container door as the app: the trigger
/// deliveries (`FORGE_EVENTS_PATH`) and the async events' consumer.
pub fn router(app: &AppState) -> Router<AppState> {
    let Some(container) = &app.config.container else {
        return Router::new();
    };
    app.with_forge_app(
        &app.config.forge.module_keys.events,
        Router::new()
            .route(&app.config.forge.events_path, post(deliver))
            .route(&container.events_consumer_path, post(consume)),
    )
}

/// `POST FORGE_EVENTS_PATH`: a trigger delivery; queued on Forge's async events when a handler
/// wants it.
async fn deliver(
    State(app): State<AppState>,
    tenant: Tenant,
    invocation: ContainerInvocation,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let event_type = event_type(&body)?.to_owned();
    let wanted = app.forge_events.wanted(&event_type);
    if wanted {
        let (Some(events), Some(container)) = (app.async_events(), &app.config.container) else {
            return Err(Error::Upstream {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                reason: "not_in_container",
                message: "async events are reached only from a Forge Container".to_owned(),
            });
        };
        let queued = json!({ "eventType": event_type, "event": body });
        events
            .push(&invocation.as_app(), &container.events_queue, &queued)
            .await?;
    }
    metrics::counter!(
        "forge_events_received_total",
        "kind" => "container",
        "outcome" => if wanted { "queued" } else { "accepted" }
    )
    .increment(1);
    Ok(Json(json!({
        "status": "accepted",
        "tenant": tenant.client_key(),
        "queued": wanted,
    })))
}

/// The event the library pushed, in an async event's delivery: under `body` (or the delivery's
/// `payload`) as `{eventType, event}`. Unconfirmed shape: the one place that reads it.
fn queued_event(delivery: &Value) -> Option<(&str, &Value)> {
    let candidates = [
        Some(delivery),
        delivery.get("body"),
        delivery.get("payload"),
        delivery.get("payload").and_then(|p| p.get("body")),
        delivery.pointer("/payload/0/body"),
    ];
    candidates.into_iter().flatten().find_map(|v| {
        let kind = v.get("eventType")?.as_str()?;
        Some((kind, v.get("event")?))
    })
}

/// `POST CONTAINER_EVENTS_CONSUMER_PATH`: runs the handlers of a queued event; a failure is 503
/// `handler_failed`, so that Forge delivers it again.
async fn consume(
    State(app): State<AppState>,
    tenant: Tenant,
    JsonBody(delivery): JsonBody<Value>,
) -> Result<Json<Value>> {
    let (kind, event) = queued_event(&delivery).ok_or_else(|| {
        Error::bad_request(
            "invalid_event",
            "the delivery holds no event this app queued",
        )
    })?;
    let kind = checked_event_type(kind)?.to_owned();
    let retries = field(&delivery, "retryContext")
        .and_then(|r| r.get("retryCount"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let event = ForgeEvent {
        client_key: tenant.client_key().clone(),
        payload: field(event, "payload")
            .filter(|p| p.is_object())
            .unwrap_or(event)
            .clone(),
        event_type: kind,
        attempt: u32::try_from(retries).unwrap_or(u32::MAX).saturating_add(1),
        received_at: Utc::now(),
    };
    let mut ran = 0;
    for handler in app.forge_events.handlers() {
        if !handler.handles(&event.event_type) {
            continue;
        }
        ran += 1;
        let failure =
            match tokio::time::timeout(HANDLER_TIMEOUT, handler.handle(&app, &event)).await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {} s", HANDLER_TIMEOUT.as_secs()),
            };
        tracing::warn!(
            tenant.client_key = %event.client_key,
            event_type = %event.event_type,
            attempt = event.attempt,
            "a Forge event handler failed; Forge will deliver the event again: {failure}"
        );
        metrics::counter!("forge_event_runs_total", "outcome" => "failed").increment(1);
        return Err(Error::Upstream {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: "handler_failed",
            message: "an event handler failed; deliver the event again".to_owned(),
        });
    }
    metrics::counter!("forge_event_runs_total", "outcome" => "done").increment(1);
    Ok(Json(json!({ "status": "done", "handlers": ran })))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::queued_event;

    #[test]
    fn the_queued_event_is_found_in_each_shape_a_delivery_may_have() {
        let ours = json!({ "eventType": "avi:jira:deleted:issue", "event": { "issue": { "key": "P-1" } } });
        for delivery in [
            ours.clone(),
            json!({ "body": ours }),
            json!({ "payload": ours }),
            json!({ "payload": { "body": ours } }),
            json!({ "payload": [{ "body": ours }] }),
        ] {
            let (kind, event) = queued_event(&delivery).unwrap();
            assert_eq!(kind, "avi:jira:deleted:issue");
            assert_eq!(event["issue"]["key"], "P-1");
        }
        assert!(queued_event(&json!({ "body": { "eventType": 1 } })).is_none());
        assert!(queued_event(&json!([])).is_none());
    }
}
