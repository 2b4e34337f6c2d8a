//! The HTTP client of every outbound call: install keys, Forge's JWKS, the product's REST APIs and
//! its authorization server.

use std::time::Duration;

/// An HTTP client whose every request, connecting included, gives up after `timeout`.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // reqwest's default too; pinned so that an upgrade cannot change it.
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("the HTTP client's configuration is static and valid")
}
