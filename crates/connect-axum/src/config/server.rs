//! The server section: where the server listens and its public URL, what a request may carry and
//! how long it may take, how much work runs at once and one tenant's share of it, the log format.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use url::Url;

use super::values::{ConfigError, LogFormat, http_url, parse, seconds};

/// The longest `HEADER_READ_TIMEOUT_SECS` may be: a slow client holds its connection that long.
pub const MAX_HEADER_READ_TIMEOUT_SECS: u64 = 30;

/// The longest `BODY_READ_TIMEOUT_SECS` may be: a slow client holds a tenant slot that long.
pub const MAX_BODY_READ_TIMEOUT_SECS: u64 = 30;

/// Where the server listens, and what it admits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// BIND: the address to listen on (default `127.0.0.1`; `0.0.0.0` as a Forge Container,
    /// where the sidecar reaches the app from beside it).
    pub bind: IpAddr,
    /// PORT: the port to listen on (default 3000); as a Forge Container, `SERVER_PORT`, the one
    /// Forge gives (default 8080).
    pub port: u16,
    /// BASE_URL: the app's public URL (default `http://localhost:$PORT`): the descriptor's
    /// baseUrl, the `aud` of signed installs, and the base QSH paths are relative to.
    pub base_url: Url,
    /// MAX_BODY_BYTES: the largest request body accepted (default 1 MiB).
    pub max_body_bytes: usize,
    /// MAX_HEADER_BYTES: the most bytes of header names and values a request may carry
    /// (default 32 KiB; 431 above it).
    pub max_header_bytes: usize,
    /// REQUEST_TIMEOUT_SECS: how long a request may take before it is answered 408 (default 30).
    pub request_timeout: Duration,
    /// BODY_READ_TIMEOUT_SECS: how long a verified request's body may take to arrive once its
    /// headers have; a slower one is answered 408 `body_timeout` (default 10, 1 to 30).
    pub body_read_timeout: Duration,
    /// HEADER_READ_TIMEOUT_SECS: how long a connection may take to send a request's headers
    /// before it is closed (default 10, 1 to 30).
    pub header_read_timeout: Duration,
    /// MAX_CONCURRENT_REQUESTS: verified tenants' requests handled at once, from authentication
    /// to response; more are answered 503 (default 1024).
    pub max_concurrent_requests: usize,
    /// MAX_ANONYMOUS_REQUESTS: work done at once for clients not yet authenticated (public routes
    /// other than `/healthz` and `/readyz`, form bodies read to find their token); more is answered
    /// 503 (default a quarter of MAX_CONCURRENT_REQUESTS, at least 1).
    pub max_anonymous_requests: usize,
    /// MAX_CONCURRENT_REQUESTS_PER_TENANT: how many of MAX_CONCURRENT_REQUESTS one tenant may hold
    /// at once; more are answered 429 `tenant_busy` (default an eighth of
    /// MAX_CONCURRENT_REQUESTS, at least 1).
    pub max_concurrent_requests_per_tenant: usize,
    /// TENANT_RATE_LIMIT: requests per second one tenant may make, with bursts of twice that;
    /// more are answered 429 with `Retry-After` (default 0: no limit).
    pub tenant_rate_limit: u32,
    /// TENANT_WRITE_RATE_LIMIT: writes (methods other than GET, HEAD, OPTIONS) per second that a
    /// tenant's users may make with their own tokens (context, session and Forge UI tokens), with
    /// bursts of twice that; more are answered 429 with `Retry-After` (default 20; 0: no limit).
    /// The product's own calls are not counted.
    pub tenant_write_rate_limit: u32,
    /// LOG_FORMAT: `pretty` (default), `json`, or `forge` (a Forge Container's default).
    pub log_format: LogFormat,
}

