//! Request bodies that must arrive by a deadline: once a request holds a slot, its sender may not
//! keep it by sending the body slowly (`BODY_READ_TIMEOUT_SECS`, counted from the admission).
//! Headers have their own limit (`HEADER_READ_TIMEOUT_SECS`), the whole request another
//! (`REQUEST_TIMEOUT_SECS`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio::time::Sleep;

/// The deadline of an authenticator built without one (as `BODY_READ_TIMEOUT_SECS` when unset).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The error of a body read past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// Tells whether a body given [`with_deadline`] ran out of time, whoever read it.
#[derive(Debug, Clone, Default)]
pub struct Deadline(Arc<AtomicBool>);

impl Deadline {
    /// Whether the body's read failed at its deadline.
    pub fn passed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `body`, failing with [`BodyTimedOut`] when it is not all read within `timeout` from now.
pub fn with_deadline(body: Body, timeout: Duration) -> (Body, Deadline) {
    let deadline = Deadline::default();
    let timed = Timed {
        inner: body,
        sleep: Box::pin(tokio::time::sleep(timeout)),
        deadline: deadline.clone(),
    };
    (Body::new(timed), deadline)
}

struct Timed {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    deadline: Deadline,
}

impl http_body::Body for Timed {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.deadline.0.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyTimedOut.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_sent_in_time_reads_whole() {
        let (body, deadline) = with_deadline(Body::from("all of it"), Duration::from_millis(50));
        let bytes = axum::body::to_bytes(body, 1024).await.unwrap();
        assert_eq!(&bytes[..], b"all of it");
        assert!(!deadline.passed());
    }

    /// A body that announces more and never sends it.
    struct Stalled;

    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = BodyTimedOut;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_at_its_deadline_and_says_so() {
        let (body, deadline) = with_deadline(Body::new(Stalled), Duration::from_millis(50));
        let error = axum::body::to_bytes(body, 1024).await.unwrap_err();
        let mut chain =
            std::iter::successors(Some(&error as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            });
        assert!(chain.any(|e| e.is::<BodyTimedOut>()), "{error:?}");
        assert!(deadline.passed());
    }
}
