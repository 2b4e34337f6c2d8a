//! The Connect section: where signed-install keys come from and which sites may install, the
//! authorization server of user tokens, calls into the product, and how long tokens may live.

use std::num::NonZeroU64;
use std::ops::RangeInclusive;
use std::time::Duration;

use url::Url;

use super::values::{ConfigError, HostPatterns, parse, url_var};

/// The largest clock skew `JWT_LEEWAY_SECS` may allow: more would keep expired tokens alive.
pub const MAX_JWT_LEEWAY_SECS: u64 = 600;

/// How long a session token lives.
pub const SESSION_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// How long a chain of renewed session tokens lasts by default: a working day.
pub const DEFAULT_SESSION_MAX_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// The bounds of `MAX_TOKEN_LIFETIME_SECS`: the app's own session tokens must pass it, and a
/// cap of more than a day caps nothing a site sends.
pub const TOKEN_LIFETIME_RANGE_SECS: RangeInclusive<u64> = SESSION_TOKEN_TTL.as_secs()..=86_400;

/// The default sites an install may come from.
pub const DEFAULT_ALLOWED_BASE_URLS: &str =
    "*.atlassian.net,*.jira.com,*.jira-dev.com,*.atlassian.com";

/// Installs, the product, and the tokens Connect's parties sign.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// INSTALL_KEYS_URL: where signed-install public keys are fetched as `GET {url}/{kid}`.
    pub install_keys_url: Url,
    /// INSTALL_KEYS_TIMEOUT_MS: how long a key fetch may take (default 5000).
    pub install_keys_timeout: Duration,
    /// ALLOWED_BASE_URLS: host patterns an installing site's baseUrl must match.
    pub allowed_base_urls: HostPatterns,
    /// OAUTH_AUTH_SERVER_URL: the authorization server of user tokens (acting as a user).
    pub oauth_auth_server_url: Url,
    /// PRODUCT_TIMEOUT_SECS: the time limit of one call to a tenant's product (default 20).
    pub product_timeout: Duration,
    /// JWT_LEEWAY_SECS: clock skew tolerated on `exp`, `nbf` and `iat` (default 30, at most 600).
    pub jwt_leeway: Duration,
    /// SESSION_MAX_LIFETIME_SECS: how long a chain of renewed session tokens lasts from the page
    /// load (or context token) that began it (default 28 800, 8 hours: a working day with the
    /// panel open, while a captured token is dead by the end of it). Past it the panel gets a
    /// fresh context token from the product, which needs the user's live product session.
    pub session_max_lifetime: Duration,
    /// MAX_TOKEN_LIFETIME_SECS: the longest a token may live, `exp − iat` (or `exp − now` for a
    /// token without `iat`), for product, context, session and signed-install tokens and Forge
    /// Invocation Tokens alike; longer ones are refused 401 `lifetime_too_long` (default 3600,
    /// from 900, the app's own session tokens' lifetime, to 86 400).
    pub max_token_lifetime: Duration,
}

