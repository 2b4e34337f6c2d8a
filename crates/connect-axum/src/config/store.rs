//! The store section: which database and logins, the pool, the tenant cache, and the keys that
//! seal sharedSecrets at rest (decoded here; the store makes its keyring of them).

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::values::{ConfigError, parse};

/// How long a request waits for a pooled Postgres connection by default: a store that cannot
/// be reached is a 503 within 2 s.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Which backend a `DATABASE_URL` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://…` or `postgresql://…`.
    Postgres,
    /// `sqlite:…`, the embedded store.
    Sqlite,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err("DATABASE_URL must start with postgres://, postgresql:// or sqlite:".to_owned())
        }
    }
}

/// The 256-bit keys of `SECRETS_KEY` and `SECRETS_OLD_KEYS`: the one that seals sharedSecrets,
/// and older ones still accepted for reading. Its `Debug` shows none of them.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretsKeys {
    current: [u8; 32],
    old: Vec<[u8; 32]>,
}

impl SecretsKeys {
    /// Parses `SECRETS_KEY` (base64 of 32 bytes) and `SECRETS_OLD_KEYS` (comma-separated, the same).
    pub fn parse(current: &str, old: &str) -> Result<Self, String> {
        let current = Self::decode(current)?;
        let old = old
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(Self::decode)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { current, old })
    }

    /// Decodes one key: the base64 of exactly 32 bytes.
    pub fn decode(text: &str) -> Result<[u8; 32], String> {
        STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| "must be the base64 of exactly 32 bytes".to_owned())
    }

    /// The key that seals.
    pub fn current(&self) -> &[u8; 32] {
        &self.current
    }

    /// The older keys, kept for reading.
    pub fn old(&self) -> &[[u8; 32]] {
        &self.old
    }
}

impl fmt::Debug for SecretsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsKeys")
            .field("current", &"[redacted]")
            .field("old", &self.old.len())
            .finish()
    }
}

/// The embedded store's secrets key file could not be read or made.
#[derive(Debug, thiserror::Error)]
#[error("could not read or create the secrets key file {}: {error}", path.display())]
pub struct KeyFileError {
    /// The file (`SECRETS_KEY_FILE`).
    pub path: PathBuf,
    /// Why it could not be read or made.
    pub error: std::io::Error,
}

/// Where the tenants are kept, and how their secrets are sealed.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// DATABASE_URL: `postgres://…` or `sqlite:…` (default `sqlite://connect-axum.db`; as a
    /// Forge Container, `sqlite::memory:`, which writes no file).
    pub database_url: String,
    /// MIGRATION_DATABASE_URL: a `postgres://…` login that owns the tables and runs the
    /// migrations; `DATABASE_URL` is then a serving login that owns nothing, a member of
    /// `connect_axum_app` (unset: `DATABASE_URL`'s login does both).
    pub migration_database_url: Option<String>,
    /// DB_POOL_SIZE: database connections per process (default 10).
    pub pool_size: u32,
    /// DB_ACQUIRE_TIMEOUT_MS: how long a request waits for a Postgres connection, connecting
    /// included, before it is answered 503 `store_unavailable`; it bounds connecting at start-up
    /// too (default 1500).
    pub acquire_timeout: Duration,
    /// TENANT_CACHE_SIZE: tenants kept in memory (default 100 000).
    pub tenant_cache_size: u64,
    /// SECRETS_KEY: base64 of the 32-byte key that seals sharedSecrets at rest, with
    /// SECRETS_OLD_KEYS (comma-separated, same form) still accepted for reading. Required with
    /// Postgres; the embedded store keeps a generated key in SECRETS_KEY_FILE when it is unset.
    pub secrets: Option<SecretsKeys>,
    /// SECRETS_KEY_FILE: where the embedded store keeps its generated key (default
    /// `connect-axum.secrets.key`).
    pub secrets_key_file: PathBuf,
    /// Whether the key that seals sharedSecrets is made in memory at each start and never
    /// written: an in-memory store as a Forge Container, whose secrets die with the process.
    pub secrets_in_memory: bool,
    /// SECRETS_ALLOW_PLAINTEXT: also read sharedSecrets stored in plain text, as written before
    /// secrets were sealed, so that start-up (or `secrets rotate`) seals them (default false:
    /// a plain-text secret, which anyone able to write the table could plant, is refused).
    pub secrets_allow_plaintext: bool,
}

