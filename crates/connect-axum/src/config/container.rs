//! The container section: whether the app runs as a Forge Container, which Forge's own variables
//! say (`FORGE_EGRESS_PROXY_URL`), and nothing else to set.

use std::path::{Path, PathBuf};

use url::Url;

use super::store::{StoreConfig, sqlite_file};
use super::values::{ConfigError, http_url, path_var};

/// The port a container listens on when Forge sets no `SERVER_PORT` (as under `forge tunnel`).
pub const DEFAULT_CONTAINER_PORT: u16 = 8080;

/// How the app runs as a Forge Container; `Config::container` is `None` when it does not.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// FORGE_EGRESS_PROXY_URL: Forge's sidecar, which every outbound call goes through and which
    /// gives an invocation's context (`http://localhost:7072` in Forge, `http://proxy-sidecar:7072`
    /// under `forge tunnel`).
    pub egress_proxy_url: Url,
    /// CONTAINER_WRITABLE_DIRS: comma-separated folders the container may write (default none:
    /// Forge publishes none yet, and its root filesystem is read-only). An embedded store's file
    /// or key file elsewhere refuses the start.
    pub writable_dirs: Vec<PathBuf>,
    /// CONTAINER_EVENTS_QUEUE: the Forge async events queue the app's event handlers' work is
    /// handed to (default `connect-axum-events`; the manifest's `consumer` names it).
    pub events_queue: String,
    /// CONTAINER_EVENTS_CONSUMER_PATH: where that queue's events are delivered back and the
    /// handlers run (default `/forge/events/consume`; the consumer's endpoint route).
    pub events_consumer_path: String,
}

fn queue_name(var: &impl Fn(&'static str) -> Option<String>) -> Result<String, ConfigError> {
    let name = var("CONTAINER_EVENTS_QUEUE").unwrap_or_else(|| "connect-axum-events".to_owned());
    let valid = (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(name)
    } else {
        Err(ConfigError {
            var: "CONTAINER_EVENTS_QUEUE",
            message: "must be 1 to 100 letters, digits, - and _".to_owned(),
        })
    }
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
                    writable_dirs: var("CONTAINER_WRITABLE_DIRS")
                        .unwrap_or_default()
                        .split(',')
                        .map(str::trim)
                        .filter(|dir| !dir.is_empty())
                        .map(PathBuf::from)
                        .collect(),
                    events_queue: queue_name(var)?,
                    events_consumer_path: path_var(
                        var,
                        "CONTAINER_EVENTS_CONSUMER_PATH",
                        "/forge/events/consume",
                    )?,
                })
            })
            .transpose()
    }

    /// Whether `path` (relative to the working folder) lies in a writable folder.
    pub fn may_write(&self, path: &Path) -> bool {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        self.writable_dirs.iter().any(|dir| {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            path.starts_with(dir)
                && !path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
        })
    }

    /// Refuses a store that would write outside the writable folders, naming the setting that
    /// asks for it.
    pub(super) fn check_store(&self, store: &StoreConfig) -> Result<(), ConfigError> {
        let Some(file) = sqlite_file(&store.database_url) else {
            return Ok(());
        };
        let refuse = |var, what: &str| ConfigError {
            var,
            message: format!(
                "a Forge Container writes no file outside CONTAINER_WRITABLE_DIRS ({}), and {what} \
                 is not in one: leave DATABASE_URL unset for an in-memory store, or use Postgres",
                self.shown_dirs()
            ),
        };
        if !self.may_write(&file) {
            return Err(refuse("DATABASE_URL", &format!("{}", file.display())));
        }
        if store.secrets.is_none() && !self.may_write(&store.secrets_key_file) {
            return Err(refuse(
                "SECRETS_KEY_FILE",
                &format!("{}", store.secrets_key_file.display()),
            ));
        }
        Ok(())
    }

    fn shown_dirs(&self) -> String {
        if self.writable_dirs.is_empty() {
            return "none set".to_owned();
        }
        let dirs: Vec<_> = self
            .writable_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn container(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(|name| {
            if name == "FORGE_EGRESS_PROXY_URL" {
                return Some("http://localhost:7072".to_owned());
            }
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn a_container_keeps_its_store_and_its_key_in_memory_unless_told_otherwise() {
        let c = container(&[]).unwrap();
        assert_eq!(c.store.database_url, "sqlite::memory:");
        assert!(c.store.secrets.is_none());
        assert!(c.store.secrets_in_memory);
        // Outside a container the embedded store keeps a file and a key file.
        let remote = Config::from_vars(|_| None).unwrap();
        assert!(!remote.store.secrets_in_memory);
    }

    #[test]
    fn a_store_that_would_write_outside_the_writable_folders_refuses_the_start() {
        let err = container(&[("DATABASE_URL", "sqlite://notes.db")]).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        assert!(
            err.message.contains("CONTAINER_WRITABLE_DIRS (none set)"),
            "{}",
            err.message
        );
        let err = container(&[
            ("DATABASE_URL", "sqlite:///tmp/w/notes.db"),
            ("CONTAINER_WRITABLE_DIRS", "/tmp/w"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "SECRETS_KEY_FILE", "{}", err.message);
        let ok = container(&[
            ("DATABASE_URL", "sqlite:///tmp/w/notes.db"),
            ("CONTAINER_WRITABLE_DIRS", "/var/x, /tmp/w"),
            ("SECRETS_KEY_FILE", "/tmp/w/key"),
        ])
        .unwrap();
        assert!(!ok.store.secrets_in_memory);
        let escape = container(&[
            ("DATABASE_URL", "sqlite:///tmp/w/../etc/notes.db"),
            ("CONTAINER_WRITABLE_DIRS", "/tmp/w"),
        ])
        .unwrap_err();
        assert_eq!(escape.var, "DATABASE_URL");
        // An in-memory URL of any spelling writes nothing.
        for url in [
            "sqlite::memory:",
            "sqlite://?mode=memory",
            "sqlite:file:x?mode=memory&cache=shared",
        ] {
            let c = container(&[("DATABASE_URL", url)]).unwrap();
            assert!(c.store.secrets_in_memory, "{url}");
        }
    }

    #[test]
    fn postgres_in_a_container_still_needs_its_secrets_key() {
        let err = container(&[("DATABASE_URL", "postgres://db/app")]).unwrap_err();
        assert_eq!(err.var, "SECRETS_KEY");
    }
}
