//! CORS for the Forge routes, which a Forge app's frontend may call straight from the user's
//! browser (`requestRemote`): a preflight from an allowed origin is answered without a token
//! (browsers send none with it), and the real request still needs its Forge Invocation Token.

use std::time::Duration;

use axum::http::{HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// An origin allowed to call the Forge routes from a browser: `https://host[:port]` exactly, or
/// `https://*.suffix` for any subdomain of `suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// One origin, lowercased: `https://app.example.net:8443`.
    Exact(String),
    /// `scheme://*.suffix`: every subdomain of `suffix`, however deep.
    Subdomains {
        /// `https://` or `http://`.
        scheme: String,
        /// The lowercased suffix with its leading dot, `.example.net`.
        suffix: String,
    },
}

impl OriginPattern {
    /// Parses `https://host`, `http://localhost:8080` or `https://*.example.net`.
    pub fn parse(origin: &str) -> Result<Self, String> {
        let bad =
            || format!("{origin:?}: must be an origin such as https://host or https://*.host");
        let (scheme, host) = origin.split_once("://").ok_or_else(bad)?;
        if !matches!(scheme, "https" | "http")
            || host.is_empty()
            || host.ends_with('.')
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'*'))
        {
            return Err(bad());
        }
        match host.strip_prefix("*.") {
            Some(suffix) if !suffix.contains('*') && suffix.contains('.') => {
                Ok(OriginPattern::Subdomains {
                    scheme: format!("{scheme}://"),
                    suffix: format!(".{}", suffix.to_ascii_lowercase()),
                })
            }
            Some(_) => Err(bad()),
            None if host.contains('*') => Err(bad()),
            None => Ok(OriginPattern::Exact(origin.to_ascii_lowercase())),
        }
    }

    /// Whether the `Origin` header `origin` is allowed by this pattern.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        match self {
            OriginPattern::Exact(exact) => origin == *exact,
            OriginPattern::Subdomains { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|host| host.strip_suffix(suffix.as_str()))
                .is_some_and(|sub| {
                    !sub.is_empty()
                        && sub
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
                }),
        }
    }
}

/// The CORS layer of the Forge routes, or `None` when no origin is allowed.
pub fn forge_layer(origins: &[OriginPattern]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins = origins.to_vec();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                origin
                    .to_str()
                    .is_ok_and(|o| origins.iter().any(|p| p.allows(o)))
            }))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            // `authorization`, `content-type` and whatever custom headers the frontend sends.
            .allow_headers(AllowHeaders::mirror_request())
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_subdomain_only() {
        let exact = OriginPattern::parse("https://App.example.com").unwrap();
        assert!(exact.allows("https://app.example.com"));
        assert!(!exact.allows("https://app.example.com.evil.net"));
        assert!(!exact.allows("http://app.example.com"));
        let any = OriginPattern::parse("https://*.cdn.prod.atlassian-dev.net").unwrap();
        assert!(any.allows("https://abc-123.cdn.prod.atlassian-dev.net"));
        assert!(any.allows("https://a.b.cdn.prod.atlassian-dev.net"));
        for refused in [
            "https://cdn.prod.atlassian-dev.net",
            "https://.cdn.prod.atlassian-dev.net",
            "https://evilcdn.prod.atlassian-dev.net",
            "https://x.cdn.prod.atlassian-dev.net.evil.net",
            "http://x.cdn.prod.atlassian-dev.net",
            "https://x/y.cdn.prod.atlassian-dev.net",
            "null",
        ] {
            assert!(!any.allows(refused), "{refused}");
        }
        for bad in [
            "app.example.com",
            "ftp://x.y",
            "https://*",
            "https://*.com",
            "https://a.*.b",
            "https://x/y",
            "",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
