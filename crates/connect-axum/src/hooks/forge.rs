//! The Forge endpoints the library serves: trigger deliveries (`FORGE_EVENTS_PATH`, lifecycle
//! and product events), the preUninstall hook (`FORGE_PRE_UNINSTALL_PATH`) and the scheduled
//! trigger that refreshes the stored system token (`FORGE_SCHEDULED_PATH`).
//!
//! Each is authenticated by the Forge Invocation Token alone, and the tenant always comes from
//! it: an event body naming an installation is never read for one. Each takes only Forge's calls
//! as the app ([`InvocationClaims::require_app`](crate::auth::forge::InvocationClaims::require_app)):
//! a user's UI call can name any path, so a FIT from a view is refused before the body is read. Each answers within Forge's
//! 5 s (lifecycle changes are one write; the app's handlers run later from the queue) and is
//! idempotent under redelivery: a delivery is identified by its body without `retryContext`.
//! The envelope of a delivery is not fully documented, so every field is looked for at the top
//! level and under `payload`.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::auth::AuthError;
use crate::auth::forge::VerifiedFit;
use crate::error::{Error, Result};
use crate::slots::Slot;
use crate::state::AppState;
use crate::state::forge_events::{INSTALLED, PRE_UNINSTALL, SCHEDULED, UPGRADED};
use crate::store::{ClientKey, SaveOutcome};

const MAX_EVENT_TYPE_LEN: usize = 200;

/// The `retryCount` of Forge's last redelivery of a failed event.
const LAST_RETRY: u64 = 4;

/// The Forge endpoints at the configured paths; mounted by the library when `FORGE_APP_ID` is set.
pub fn router(app: &AppState) -> Router<AppState> {
    Router::new()
        .route(&app.config.forge.events_path, post(deliver_event))
        .route(&app.config.forge.pre_uninstall_path, post(pre_uninstall))
        .route(&app.config.forge.scheduled_path, post(scheduled))
}

/// A field of a delivery, at the top level or under `payload`.
pub(super) fn field<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body.get(name)
        .or_else(|| body.get("payload").and_then(|p| p.get(name)))
}

/// The id of a delivery: its installation and its body without `retryContext`, hashed, so that
/// every retry of one delivery has the id of the first.
fn delivery_id(installation_id: &str, body: &Value) -> String {
    let mut body = body.clone();
    if let Some(top) = body.as_object_mut() {
        top.remove("retryContext");
        if let Some(payload) = top.get_mut("payload").and_then(Value::as_object_mut) {
            payload.remove("retryContext");
        }
    }
    let mut hash = Sha256::new();
    hash.update(installation_id.as_bytes());
    hash.update([0]);
    hash.update(body.to_string().as_bytes());
    hex::encode(hash.finalize())
}

/// Verifies the delivery's token from its headers, and only then reads its body (JSON, within
/// `MAX_BODY_BYTES`): a client without a valid token holds nothing while it sends.
/// The delivery holds one of the verified requests' slots (`MAX_CONCURRENT_REQUESTS`) from then on.
async fn verified(
    app: &AppState,
    request: Request,
    module_keys: &[String],
) -> Result<(VerifiedFit, Value, Slot)> {
    let fit = app.auth.verify_fit(request.headers()).await?;
    fit.claims.require_app(module_keys)?;
    // Keyed by installation: the tenant is resolved from the body's event only later.
    let slot = app.auth.slots().tenant(&fit.claims.app.installation_id)?;
    let (body, _deadline) = app.auth.timed_body(request.into_body());
    let bytes = axum::body::to_bytes(body, app.config.server.max_body_bytes)
        .await
        .map_err(Error::from_body)?;
    Ok((fit, parse_body(&bytes)?, slot))
}

fn parse_body(bytes: &Bytes) -> Result<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes)
        .map_err(|_| Error::bad_request("invalid_json", "the delivery's body is not JSON"))
}

pub(super) fn event_type(body: &Value) -> Result<&str> {
    let kind = field(body, "eventType")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_request("missing_event_type", "the delivery has no eventType"))?;
    checked_event_type(kind)
}

/// `kind` when it reads as an event type: 1 to 200 visible ASCII characters.
pub(super) fn checked_event_type(kind: &str) -> Result<&str> {
    if kind.is_empty()
        || kind.len() > MAX_EVENT_TYPE_LEN
        || !kind.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::bad_request(
            "invalid_event_type",
            "the delivery's eventType is not an event type",
        ));
    }
    Ok(kind)
}

