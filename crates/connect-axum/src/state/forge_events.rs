//! What an app gives the library to handle Forge's events: its handlers, and the events as they
//! receive them from the queue (`ops::forge_queue`), outside any request.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Notify;

use super::AppState;
use crate::store::ClientKey;

/// The lifecycle event of an install (and of a reinstall).
pub const INSTALLED: &str = "avi:forge:installed:app";
/// The lifecycle event of a major version upgrade.
pub const UPGRADED: &str = "avi:forge:upgraded:app";
/// The event type handlers see for a preUninstall delivery.
pub const PRE_UNINSTALL: &str = "connect-axum:pre-uninstall";
/// The event type handlers see for a scheduled trigger delivery.
pub const SCHEDULED: &str = "connect-axum:scheduled";

/// An error of an event handler: the event is run again later, up to
/// `FORGE_EVENT_MAX_ATTEMPTS` times.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A Forge event as the app's handlers receive it.
#[derive(Debug, Clone)]
pub struct ForgeEvent {
    /// The tenant, from the verified invocation token of the delivery (never from its body).
    pub client_key: ClientKey,
    /// `eventType` (`avi:jira:created:issue`, [`INSTALLED`], …), or
    /// [`SCHEDULED`] / [`PRE_UNINSTALL`]
    /// for those deliveries.
    pub event_type: String,
    /// The event: the delivery's `payload` object when it has one, else the whole body.
    pub payload: Value,
    /// This run's number, from 1.
    pub attempt: u32,
    /// When this replica or another first queued the delivery.
    pub received_at: DateTime<Utc>,
}

/// What an app does with Forge events. Runs on the server's worker, outside any request: reach
/// the product with the tenant's stored system token
/// ([`ForgeRecords::system_token`](crate::store::ForgeRecords::system_token)).
#[async_trait]
pub trait ForgeEventHandler: Send + Sync + 'static {
    /// Whether this handler wants events of `event_type` (default: all).
    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    /// Handles one event; an error runs it again later. Deliveries may repeat (Forge retries,
    /// scheduled triggers may fire twice), so a handler must be idempotent.
    async fn handle(&self, app: &AppState, event: &ForgeEvent) -> Result<(), HandlerError>;
}

/// The app's handlers and the bell that wakes the worker when this replica queues an event.
#[derive(Clone, Default)]
pub struct ForgeEvents {
    handlers: Arc<[Arc<dyn ForgeEventHandler>]>,
    queued: Arc<Notify>,
}

impl ForgeEvents {
    /// The app's `handlers`, each run in this order on the events it [handles](ForgeEventHandler::handles).
    pub fn new(handlers: Vec<Arc<dyn ForgeEventHandler>>) -> Self {
        Self {
            handlers: handlers.into(),
            queued: Arc::default(),
        }
    }

    /// Whether any handler wants events of `event_type`: the others are not queued.
    pub fn wanted(&self, event_type: &str) -> bool {
        self.handlers.iter().any(|h| h.handles(event_type))
    }

    pub(crate) fn ring(&self) {
        self.queued.notify_one();
    }

    /// The handlers, in the order the app gave them.
    pub(crate) fn handlers(&self) -> &[Arc<dyn ForgeEventHandler>] {
        &self.handlers
    }

    /// Completes when this replica queues an event.
    pub(crate) async fn queued(&self) {
        self.queued.notified().await
    }
}