impl ConnectConfig {
    /// Reads the section from `var`.
    pub(super) fn from_vars(
        var: &impl Fn(&'static str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let install_keys_url = url_var(
            var,
            "INSTALL_KEYS_URL",
            "https://connect-install-keys.atlassian.com",
        )?;
        let oauth_auth_server_url = url_var(
            var,
            "OAUTH_AUTH_SERVER_URL",
            "https://oauth-2-authorization-server.services.atlassian.com",
        )?;
        let leeway: u64 = parse(var, "JWT_LEEWAY_SECS", "30")?;
        if leeway > MAX_JWT_LEEWAY_SECS {
            return Err(ConfigError {
                var: "JWT_LEEWAY_SECS",
                message: format!("{leeway}: at most {MAX_JWT_LEEWAY_SECS} seconds"),
            });
        }
        let session_max_lifetime = Duration::from_secs(
            parse::<NonZeroU64>(
                var,
                "SESSION_MAX_LIFETIME_SECS",
                &DEFAULT_SESSION_MAX_LIFETIME.as_secs().to_string(),
            )?
            .get(),
        );
        let max_token_lifetime: u64 = parse(var, "MAX_TOKEN_LIFETIME_SECS", "3600")?;
        if !TOKEN_LIFETIME_RANGE_SECS.contains(&max_token_lifetime) {
            return Err(ConfigError {
                var: "MAX_TOKEN_LIFETIME_SECS",
                message: format!(
                    "{max_token_lifetime}: must be from {} to {} seconds",
                    TOKEN_LIFETIME_RANGE_SECS.start(),
                    TOKEN_LIFETIME_RANGE_SECS.end()
                ),
            });
        }
        let allowed_base_urls = HostPatterns::parse(
            &var("ALLOWED_BASE_URLS").unwrap_or_else(|| DEFAULT_ALLOWED_BASE_URLS.to_owned()),
        )
        .map_err(|message| ConfigError {
            var: "ALLOWED_BASE_URLS",
            message,
        })?;
        Ok(Self {
            install_keys_url,
            install_keys_timeout: Duration::from_millis(parse(
                var,
                "INSTALL_KEYS_TIMEOUT_MS",
                "5000",
            )?),
            allowed_base_urls,
            oauth_auth_server_url,
            product_timeout: Duration::from_secs(parse(var, "PRODUCT_TIMEOUT_SECS", "20")?),
            jwt_leeway: Duration::from_secs(leeway),
            session_max_lifetime,
            max_token_lifetime: Duration::from_secs(max_token_lifetime),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::DEFAULT_SESSION_MAX_LIFETIME;
    use crate::config::HostPatterns;
    use crate::config::tests::{config, each_is_refused_by_name};

    #[test]
    fn defaults_allow_atlassian_sites_with_thirty_seconds_of_leeway_and_hour_long_tokens() {
        let c = config(&[]).unwrap().connect;
        assert_eq!(c.jwt_leeway, Duration::from_secs(30));
        assert_eq!(c.max_token_lifetime, Duration::from_secs(3600));
        assert!(c.allowed_base_urls.matches("acme.atlassian.net"));
    }

    #[test]
    fn session_chains_last_a_working_day_unless_configured() {
        assert_eq!(
            config(&[]).unwrap().connect.session_max_lifetime,
            DEFAULT_SESSION_MAX_LIFETIME
        );
        let c = config(&[("SESSION_MAX_LIFETIME_SECS", "600")]).unwrap();
        assert_eq!(c.connect.session_max_lifetime, Duration::from_secs(600));
    }

    #[test]
    fn bad_connect_values_name_the_variable() {
        each_is_refused_by_name(&[
            ("INSTALL_KEYS_URL", "keys"),
            ("OAUTH_AUTH_SERVER_URL", "auth"),
            ("PRODUCT_TIMEOUT_SECS", "soon"),
            ("ALLOWED_BASE_URLS", "*"),
            ("ALLOWED_BASE_URLS", " , "),
            ("JWT_LEEWAY_SECS", "-1"),
            ("JWT_LEEWAY_SECS", "601"),
            ("JWT_LEEWAY_SECS", "18446744073709551615"),
            ("MAX_TOKEN_LIFETIME_SECS", "899"),
            ("MAX_TOKEN_LIFETIME_SECS", "86401"),
            ("MAX_TOKEN_LIFETIME_SECS", "forever"),
            ("SESSION_MAX_LIFETIME_SECS", "0"),
            ("SESSION_MAX_LIFETIME_SECS", "8h"),
        ]);
    }

    #[test]
    fn host_patterns_match_subdomains_only() {
        let p = HostPatterns::parse("*.atlassian.net, localhost").unwrap();
        assert!(p.matches("acme.atlassian.net"));
        assert!(p.matches("ACME.Atlassian.net"));
        assert!(p.matches("a.b.atlassian.net"));
        assert!(p.matches("localhost"));
        assert!(!p.matches("atlassian.net"));
        assert!(!p.matches("evilatlassian.net"));
        assert!(!p.matches("atlassian.net.evil.com"));
        assert!(!p.matches("localhost.evil.com"));
    }
}