/// Stores the delivery's system token (if any) for the tenant.
async fn keep_token(app: &AppState, key: &ClientKey, fit: &VerifiedFit) {
    if let Some(token) = &fit.system_token {
        app.auth
            .system_tokens()
            .remember(key, token, &fit.claims)
            .await;
    }
}

/// Queues the delivery for the app's handlers, when one wants it; whether it was queued before.
async fn queue(
    app: &AppState,
    key: &ClientKey,
    fit: &VerifiedFit,
    event_type: &str,
    body: &Value,
    kind: &'static str,
) -> Result<bool> {
    let id = delivery_id(&fit.claims.app.installation_id, body);
    let fresh = if app.forge_events.wanted(event_type) {
        let fresh = app
            .store
            .events()
            .enqueue(key, &id, event_type, &body.to_string())
            .await?;
        if fresh {
            app.forge_events.ring();
        }
        fresh
    } else {
        true
    };
    let outcome = if fresh { "accepted" } else { "duplicate" };
    metrics::counter!("forge_events_received_total", "kind" => kind, "outcome" => outcome)
        .increment(1);
    if let Some(retry) = field(body, "retryContext").and_then(|r| r.get("retryCount")) {
        tracing::info!(
            tenant.client_key = %key,
            event_type,
            retry_count = %retry,
            "Forge redelivered an event"
        );
    }
    Ok(!fresh)
}

fn accepted(key: &ClientKey, duplicate: bool) -> Json<Value> {
    Json(json!({ "status": "accepted", "tenant": key, "duplicate": duplicate }))
}

/// `POST FORGE_EVENTS_PATH`: installed and upgraded create, revive or update the tenant at once;
/// every event is then queued for the app's handlers that want it.
async fn deliver_event(State(app): State<AppState>, request: Request) -> Result<Json<Value>> {
    let keys = &app.config.forge.module_keys.events;
    let (fit, body, _slot) = verified(&app, request, keys).await?;
    let event_type = event_type(&body)?;
    let (key, kind) = match event_type {
        INSTALLED | UPGRADED => {
            let mut installation = fit.installation();
            // Forge retries a failed delivery at most 4 times: the last one makes the tenant.
            let last_retry = field(&body, "retryContext")
                .and_then(|r| r.get("retryCount"))
                .and_then(Value::as_u64)
                .is_some_and(|n| n >= LAST_RETRY);
            installation.create_if_new = !app.config.forge.connect_on_forge || last_retry;
            let saved = app
                .store
                .tenants()
                .save_forge_installation(&installation, &fit.lifecycle)
                .await?;
            if !saved.existing && !installation.create_if_new {
                return Err(Error::Conflict {
                    reason: "connect_install_pending",
                    message: "no Connect install has brought this installation yet; deliver again"
                        .to_owned(),
                });
            }
            match saved.outcome {
                SaveOutcome::InstallationIdTaken => {
                    return Err(Error::Forbidden {
                        reason: "installation_id_taken",
                        message: "another installed tenant holds this installationId".to_owned(),
                    });
                }
                SaveOutcome::Saved => {
                    let event = if event_type == INSTALLED {
                        "forge-installed"
                    } else {
                        "forge-upgraded"
                    };
                    metrics::counter!("lifecycle_events_total", "event" => event).increment(1);
                    tracing::info!(
                        tenant.client_key = %saved.client_key,
                        installation_id = %fit.claims.app.installation_id,
                        "Forge {}: tenant {}",
                        if event_type == INSTALLED { "install" } else { "upgrade" },
                        saved.client_key
                    );
                }
                // Applied before (a redelivery), or older than the last change applied.
                SaveOutcome::Stale => {}
            }
            if event_type == UPGRADED
                && let Some(permissions) = field(&body, "permissions")
            {
                app.store
                    .forge()
                    .save_permissions(&saved.client_key, &permissions.to_string())
                    .await?;
            }
            (saved.client_key, "lifecycle")
        }
        _ => {
            let record = app.auth.forge_tenant(&fit).await?;
            (record.installation.client_key.clone(), "product")
        }
    };
    app.auth.check_rate(&key)?;
    keep_token(&app, &key, &fit).await;
    let duplicate = queue(&app, &key, &fit, event_type, &body, kind).await?;
    Ok(accepted(&key, duplicate))
}

