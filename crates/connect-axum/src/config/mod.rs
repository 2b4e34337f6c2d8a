//! Configuration from the environment, validated once at start-up: one section a file, each read
//! into types of its own or of [`crate::protocol`].

mod compliance;
mod connect;
mod container;
mod forge;
mod metrics;
mod server;
mod store;
mod values;

pub use compliance::ComplianceConfig;
pub use connect::{
    ConnectConfig, DEFAULT_ALLOWED_BASE_URLS, DEFAULT_SESSION_MAX_LIFETIME, MAX_JWT_LEEWAY_SECS,
    SESSION_TOKEN_TTL, TOKEN_LIFETIME_RANGE_SECS,
};
pub use container::{ContainerConfig, DEFAULT_CONTAINER_PORT};
pub use forge::{
    APP_ARI_PREFIX, DEFAULT_CONTEXT_ID_TEMPLATE, ForgeConfig, ForgeModuleKeys,
    IC_LABEL_PLACEHOLDER, check_context_id_template, check_ic_jwks_template,
};
pub use metrics::MetricsConfig;
pub use server::{MAX_BODY_READ_TIMEOUT_SECS, MAX_HEADER_READ_TIMEOUT_SECS, ServerConfig};
pub use store::{
    Backend, DEFAULT_ACQUIRE_TIMEOUT, IN_MEMORY_URL, KeyFileError, SecretsKeys, StoreConfig,
    sqlite_file,
};
pub use values::{ConfigError, HostPatterns, LogFormat};

/// The service's configuration, by section. Tests build it with [`Config::from_vars`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the server listens, and what it admits.
    pub server: ServerConfig,
    /// Where the tenants are kept, and how their secrets are sealed.
    pub store: StoreConfig,
    /// Installs, the product, and the tokens Connect's parties sign.
    pub connect: ConnectConfig,
    /// The Forge Remote backend.
    pub forge: ForgeConfig,
    /// Retention, personal data reporting and data residency.
    pub compliance: ComplianceConfig,
    /// Who may read `GET /metrics`, and where it is served.
    pub metrics: MetricsConfig,
    /// Set when the app runs as a Forge Container (`FORGE_EGRESS_PROXY_URL` set): its Forge
    /// routes are then the sidecar's to reach.
    pub container: Option<ContainerConfig>,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from `lookup`, which returns a variable's value if set.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let container = ContainerConfig::from_vars(&var)?;
        let server = ServerConfig::from_vars(&var, container.is_some())?;
        let connect = ConnectConfig::from_vars(&var)?;
        let store = StoreConfig::from_vars(&var, container.is_some())?;
        if let Some(container) = &container {
            container.check_store(&store)?;
        }
        let compliance = ComplianceConfig::from_vars(&var)?;
        let forge = ForgeConfig::from_vars(&var)?;
        let metrics = MetricsConfig::from_vars(&var, server.port, server.bind)?;
        Ok(Config {
            server,
            store,
            connect,
            forge,
            compliance,
            metrics,
            container,
        })
    }

    /// Whether `GET /metrics` is served on the public port: not when it has a port of its own,
    /// nor on Postgres (a deployment) unless a token guards it.
    pub fn metrics_on_public_port(&self) -> bool {
        self.metrics.port.is_none()
            && (self.metrics.token.is_some()
                || !matches!(self.store.database_url.parse(), Ok(Backend::Postgres)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{Config, ConfigError};

    /// The configuration `vars` give, every other variable unset.
    pub(super) fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|k| vars.get(k).cloned())
    }

    /// Checks that each `(variable, value)` alone is refused with an error naming the variable.
    pub(super) fn each_is_refused_by_name(cases: &[(&'static str, &str)]) {
        for &(var, value) in cases {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{value}");
        }
    }

    #[test]
    fn blank_values_count_as_unset() {
        let c = config(&[("PORT", " "), ("DATABASE_URL", "")]).unwrap();
        assert_eq!(c.server.port, 3000);
        assert_eq!(c.store.database_url, "sqlite://connect-axum.db");
    }
}
