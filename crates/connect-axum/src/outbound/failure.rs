//! Why an outbound call failed, whichever client made it; each client's error converts from it.

use std::time::Duration;

use reqwest::StatusCode;

/// Why an outbound call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// No answer within the transport's timeout.
    #[error("no answer in time")]
    Timeout,
    /// The server could not be reached, or the request not built.
    #[error("could not be reached: {0}")]
    Unreachable(String),
    /// The answer's body was not what was expected.
    #[error("the answer could not be decoded: {0}")]
    Decode(String),
    /// A non-2xx answer other than a 429, with the start of its body (as much as the
    /// client's [`Policy::error_body`](super::Policy::error_body)).
    #[error("answered {status}")]
    Status { status: StatusCode, body: Vec<u8> },
    /// A 429 that the client's policy does not wait out; `retry_after` is its `Retry-After`.
    #[error("rate limiting; retry after {retry_after:?}")]
    RateLimited { retry_after: Option<Duration> },
    /// The answer's body is larger than its reader accepts.
    #[error("the answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// In a Forge Container, a call to a host the app does not declare as an egress host
    /// (refused before anything is sent).
    #[error("calls to {host} are not among the app's egress hosts")]
    EgressRefused { host: String },
}

impl From<reqwest::Error> for Failure {
    fn from(e: reqwest::Error) -> Self {
        // The message reaches logs and error bodies; the URL and its query stay out of them.
        if e.is_timeout() {
            Failure::Timeout
        } else if e.is_decode() {
            Failure::Decode(e.without_url().to_string())
        } else {
            Failure::Unreachable(e.without_url().to_string())
        }
    }
}

/// `From<Failure>` and `From<reqwest::Error>` for a client's error whose `Timeout`,
/// `Transport(String)`, `Decode(String)`, `RateLimited { retry_after }` and
/// `EgressRefused { host }` mean what the failure's do; the closure-like tail makes its error of a non-2xx answer from the status and
/// the start of the body.
macro_rules! from_failure {
    ($error:ident, |$status:ident, $body:pat_param| $make:expr) => {
        impl From<$crate::outbound::Failure> for $error {
            fn from(e: $crate::outbound::Failure) -> Self {
                use $crate::outbound::Failure;
                match e {
                    Failure::Timeout => Self::Timeout,
                    Failure::Unreachable(e) => Self::Transport(e),
                    e @ Failure::TooLarge { .. } => Self::Transport(e.to_string()),
                    Failure::Decode(e) => Self::Decode(e),
                    Failure::Status {
                        status: $status,
                        body: $body,
                    } => $make,
                    Failure::RateLimited { retry_after } => Self::RateLimited { retry_after },
                    Failure::EgressRefused { host } => Self::EgressRefused { host },
                }
            }
        }

        impl From<reqwest::Error> for $error {
            fn from(e: reqwest::Error) -> Self {
                $crate::outbound::Failure::from(e).into()
            }
        }
    };
}

pub(crate) use from_failure;
