//! The metrics section: the token that guards `GET /metrics`, and the listener of its own it may
//! be served on.

use std::net::IpAddr;

use crate::protocol::SharedSecret;

use super::values::{ConfigError, parse};

/// Who may read `GET /metrics`, and where it is served.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// METRICS_TOKEN: when set, `GET /metrics` needs `Authorization: Bearer <token>`.
    pub token: Option<SharedSecret>,
    /// METRICS_PORT: when set, `GET /metrics` is served on this port only (an internal listener)
    /// and answers 404 on `PORT`.
    pub port: Option<u16>,
    /// METRICS_BIND: the address of the metrics listener (default: `BIND`).
    pub bind: IpAddr,
}

impl MetricsConfig {
    /// Reads the section from `var`, beside the server's `port` and `bind`.
    pub(super) fn from_vars(
        var: &impl Fn(&'static str) -> Option<String>,
        port: u16,
        bind: IpAddr,
    ) -> Result<Self, ConfigError> {
        let metrics_port: Option<u16> = var("METRICS_PORT")
            .map(|_| parse(var, "METRICS_PORT", ""))
            .transpose()?;
        if metrics_port.is_some_and(|m| m != 0 && m == port) {
            return Err(ConfigError {
                var: "METRICS_PORT",
                message: format!("{port}: must differ from PORT"),
            });
        }
        Ok(Self {
            token: var("METRICS_TOKEN").map(SharedSecret::new),
            port: metrics_port,
            bind: parse(var, "METRICS_BIND", &bind.to_string())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{config, each_is_refused_by_name};

    #[test]
    fn metrics_are_public_only_on_the_embedded_store_or_behind_a_token() {
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let pg = [("DATABASE_URL", "postgres://db/app"), ("SECRETS_KEY", key)];
        assert!(config(&[]).unwrap().metrics_on_public_port());
        assert!(!config(&pg).unwrap().metrics_on_public_port());
        let with_token = [pg[0], pg[1], ("METRICS_TOKEN", "t")];
        assert!(config(&with_token).unwrap().metrics_on_public_port());
        let c = config(&[("METRICS_PORT", "9100"), ("METRICS_TOKEN", "t")]).unwrap();
        assert!(!c.metrics_on_public_port());
        assert_eq!(
            (c.metrics.port, c.metrics.bind),
            (Some(9100), c.server.bind)
        );
        let c = config(&[("BIND", "0.0.0.0"), ("METRICS_BIND", "127.0.0.1")]).unwrap();
        assert_eq!(c.metrics.bind.to_string(), "127.0.0.1");
    }

    #[test]
    fn bad_metrics_values_name_the_variable() {
        each_is_refused_by_name(&[
            ("METRICS_PORT", "metrics"),
            ("METRICS_PORT", "3000"),
            ("METRICS_BIND", "everywhere"),
        ]);
    }
}
