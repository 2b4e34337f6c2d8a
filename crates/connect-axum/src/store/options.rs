//! The store's options from the configuration's store section: the keyring that seals sharedSecrets
//! is made of `SECRETS_KEY`, or of the embedded store's key file, made (and logged) on first use,
//! or, for a store in memory, of a key made at start that is never written.

use std::sync::Arc;

use super::{Keyring, StoreOptions};
use crate::config::{KeyFileError, StoreConfig};

impl StoreOptions {
    /// How to reach the store `config` describes, with the keyring that seals its secrets, and
    /// no app migrations.
    ///
    /// # Errors
    /// Without `SECRETS_KEY`, the embedded store's key file cannot be read or made.
    pub fn from_config(config: &StoreConfig) -> Result<Self, KeyFileError> {
        let keyring = match &config.secrets {
            Some(keys) => Keyring::new(keys.current(), keys.old()),
            // What it seals lives in the same memory and dies with it.
            None if config.secrets_in_memory => Keyring::new(&rand::random(), &[]),
            None => {
                let path = &config.secrets_key_file;
                let (keyring, created) =
                    Keyring::load_or_create(path).map_err(|error| KeyFileError {
                        path: path.clone(),
                        error,
                    })?;
                if created {
                    tracing::warn!(
                        "generated a secrets key in {} for the embedded store; set SECRETS_KEY in production",
                        path.display()
                    );
                } else {
                    tracing::info!("sharedSecrets sealed with the key in {}", path.display());
                }
                keyring
            }
        };
        Ok(Self {
            database_url: config.database_url.clone(),
            migration_url: config.migration_database_url.clone(),
            pool_size: config.pool_size,
            acquire_timeout: config.acquire_timeout,
            tenant_cache_size: config.tenant_cache_size,
            keyring: Arc::new(keyring.allowing_plaintext(config.secrets_allow_plaintext)),
            app_migrations: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::StoreOptions;
    use crate::config::Config;

    #[test]
    fn a_migration_login_reaches_the_options_and_plaintext_stays_refused_unless_allowed() {
        let vars = |allow: &'static str| {
            move |name: &str| match name {
                "DATABASE_URL" => Some("postgres://serving@db/app".to_owned()),
                "MIGRATION_DATABASE_URL" => Some("postgres://owner@db/app".to_owned()),
                "SECRETS_KEY" => Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned()),
                "SECRETS_ALLOW_PLAINTEXT" => Some(allow.to_owned()),
                _ => None,
            }
        };
        let config = Config::from_vars(vars("false")).unwrap();
        let options = StoreOptions::from_config(&config.store).unwrap();
        assert_eq!(
            options.migration_url.as_deref(),
            Some("postgres://owner@db/app")
        );
        assert!(!options.keyring.allows_plaintext());
        let config = Config::from_vars(vars("true")).unwrap();
        let options = StoreOptions::from_config(&config.store).unwrap();
        assert!(options.keyring.allows_plaintext());
    }
}
