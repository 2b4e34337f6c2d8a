//! The one transport of every outbound call (the product's REST APIs and its authorization server,
//! Forge storage, Atlassian's GraphQL API, install keys, Forge's JWKS): a request sent under the
//! shared timeout, the 429s its client's [`Policy`] waits out, and one [`Failure`] for what went
//! wrong. The clients keep only what is their own: credentials, URLs, shapes, their own errors.
//! In a Forge Container the transport is the egress proxy's ([`Transport::through_proxy`]).

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use url::Url;

mod body;
mod egress;
mod failure;
mod retry;

pub(crate) use body::{json, read_limited};
pub(crate) use failure::{Failure, from_failure};
pub(crate) use retry::Policy;

/// How the app's requests leave: a value each client holds, so that whoever builds the clients
/// decides the route.
#[derive(Clone)]
pub(crate) struct Transport {
    http: reqwest::Client,
    egress: Option<Arc<egress::Egress>>,
}

impl Transport {
    /// A transport whose every request, connecting included, gives up after `timeout`.
    pub(crate) fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // reqwest's default too; pinned so that an upgrade cannot change it.
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("the HTTP client's configuration is static and valid");
        Self { http, egress: None }
    }

    /// [`new`](Self::new) for a Forge Container: every request leaves through Forge's egress
    /// proxy at `proxy`, and one to any host but the proxy and the declared `hosts` is refused
    /// ([`Failure::EgressRefused`]).
    pub(crate) fn through_proxy(timeout: Duration, proxy: &Url, hosts: &[String]) -> Self {
        Self {
            egress: Some(Arc::new(egress::Egress::new(proxy, hosts))),
            ..Self::new(timeout)
        }
    }

    /// The egress proxy every request leaves through, in a Forge Container.
    pub(crate) fn proxy(&self) -> Option<&Url> {
        self.egress.as_deref().map(egress::Egress::proxy)
    }

    /// Sends the request `build` makes and returns a successful (2xx) answer; `build` runs again
    /// for each retry.
    ///
    /// # Errors
    /// [`Failure::RateLimited`] for a 429 that `policy` does not wait out; [`Failure::Status`]
    /// for any other non-2xx answer; the failure of the request itself.
    pub(crate) async fn send(
        &self,
        policy: &Policy,
        mut build: impl FnMut(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        self.send_with(policy, |http| std::future::ready(Ok(build(http))))
            .await
    }

    /// [`send`](Self::send) of a request that `build` makes asynchronously, or fails to make with
    /// an error of its own: credentials made per request are made again for each retry.
    pub(crate) async fn send_with<E, F>(
        &self,
        policy: &Policy,
        mut build: impl FnMut(&reqwest::Client) -> F,
    ) -> Result<reqwest::Response, E>
    where
        E: From<Failure>,
        F: Future<Output = Result<reqwest::RequestBuilder, E>>,
    {
        let mut retries = 0;
        loop {
            let request = build(&self.http).await?.build().map_err(Failure::from)?;
            let response = self.execute(request).await?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = retry::retry_after(response.headers());
                let Some(wait) = policy.wait(retries, retry_after) else {
                    return Err(Failure::RateLimited { retry_after }.into());
                };
                retries += 1;
                let path = response.url().path();
                tracing::debug!(retry = retries, "rate limited; retrying {path} in {wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
            let body = body::read_capped(response, policy.error_body).await;
            return Err(Failure::Status { status, body }.into());
        }
    }

    /// The one place every request leaves through: directly, or in a Forge Container through
    /// the egress proxy alone.
    async fn execute(&self, mut request: reqwest::Request) -> Result<reqwest::Response, Failure> {
        if let Some(egress) = &self.egress {
            egress.route(&mut request)?;
        }
        Ok(self.http.execute(request).await?)
    }
}
