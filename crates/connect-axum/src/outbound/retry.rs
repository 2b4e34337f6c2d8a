//! Which 429s a client waits out, and for how long: its `Retry-After`, or a backoff when it has
//! none.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// What a client's calls do with an answer that is not a success.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// How many 429s one call waits out before [`Failure::RateLimited`](super::Failure).
    pub(crate) retries: u32,
    /// The longest single wait; a longer `Retry-After` is not waited out.
    pub(crate) longest_wait: Duration,
    /// The first wait on a 429 without `Retry-After`, doubling on each further one; `None`: such
    /// a 429 is not waited out.
    pub(crate) backoff: Option<Duration>,
    /// The most of an error body read into [`Failure::Status`](super::Failure); 0 reads none.
    pub(crate) error_body: usize,
}

impl Policy {
    /// One attempt: no 429 waited out, no error body read.
    pub(crate) const ONCE: Policy = Policy {
        retries: 0,
        longest_wait: Duration::ZERO,
        backoff: None,
        error_body: 0,
    };

    /// The wait before retrying after `retries` retries and a 429 with `retry_after`; `None`
    /// when the 429 is not waited out.
    pub(super) fn wait(&self, retries: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let wait = retry_after.or_else(|| self.backoff.map(|first| backoff(first, retries)))?;
        (retries < self.retries && wait <= self.longest_wait).then_some(wait)
    }
}

/// `first` doubled `retries` times, plus up to half again so that callers limited together do
/// not retry together.
fn backoff(first: Duration, retries: u32) -> Duration {
    let base = first * 2u32.pow(retries);
    base + base.mul_f64(rand::random::<f64>() / 2.0)
}

/// A `Retry-After` in seconds; the HTTP-date form is not read.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_from_the_first_wait_and_stays_under_one_and_a_half_times() {
        for (retries, base) in [(0, 200), (1, 400), (2, 800)] {
            let wait = backoff(Duration::from_millis(200), retries);
            assert!(wait >= Duration::from_millis(base), "{wait:?}");
            assert!(wait <= Duration::from_millis(base * 3 / 2), "{wait:?}");
        }
    }

    #[test]
    fn a_429_is_waited_out_within_the_retries_and_the_longest_wait() {
        let once = |backoff| Policy {
            retries: 1,
            longest_wait: 5 * SECOND,
            backoff,
            error_body: 0,
        };
        assert_eq!(once(None).wait(0, Some(5 * SECOND)), Some(5 * SECOND));
        assert_eq!(once(None).wait(0, Some(6 * SECOND)), None);
        assert_eq!(once(None).wait(1, Some(SECOND)), None);
        assert_eq!(once(None).wait(0, None), None);
        assert!(once(Some(SECOND)).wait(0, None).is_some());
        assert_eq!(Policy::ONCE.wait(0, Some(SECOND)), None);
    }
}