/// `POST FORGE_PRE_UNINSTALL_PATH`: the tenant is marked uninstalled and its retention window
/// starts, as on the Connect side. A redelivery for a tenant already uninstalled is answered 2xx.
async fn pre_uninstall(State(app): State<AppState>, request: Request) -> Result<Json<Value>> {
    let keys = &app.config.forge.module_keys.pre_uninstall;
    let (fit, body, _slot) = verified(&app, request, keys).await?;
    let record = match app.auth.forge_tenant(&fit).await {
        Ok(record) => record,
        Err(Error::Forbidden { reason, .. }) if reason == AuthError::TenantUninstalled.code() => {
            return Ok(Json(json!({ "status": "uninstalled", "duplicate": true })));
        }
        Err(e) => return Err(e),
    };
    let key = record.installation.client_key.clone();
    app.auth.check_rate(&key)?;
    if app
        .store
        .tenants()
        .mark_uninstalled(&key, &fit.lifecycle)
        .await?
    {
        metrics::counter!("lifecycle_events_total", "event" => "forge-pre-uninstall").increment(1);
        tracing::info!(tenant.client_key = %key, "Forge preUninstall: tenant {key} uninstalled");
    }
    let duplicate = queue(&app, &key, &fit, PRE_UNINSTALL, &body, "pre_uninstall").await?;
    Ok(Json(
        json!({ "status": "uninstalled", "tenant": key, "duplicate": duplicate }),
    ))
}

/// `POST FORGE_SCHEDULED_PATH`: refreshes the tenant's stored system token (the delivery must
/// carry one: 400 `missing_system_token` says the manifest's endpoint lacks
/// `auth.appSystemToken`), then queues the delivery for the app's handlers.
async fn scheduled(State(app): State<AppState>, request: Request) -> Result<Json<Value>> {
    let keys = &app.config.forge.module_keys.scheduled;
    let (fit, body, _slot) = verified(&app, request, keys).await?;
    let record = app.auth.forge_tenant(&fit).await?;
    let key = record.installation.client_key.clone();
    app.auth.check_rate(&key)?;
    if fit.system_token.is_none() {
        return Err(Error::bad_request(
            "missing_system_token",
            "the scheduled trigger carried no x-forge-oauth-system: enable auth.appSystemToken \
             on its endpoint",
        ));
    }
    keep_token(&app, &key, &fit).await;
    let duplicate = queue(&app, &key, &fit, SCHEDULED, &body, "scheduled").await?;
    Ok(accepted(&key, duplicate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redelivery_has_the_id_of_the_first_delivery() {
        let first =
            json!({"payload": {"eventType": "avi:jira:created:issue", "issue": {"id": "1"}}});
        let retry = json!({"payload": {"eventType": "avi:jira:created:issue", "issue": {"id": "1"},
            "retryContext": {"retryCount": 1, "retryReason": "TIMEOUT_ERROR", "retryData": null}}});
        let top = json!({"eventType": "avi:jira:created:issue", "issue": {"id": "1"},
            "retryContext": {"retryCount": 2}});
        let top_first = json!({"eventType": "avi:jira:created:issue", "issue": {"id": "1"}});
        assert_eq!(delivery_id("i", &first), delivery_id("i", &retry));
        assert_eq!(delivery_id("i", &top), delivery_id("i", &top_first));
        assert_ne!(delivery_id("i", &first), delivery_id("j", &first));
        let other =
            json!({"payload": {"eventType": "avi:jira:created:issue", "issue": {"id": "2"}}});
        assert_ne!(delivery_id("i", &first), delivery_id("i", &other));
    }

    #[test]
    fn fields_are_read_at_the_top_level_or_under_payload() {
        let top = json!({"eventType": "a", "payload": {"eventType": "b"}});
        assert_eq!(event_type(&top).unwrap(), "a");
        let nested = json!({"payload": {"eventType": "b"}});
        assert_eq!(event_type(&nested).unwrap(), "b");
        for bad in [
            json!({}),
            json!({"eventType": ""}),
            json!({"eventType": "a b"}),
            json!({"eventType": 3}),
            json!({"eventType": "x".repeat(201)}),
        ] {
            assert!(event_type(&bad).is_err(), "{bad}");
        }
    }
}
