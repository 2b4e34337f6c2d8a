//! Forge's async events as a Forge Container pushes them: work that must outlive the request
//! that starts it (the app's event handlers) is handed to Forge, which delivers it to the app's
//! `consumer` endpoint and redelivers it when that answers an error, instead of a table or a
//! queue in memory that dies with the instance.
//!
//! **Unconfirmed**: the route (`POST {proxy}/atlassian/forge/events/v1/async-events`) is in
//! Atlassian's container API list; its body is taken to be what `@forge/events` pushes from a
//! function (`queueName`, `jobId`, `type`, `schema`, `payload: [{body}]`, `time`).
//! [`AsyncEvents::push`] is the one place to change when a live container shows otherwise.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use url::Url;

use crate::outbound::{self, Policy, Transport};
use crate::protocol::egress::{PROXY_AUTHORIZATION_HEADER, ProxyAuthorization};

/// The route under the egress proxy.
pub const ASYNC_EVENTS_PATH: &str = "/atlassian/forge/events/v1/async-events";

/// The largest event body Forge takes (200 KB for a push).
pub const MAX_EVENT_BYTES: usize = 200 * 1000;

/// A 429 is waited out twice, each for a `Retry-After` of at most 2 s: a push answers a Forge
/// delivery, which Forge gives 5 s.
const PUSH: Policy = Policy {
    retries: 2,
    longest_wait: Duration::from_secs(2),
    backoff: Some(Duration::from_millis(250)),
    error_body: 2 * 1024,
};

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// A queue name outside `[A-Za-z0-9_-]`, or a body larger than [`MAX_EVENT_BYTES`].
    #[error("the event cannot be pushed: {0}")]
    Invalid(&'static str),
    /// Forge answered with an error status.
    #[error("Forge's async events answered {status}")]
    Status {
        /// The status answered, not a 2xx.
        status: StatusCode,
    },
    /// Forge kept answering 429.
    #[error("Forge's async events are rate limiting; retry after {retry_after:?}")]
    RateLimited {
        /// Forge's last `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// No answer within the client's timeout.
    #[error("Forge's async events did not answer in time")]
    Timeout,
    /// The proxy could not be reached.
    #[error("Forge's async events could not be reached: {0}")]
    Transport(String),
    /// An answer was not the JSON expected.
    #[error("an answer of Forge's async events could not be read: {0}")]
    Decode(String),
    /// The call's host is not among the app's egress hosts.
    #[error("{host} is not among the app's egress hosts")]
    EgressRefused {
        /// The host refused.
        host: String,
    },
}

outbound::from_failure!(EventsError, |status, _body| EventsError::Status { status });

impl From<EventsError> for crate::error::Error {
    fn from(e: EventsError) -> Self {
        use axum::http::StatusCode as Http;
        let (status, reason) = match e {
            EventsError::Invalid(_) => (Http::PAYLOAD_TOO_LARGE, "event_too_large"),
            EventsError::Timeout => (Http::GATEWAY_TIMEOUT, "async_events_timeout"),
            EventsError::EgressRefused { .. } => (Http::BAD_GATEWAY, "egress_refused"),
            _ => (Http::SERVICE_UNAVAILABLE, "async_events_unavailable"),
        };
        crate::error::Error::Upstream {
            status,
            reason,
            message: e.to_string(),
        }
    }
}

/// The client of Forge's async events behind the egress proxy.
#[derive(Clone)]
pub struct AsyncEvents {
    transport: Transport,
    url: Arc<str>,
}

impl AsyncEvents {
    /// Pushes through `transport` to the proxy at `proxy`.
    pub(crate) fn with_transport(transport: Transport, proxy: &Url) -> Self {
        Self {
            transport,
            url: format!(
                "{}{ASYNC_EVENTS_PATH}",
                proxy.as_str().trim_end_matches('/')
            )
            .into(),
        }
    }

    /// Pushes one event with `body` onto `queue`, for the installation `authorization` names;
    /// returns the job id Forge will deliver it under.
    ///
    /// # Errors
    /// [`EventsError::Invalid`] for a queue name Forge refuses or a body over
    /// [`MAX_EVENT_BYTES`]; Forge's refusal or silence otherwise.
    pub async fn push(
        &self,
        authorization: &ProxyAuthorization,
        queue: &str,
        body: &Value,
    ) -> Result<String, EventsError> {
        if queue.is_empty()
            || !queue
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(EventsError::Invalid(
                "a queue name is letters, digits, - and _",
            ));
        }
        let job_id = uuid_v4();
        let push = json!({
            "queueName": queue,
            "jobId": job_id,
            "type": "avi:forge:app:event",
            "schema": "ari:cloud:ecosystem::forge/app-event-2",
            "payload": [{ "body": body }],
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        let bytes = serde_json::to_vec(&push).map_err(|e| EventsError::Decode(e.to_string()))?;
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventsError::Invalid("the event is larger than Forge takes"));
        }
        let header = authorization.to_string();
        self.transport
            .send(&PUSH, |http| {
                http.post(&*self.url)
                    .header(PROXY_AUTHORIZATION_HEADER, &header)
                    .header(CONTENT_TYPE, "application/json")
                    .body(bytes.clone())
            })
            .await?;
        Ok(job_id)
    }
}

/// A random (version 4) UUID.
fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
