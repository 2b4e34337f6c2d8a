//! The one error type of handlers, and how each error becomes a JSON response.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header::WWW_AUTHENTICATE};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A handler's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401 with a stable reason code.
    #[error("{message}")]
    Unauthorized {
        /// The reason code, the body's `error`: `expired`, `qsh_mismatch`, ….
        reason: &'static str,
        /// Why, for a person: the body's `message`.
        message: String,
    },
    /// 400 with a reason code.
    #[error("{message}")]
    BadRequest {
        /// The reason code, the body's `error`: `invalid_json`, `invalid_path`, ….
        reason: &'static str,
        /// Why, for a person: the body's `message`.
        message: String,
    },
    /// 403 with a reason code.
    #[error("{message}")]
    Forbidden {
        /// The reason code, the body's `error`: `base_url_not_allowed`, `user_invocation`, ….
        reason: &'static str,
        /// Why, for a person: the body's `message`.
        message: String,
    },
    /// 409 with a reason code.
    #[error("{message}")]
    Conflict {
        /// The reason code, the body's `error`: `client_key_taken`, `stale_lifecycle_token`, ….
        reason: &'static str,
        /// Why, for a person: the body's `message`.
        message: String,
    },
    /// No route or resource has this path (404 `not_found`).
    #[error("not found")]
    NotFound,
    /// The route does not take the request's method (405 `method_not_allowed`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request was not answered within `REQUEST_TIMEOUT_SECS` (408 `request_timeout`).
    #[error("the request took too long")]
    RequestTimeout,
    /// The body did not arrive within `BODY_READ_TIMEOUT_SECS` of the request's admission.
    #[error("the request body took too long to arrive")]
    BodyTimeout,
    /// The body is longer than `MAX_BODY_BYTES` (413 `payload_too_large`).
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// The headers' names and values add up to more than `MAX_HEADER_BYTES` (431
    /// `headers_too_large`).
    #[error("the request headers are too large")]
    HeadersTooLarge,
    /// A JSON extractor got a body without a JSON `Content-Type` (415 `unsupported_media_type`).
    #[error("the request body must be JSON")]
    UnsupportedMediaType,
    /// A call to the tenant's product, Forge storage or the GraphQL API failed (see `status`).
    #[error("{message}")]
    Upstream {
        /// The status answered: 502, 504 when the call timed out, 503 when no usable Forge system
        /// token is stored.
        status: StatusCode,
        /// The reason code, the body's `error`: `product_error`, `product_timeout`,
        /// `storage_error`, `impersonation_refused`, ….
        reason: &'static str,
        /// Why, for a person: the body's `message`.
        message: String,
    },
    /// Every slot of the pool the request needs is taken (`MAX_CONCURRENT_REQUESTS` or
    /// `MAX_ANONYMOUS_REQUESTS`; 503 `overloaded`).
    #[error("the server is at its limit of concurrent requests; retry shortly")]
    Overloaded,
    /// The tenant holds its share of the concurrent requests (`MAX_CONCURRENT_REQUESTS_PER_TENANT`).
    #[error("this tenant has as many requests in progress as it may; retry shortly")]
    TenantBusy,
    /// The tenant, or its users' writes, went over the rate allowed (`TENANT_RATE_LIMIT`,
    /// `TENANT_WRITE_RATE_LIMIT`; 429 `rate_limited`).
    #[error("too many requests for this tenant; retry after {retry_after} s")]
    RateLimited {
        /// Seconds until the tenant may send again, the `Retry-After` header.
        retry_after: u64,
    },
    /// The store cannot be reached now (503; a `store::StoreError` that is unavailable).
    #[error("the store is unavailable")]
    StoreUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Any other store failure (500).
    #[error("internal error")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// A 400 with `reason` and `message`.
    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest {
            reason,
            message: message.into(),
        }
    }

    /// Classifies a failure to read a request body.
    pub fn from_body(e: axum::Error) -> Self {
        let source = e.into_inner();
        let mut chain =
            std::iter::successors(Some(&*source as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            });
        if source
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            Error::PayloadTooLarge
        } else if chain.any(|e| e.is::<crate::body::BodyTimedOut>()) {
            Error::BodyTimeout
        } else {
            Error::bad_request("unreadable_body", "the request body could not be read")
        }
    }

    fn status_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Unauthorized { reason, .. } => (StatusCode::UNAUTHORIZED, reason),
            Error::BadRequest { reason, .. } => (StatusCode::BAD_REQUEST, reason),
            Error::Forbidden { reason, .. } => (StatusCode::FORBIDDEN, reason),
            Error::Conflict { reason, .. } => (StatusCode::CONFLICT, reason),
            Error::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Error::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Error::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Error::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Error::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Error::Upstream { status, reason, .. } => (*status, reason),
            Error::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Error::TenantBusy => (StatusCode::TOO_MANY_REQUESTS, "tenant_busy"),
            Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Error::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            Error::Database(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, reason) = self.status_and_reason();
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed: {self}");
        }
        let mut response = (
            status,
            Json(json!({ "error": reason, "message": self.to_string() })),
        )
            .into_response();
        let retry_after = match self {
            Error::RateLimited { retry_after } => Some(retry_after),
            Error::TenantBusy => Some(1),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(retry_after),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("JWT"));
        }
        response
    }
}

/// The fallback of a router: 404 `not_found` as JSON.
pub async fn not_found() -> Error {
    Error::NotFound
}

/// The fallback of a route without the request's method: 405 `method_not_allowed` as JSON.
pub async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

impl From<BytesRejection> for Error {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge
        } else {
            Error::bad_request("unreadable_body", rejection.body_text())
        }
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Error::UnsupportedMediaType,
            _ => Error::bad_request("invalid_json", rejection.body_text()),
        }
    }
}

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        Error::bad_request("invalid_path", rejection.body_text())
    }
}

/// `axum::Json`, with rejections as this crate's JSON errors.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct JsonBody<T>(pub T);

/// `axum::extract::Path`, with rejections as this crate's JSON errors.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct PathParams<T>(pub T);

/// `axum::extract::Query`, with rejections as this crate's JSON errors.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct QueryParams<T>(pub T);

impl From<axum::extract::rejection::QueryRejection> for Error {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Error::bad_request("invalid_query", rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_past_its_deadline_is_408_body_timeout() {
        struct Stalled;
        impl http_body::Body for Stalled {
            type Data = axum::body::Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>>
            {
                std::task::Poll::Pending
            }
        }
        let (body, _) = crate::body::with_deadline(
            axum::body::Body::new(Stalled),
            std::time::Duration::from_millis(20),
        );
        let error = axum::body::to_bytes(body, 1024).await.unwrap_err();
        let response = Error::from_body(error).into_response();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    }
}