impl StoreConfig {
    /// Reads the section from `var`.
    /// Reads the section from `var`; `container` when the app runs as a Forge Container, whose
    /// default store is in memory.
    pub(super) fn from_vars(
        var: &impl Fn(&'static str) -> Option<String>,
        container: bool,
    ) -> Result<Self, ConfigError> {
        let default_url = if container {
            IN_MEMORY_URL
        } else {
            "sqlite://connect-axum.db"
        };
        let database_url = var("DATABASE_URL").unwrap_or_else(|| default_url.to_owned());
        let backend = database_url
            .parse::<Backend>()
            .map_err(|message| ConfigError {
                var: "DATABASE_URL",
                message,
            })?;
        let secrets_allow_plaintext: bool = parse(var, "SECRETS_ALLOW_PLAINTEXT", "false")?;
        let migration_database_url = var("MIGRATION_DATABASE_URL");
        if migration_database_url.as_deref().is_some_and(|url| {
            backend != Backend::Postgres || url.parse::<Backend>() != Ok(Backend::Postgres)
        }) {
            return Err(ConfigError {
                var: "MIGRATION_DATABASE_URL",
                message: "must be a postgres:// URL, beside a Postgres DATABASE_URL".to_owned(),
            });
        }
        let secrets = match var("SECRETS_KEY") {
            Some(key) => Some(
                SecretsKeys::parse(&key, &var("SECRETS_OLD_KEYS").unwrap_or_default()).map_err(
                    |message| ConfigError {
                        var: "SECRETS_KEY",
                        message,
                    },
                )?,
            ),
            None if backend == Backend::Postgres => {
                return Err(ConfigError {
                    var: "SECRETS_KEY",
                    message: "is required with a Postgres DATABASE_URL: sharedSecrets are \
                              encrypted at rest (make one with `openssl rand -base64 32`)"
                        .to_owned(),
                });
            }
            None => None,
        };
        let secrets_in_memory =
            secrets.is_none() && backend == Backend::Sqlite && sqlite_file(&database_url).is_none();
        let pool_size = parse::<NonZeroU32>(var, "DB_POOL_SIZE", "10")?.get();
        let acquire_timeout = Duration::from_millis(
            parse::<NonZeroU64>(
                var,
                "DB_ACQUIRE_TIMEOUT_MS",
                &DEFAULT_ACQUIRE_TIMEOUT.as_millis().to_string(),
            )?
            .get(),
        );
        Ok(Self {
            database_url,
            migration_database_url,
            pool_size,
            acquire_timeout,
            tenant_cache_size: parse(var, "TENANT_CACHE_SIZE", "100000")?,
            secrets_key_file: PathBuf::from(
                var("SECRETS_KEY_FILE").unwrap_or_else(|| "connect-axum.secrets.key".to_owned()),
            ),
            secrets_in_memory,
            secrets,
            secrets_allow_plaintext,
        })
    }
}

/// The embedded store in memory: one database shared by the pool's connections, gone with the
/// process.
pub const IN_MEMORY_URL: &str = "sqlite::memory:";

/// The file an `sqlite:` URL keeps its database in; `None` for another backend or an in-memory
/// database.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = path.strip_prefix("//").unwrap_or(path);
    let in_memory =
        path.is_empty() || path == ":memory:" || query.split('&').any(|pair| pair == "mode=memory");
    (!in_memory).then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::SecretsKeys;
    use crate::config::tests::{config, each_is_refused_by_name};

    #[test]
    fn the_default_store_is_the_embedded_one() {
        assert_eq!(
            config(&[]).unwrap().store.database_url,
            "sqlite://connect-axum.db"
        );
    }

    #[test]
    fn postgres_needs_a_secrets_key_and_the_embedded_store_does_not() {
        let err = config(&[("DATABASE_URL", "postgres://db/app")]).unwrap_err();
        assert_eq!(err.var, "SECRETS_KEY");
        assert!(err.to_string().contains("required"), "{err}");
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let c = config(&[("DATABASE_URL", "postgres://db/app"), ("SECRETS_KEY", key)]).unwrap();
        assert!(c.store.secrets.is_some());
        assert!(!format!("{c:?}").contains(key), "Debug shows the key");
        assert!(
            !format!("{c:?}").contains("[0, 0, 0"),
            "Debug shows the key"
        );
        assert!(config(&[]).unwrap().store.secrets.is_none());
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64_and_old_ones_are_kept_in_order() {
        let key = |byte: u8| STANDARD.encode([byte; 32]);
        assert!(SecretsKeys::parse(&STANDARD.encode([0u8; 31]), "").is_err());
        assert!(SecretsKeys::parse("not base64", "").is_err());
        assert!(SecretsKeys::parse(&key(0), "short").is_err());
        let keys = SecretsKeys::parse(&key(0), &format!("{}, {}", key(1), key(2))).unwrap();
        assert_eq!(keys.current(), &[0; 32]);
        assert_eq!(keys.old(), [[1; 32], [2; 32]]);
    }

    #[test]
    fn a_migration_login_needs_a_postgres_store() {
        let key = (
            "SECRETS_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        );
        let owner = ("MIGRATION_DATABASE_URL", "postgres://owner@db/app");
        let c = config(&[("DATABASE_URL", "postgres://serving@db/app"), key, owner]).unwrap();
        assert_eq!(
            c.store.migration_database_url.as_deref(),
            Some("postgres://owner@db/app")
        );
        assert_eq!(config(&[owner]).unwrap_err().var, "MIGRATION_DATABASE_URL");
        assert_eq!(config(&[]).unwrap().store.migration_database_url, None);
    }

    #[test]
    fn the_acquire_timeout_keeps_an_outage_under_two_seconds_by_default() {
        assert_eq!(
            config(&[]).unwrap().store.acquire_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(
            config(&[("DB_ACQUIRE_TIMEOUT_MS", "250")])
                .unwrap()
                .store
                .acquire_timeout,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn bad_store_values_name_the_variable() {
        each_is_refused_by_name(&[
            ("DATABASE_URL", "mysql://x"),
            ("DB_POOL_SIZE", "0"),
            ("DB_POOL_SIZE", "many"),
            ("DB_ACQUIRE_TIMEOUT_MS", "0"),
            ("DB_ACQUIRE_TIMEOUT_MS", "soon"),
            ("MIGRATION_DATABASE_URL", "sqlite://x.db"),
            ("SECRETS_KEY", "c2hvcnQ="),
            ("SECRETS_ALLOW_PLAINTEXT", "sometimes"),
        ]);
    }
}