impl ServerConfig {
    /// Reads the section from `var`; `container` when the app runs as a Forge Container.
    pub(super) fn from_vars(
        var: &impl Fn(&'static str) -> Option<String>,
        container: bool,
    ) -> Result<Self, ConfigError> {
        let (port, bind): (u16, IpAddr) = if container {
            let port = super::DEFAULT_CONTAINER_PORT.to_string();
            (
                parse(var, "SERVER_PORT", &port)?,
                parse(var, "BIND", "0.0.0.0")?,
            )
        } else {
            (
                parse(var, "PORT", "3000")?,
                parse(var, "BIND", "127.0.0.1")?,
            )
        };
        let base_url = var("BASE_URL").unwrap_or_else(|| format!("http://localhost:{port}"));
        let base_url = http_url("BASE_URL", &base_url)?;
        let max_body_bytes = parse::<NonZeroUsize>(var, "MAX_BODY_BYTES", "1048576")?.get();
        let max_header_bytes = parse::<NonZeroUsize>(var, "MAX_HEADER_BYTES", "32768")?.get();
        // A container's smallest size (30m CPU) serves about 150 requests a second: 32 in flight
        // is a fifth of a second of its work, and keeps it within half of its 64Mi.
        let max_concurrent_requests: usize = parse(
            var,
            "MAX_CONCURRENT_REQUESTS",
            if container { "32" } else { "1024" },
        )?;
        let max_anonymous_requests = parse::<NonZeroUsize>(
            var,
            "MAX_ANONYMOUS_REQUESTS",
            &(max_concurrent_requests / 4).max(1).to_string(),
        )?
        .get();
        let max_concurrent_requests_per_tenant = parse::<NonZeroUsize>(
            var,
            "MAX_CONCURRENT_REQUESTS_PER_TENANT",
            &(max_concurrent_requests / 8).max(1).to_string(),
        )?
        .get();
        let body_read_timeout = seconds(
            var,
            "BODY_READ_TIMEOUT_SECS",
            "10",
            MAX_BODY_READ_TIMEOUT_SECS,
        )?;
        let header_read_timeout = seconds(
            var,
            "HEADER_READ_TIMEOUT_SECS",
            "10",
            MAX_HEADER_READ_TIMEOUT_SECS,
        )?;
        Ok(Self {
            bind,
            port,
            base_url,
            max_body_bytes,
            max_header_bytes,
            request_timeout: Duration::from_secs(parse(var, "REQUEST_TIMEOUT_SECS", "30")?),
            body_read_timeout,
            header_read_timeout,
            max_concurrent_requests,
            max_anonymous_requests,
            max_concurrent_requests_per_tenant,
            tenant_rate_limit: parse(var, "TENANT_RATE_LIMIT", "0")?,
            tenant_write_rate_limit: parse(var, "TENANT_WRITE_RATE_LIMIT", "20")?,
            log_format: parse(
                var,
                "LOG_FORMAT",
                if container { "forge" } else { "pretty" },
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ServerConfig;
    use crate::config::tests::{config, each_is_refused_by_name};

    fn server(vars: &[(&str, &str)]) -> ServerConfig {
        config(vars).unwrap().server
    }

    #[test]
    fn defaults_listen_on_loopback_at_port_3000_with_a_mebibyte_of_body() {
        let c = server(&[]);
        assert_eq!(c.port, 3000);
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert_eq!(c.base_url.as_str(), "http://localhost:3000/");
        assert_eq!(c.max_body_bytes, 1 << 20);
    }

    #[test]
    fn the_tenant_rate_limit_is_off_by_default() {
        assert_eq!(server(&[]).tenant_rate_limit, 0);
        assert_eq!(
            server(&[("TENANT_RATE_LIMIT", "500")]).tenant_rate_limit,
            500
        );
    }

    #[test]
    fn a_tenant_gets_an_eighth_of_the_slots_its_body_ten_seconds_and_its_users_twenty_writes() {
        let c = server(&[]);
        assert_eq!(c.max_concurrent_requests_per_tenant, 128);
        assert_eq!(c.body_read_timeout, Duration::from_secs(10));
        assert_eq!(c.tenant_write_rate_limit, 20);
        let c = server(&[("MAX_CONCURRENT_REQUESTS", "4")]);
        assert_eq!(c.max_concurrent_requests_per_tenant, 1);
        let c = server(&[("MAX_CONCURRENT_REQUESTS_PER_TENANT", "9")]);
        assert_eq!(c.max_concurrent_requests_per_tenant, 9);
        each_is_refused_by_name(&[
            ("MAX_CONCURRENT_REQUESTS_PER_TENANT", "0"),
            ("BODY_READ_TIMEOUT_SECS", "0"),
            ("BODY_READ_TIMEOUT_SECS", "31"),
        ]);
    }

    #[test]
    fn anonymous_work_gets_a_quarter_of_the_tenant_slots_unless_set() {
        let c = server(&[]);
        assert_eq!(
            (c.max_concurrent_requests, c.max_anonymous_requests),
            (1024, 256)
        );
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        let c = server(&[("MAX_CONCURRENT_REQUESTS", "2")]);
        assert_eq!(c.max_anonymous_requests, 1);
        let c = server(&[("MAX_ANONYMOUS_REQUESTS", "7")]);
        assert_eq!(c.max_anonymous_requests, 7);
        let c = server(&[("HEADER_READ_TIMEOUT_SECS", "30")]);
        assert_eq!(c.header_read_timeout, Duration::from_secs(30));
    }

    #[test]
    fn base_url_follows_the_port_by_default() {
        assert_eq!(
            server(&[("PORT", "8080")]).base_url.as_str(),
            "http://localhost:8080/"
        );
    }

    #[test]
    fn a_forge_container_listens_where_forge_says_and_for_its_sidecar() {
        let container = |vars: &[(&str, &str)]| {
            let mut vars = vars.to_vec();
            vars.push(("FORGE_EGRESS_PROXY_URL", "http://localhost:7072"));
            config(&vars).unwrap()
        };
        let c = container(&[("PORT", "3000")]);
        assert_eq!(c.server.port, 8080);
        // Sized for the smallest container; the log lines Forge reads.
        assert_eq!(c.server.max_concurrent_requests, 32);
        assert_eq!(c.server.max_concurrent_requests_per_tenant, 4);
        assert_eq!(c.server.log_format, crate::config::LogFormat::Forge);
        assert_eq!(c.server.bind.to_string(), "0.0.0.0");
        assert_eq!(
            c.container.unwrap().egress_proxy_url.as_str(),
            "http://localhost:7072/"
        );
        assert_eq!(container(&[("SERVER_PORT", "9000")]).server.port, 9000);
        assert_eq!(
            container(&[("BIND", "127.0.0.1")]).server.bind.to_string(),
            "127.0.0.1"
        );
        let remote = config(&[("SERVER_PORT", "9000")]).unwrap();
        assert!(remote.container.is_none());
        assert_eq!(remote.server.port, 3000);
        each_is_refused_by_name(&[
            ("FORGE_EGRESS_PROXY_URL", "localhost:7072"),
            ("FORGE_EGRESS_PROXY_URL", "http://localhost:7072/?x=1"),
        ]);
    }

    #[test]
    fn bad_server_values_name_the_variable() {
        each_is_refused_by_name(&[
            ("PORT", "http"),
            ("BIND", "localhost:1"),
            ("BASE_URL", "not a url"),
            ("BASE_URL", "ftp://x.example"),
            ("BASE_URL", "https://x.example/?q=1"),
            ("MAX_BODY_BYTES", "0"),
            ("LOG_FORMAT", "xml"),
            ("HEADER_READ_TIMEOUT_SECS", "0"),
            ("HEADER_READ_TIMEOUT_SECS", "31"),
            ("MAX_ANONYMOUS_REQUESTS", "0"),
        ]);
    }
}
