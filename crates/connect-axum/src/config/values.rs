//! How a setting reads: the parsers of numbers, seconds, days, paths and URLs, and the value types
//! of their own (host patterns, the log format), each failure naming its variable.

use std::time::Duration;

use url::Url;

/// Where an install's `baseUrl` may point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPatterns(Vec<String>);

impl HostPatterns {
    /// Parses a comma-separated list of host names, each optionally `*.`-prefixed.
    pub fn parse(list: &str) -> Result<Self, String> {
        let patterns: Vec<String> = list
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        if patterns.is_empty() {
            return Err("at least one host pattern is required".to_owned());
        }
        for p in &patterns {
            let host = p.strip_prefix("*.").unwrap_or(p);
            if host.is_empty()
                || host.contains('*')
                || !host.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']')
                })
            {
                return Err(format!("{p:?} is not a host name or a *.domain pattern"));
            }
        }
        Ok(Self(patterns))
    }

    /// Whether `host` matches one of the patterns (`*.example.com` matches subdomains only).
    pub fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.0.iter().any(|p| match p.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            None => host == *p,
        })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Pretty,
    /// One JSON object per line (the Docker image's default).
    Json,
    /// One flat JSON object per line as Forge reads a container's output: `ts`, `level`, `msg`,
    /// the request's fields (`forge_invocation` among them) and the event's (a Forge
    /// Container's default).
    Forge,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            "forge" => Ok(LogFormat::Forge),
            _ => Err("must be json, forge or pretty".to_owned()),
        }
    }
}

/// A configuration variable with a bad value.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {message}")]
pub struct ConfigError {
    /// The environment variable, `DATABASE_URL`.
    pub var: &'static str,
    /// What is wrong with its value, for the operator.
    pub message: String,
}

/// A route path such as `/forge/events`: a leading `/`, then letters, digits, `-`, `_` and `/`.
pub(super) fn path_var(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<String, ConfigError> {
    let path = var(name).unwrap_or_else(|| default.to_owned());
    let path = path.trim().trim_end_matches('/').to_owned();
    if !path.starts_with('/')
        || path.len() < 2
        || !path[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/'))
    {
        return Err(ConfigError {
            var: name,
            message: format!("{path:?}: must be a path such as {default}"),
        });
    }
    Ok(path)
}

pub(super) fn parse<T: std::str::FromStr>(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let value = var(name).unwrap_or_else(|| default.to_owned());
    value.trim().parse().map_err(|e: T::Err| ConfigError {
        var: name,
        message: format!("{value:?}: {e}"),
    })
}

/// A whole number of seconds from 1 to `max`, as a duration.
pub(super) fn seconds(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: &str,
    max: u64,
) -> Result<Duration, ConfigError> {
    let secs: u64 = parse(var, name, default)?;
    if !(1..=max).contains(&secs) {
        return Err(ConfigError {
            var: name,
            message: format!("{secs}: from 1 to {max} seconds"),
        });
    }
    Ok(Duration::from_secs(secs))
}

/// A number of days (fractions allowed) from 0 to `max`, as a duration.
pub(super) fn days(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: &str,
    max: f64,
) -> Result<Duration, ConfigError> {
    let days: f64 = parse(var, name, default)?;
    Duration::try_from_secs_f64(days * 86_400.0)
        .ok()
        .filter(|_| days <= max)
        .ok_or_else(|| ConfigError {
            var: name,
            message: format!("{days}: must be a number of days from 0 to {max}"),
        })
}

/// The http(s) URL in `name`, or `default`.
pub(super) fn url_var(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<Url, ConfigError> {
    http_url(name, &var(name).unwrap_or_else(|| default.to_owned()))
}

pub(super) fn http_url(var: &'static str, value: &str) -> Result<Url, ConfigError> {
    let err = |message: String| ConfigError { var, message };
    let url = Url::parse(value.trim()).map_err(|e| err(format!("{value:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(err(format!("{value:?} must be an absolute http(s) URL")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err(format!("{value:?} must not have a query or fragment")));
    }
    Ok(url)
}
