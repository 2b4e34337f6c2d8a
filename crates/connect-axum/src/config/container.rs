//! The container section: whether the app runs as a Forge Container, which Forge's own variables
//! say (`FORGE_EGRESS_PROXY_URL`), and nothing else to set.

use url::Url;

use super::values::{ConfigError, http_url};

/// The port a container listens on when Forge sets no `SERVER_PORT` (as under `forge tunnel`).
pub const DEFAULT_CONTAINER_PORT: u16 = 8080;

/// How the app runs as a Forge Container; `Config::container` is `None` when it does not.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// FORGE_EGRESS_PROXY_URL: Forge's sidecar, which every outbound call goes through and which
    /// gives an invocation's context (`http://localhost:7072` in Forge, `http://proxy-sidecar:7072`
    /// under `forge tunnel`).
    pub egress_proxy_url: Url,
}

impl ContainerConfig {
    /// Reads the section from `var`: `None` unless `FORGE_EGRESS_PROXY_URL` is set.
    pub(super) fn from_vars(
        var: &impl Fn(&'static str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        var("FORGE_EGRESS_PROXY_URL")
            .map(|url| {
                Ok(Self {
                    egress_proxy_url: http_url("FORGE_EGRESS_PROXY_URL", &url)?,
                })
            })
            .transpose()
    }
}
