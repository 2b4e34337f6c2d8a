//! Fuzzes the `installed` payload checks: they never panic, refuse only with a 4xx, and accept
//! only an installation for this app whose baseUrl and displayUrl are allowed https sites.

#![no_main]

use std::sync::LazyLock;

use axum::response::IntoResponse;
use connect_axum::config::HostPatterns;
use connect_axum::lifecycle::parse_installed_payload;
use libfuzzer_sys::fuzz_target;
use url::{Host, Url};

const APP_KEY: &str = "connect-axum-issue-notes";

static ALLOWED: LazyLock<HostPatterns> =
    LazyLock::new(|| HostPatterns::parse("*.atlassian.net, localhost").unwrap());

fuzz_target!(|body: &[u8]| {
    let installation = match parse_installed_payload(body, APP_KEY, &ALLOWED) {
        Ok(i) => i,
        Err(e) => {
            let status = e.into_response().status();
            assert!(status.is_client_error(), "refused with {status}");
            return;
        }
    };
    assert_eq!(installation.app_key, APP_KEY);
    let client_key = installation.client_key.as_str();
    assert!(!client_key.is_empty() && client_key.len() <= 255 && !client_key.contains('\0'));
    let secret = installation.shared_secret.expose();
    assert!(!secret.is_empty() && secret.len() <= 1024);

    let stored = &installation.base_url;
    assert!(
        !stored.ends_with('/'),
        "stored baseUrl has no trailing slash"
    );
    assert_site("baseUrl", stored);
    if let Some(display_url) = &installation.display_url {
        assert_site("displayUrl", display_url);
    }
});

/// A stored site URL: https (or http on loopback) on an allowed, plain host name (nothing a
/// Content-Security-Policy would read as syntax), without credentials, query or fragment.
fn assert_site(field: &str, stored: &str) {
    let url = Url::parse(stored).expect("a stored site URL parses");
    let host = url.host().expect("a stored site URL has a host");
    let loopback = match &host {
        Host::Domain(d) => {
            assert!(
                d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
                "plain host name: {field} {stored:?}"
            );
            *d == "localhost"
        }
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    };
    assert!(
        url.scheme() == "https" || (url.scheme() == "http" && loopback),
        "https, or http on loopback: {field} {stored:?}"
    );
    assert!(
        ALLOWED.matches(&host.to_string()),
        "allowed host: {field} {stored:?}"
    );
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "no credentials: {field} {stored:?}"
    );
    assert!(
        url.query().is_none() && url.fragment().is_none(),
        "no query or fragment: {field} {stored:?}"
    );
}
