//! Encryption of tenants' sharedSecrets at rest: AES-256-GCM under a keyring whose current key
//! seals and whose older keys still open what they sealed.
//!
//! Each sealed secret is stored with the id of the key that sealed it; the tenant's clientKey is
//! the associated data, so a ciphertext copied onto another tenant's row does not open.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::SharedSecret;
use crate::config::SecretsKeys;

const NONCE_LEN: usize = 12;

/// One 256-bit key and its id.
struct SecretsKey {
    id: String,
    cipher: Aes256Gcm,
}

impl SecretsKey {
    fn new(bytes: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"connect-axum secrets key id\0")
            .chain_update(bytes)
            .finalize();
        Self {
            id: hex::encode(&digest[..8]),
            cipher: Aes256Gcm::new(bytes.into()),
        }
    }
}

/// The keys sharedSecrets are sealed with: one current key, and older ones kept for reading.
pub struct Keyring {
    current: SecretsKey,
    old: Vec<SecretsKey>,
    allow_plaintext: bool,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("old", &self.old.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

/// A sealed sharedSecret as stored: the id of the key and the base64 of nonce and ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The sealing key's id: 16 hex digits derived from the key, never the key itself.
    pub key_id: String,
    /// Base64 of the AES-256-GCM nonce and ciphertext, bound to the tenant's clientKey.
    pub ciphertext: String,
}

/// Why a stored secret could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// It was sealed with the key of this id, neither `SECRETS_KEY` nor one of
    /// `SECRETS_OLD_KEYS`.
    #[error("the secret was sealed with key {0}, which is not configured")]
    UnknownKey(String),
    /// The ciphertext does not open with its key: altered, or copied from another tenant's row.
    #[error("the sealed secret is corrupt or belongs to another tenant")]
    Corrupt,
    /// It is stored unsealed while `SECRETS_ALLOW_PLAINTEXT` is off.
    #[error("the secret is stored in plain text, which SECRETS_ALLOW_PLAINTEXT does not allow")]
    Plaintext,
}

impl Keyring {
    /// A keyring sealing with `current` and opening with it and every key of `old`.
    pub fn new(current: &[u8; 32], old: &[[u8; 32]]) -> Self {
        Self {
            current: SecretsKey::new(current),
            old: old.iter().map(SecretsKey::new).collect(),
            allow_plaintext: false,
        }
    }

    /// Also opens secrets stored in plain text (rows written before sealing, which carry no key
    /// id), so that they can be sealed; off by default, since anyone able to write the table
    /// could plant such a secret.
    pub fn allowing_plaintext(self, allow: bool) -> Self {
        Self {
            allow_plaintext: allow,
            ..self
        }
    }

    /// Whether secrets stored in plain text are opened.
    pub fn allows_plaintext(&self) -> bool {
        self.allow_plaintext
    }

    /// Parses `SECRETS_KEY` (base64 of 32 bytes) and `SECRETS_OLD_KEYS` (comma-separated, the same).
    pub fn parse(current: &str, old: &str) -> Result<Self, String> {
        let keys = SecretsKeys::parse(current, old)?;
        Ok(Self::new(keys.current(), keys.old()))
    }

    /// Reads the key kept in `path`, or makes a new random one there (readable by the owner only).
    /// Returns whether the key was made.
    pub fn load_or_create(path: &Path) -> std::io::Result<(Self, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => SecretsKeys::decode(&text)
                .map(|key| (Self::new(&key, &[]), false))
                .map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path)?;
                std::io::Write::write_all(
                    &mut file,
                    format!("{}\n", STANDARD.encode(key)).as_bytes(),
                )?;
                Ok((Self::new(&key, &[]), true))
            }
            Err(e) => Err(e),
        }
    }

    /// How many older keys are kept for reading.
    pub fn old_key_count(&self) -> usize {
        self.old.len()
    }

    /// The id of the key new secrets are sealed with.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `secret` for the tenant `client_key` under the current key.
    pub fn seal(&self, client_key: &str, secret: &SharedSecret) -> Sealed {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .current
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: client_key.as_bytes(),
                },
            )
            .expect("AES-GCM seals any message shorter than 64 GiB");
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        Sealed {
            key_id: self.current.id.clone(),
            ciphertext: STANDARD.encode(stored),
        }
    }

    /// Opens a secret stored for `client_key`. A row without a key id holds the secret in plain
    /// text, as written before encryption: it opens only when [`allows_plaintext`](Self::allows_plaintext),
    /// for [`Tenants::reencrypt_secrets`](super::Tenants::reencrypt_secrets) to seal it.
    pub fn open(
        &self,
        client_key: &str,
        key_id: Option<&str>,
        stored: &str,
    ) -> Result<SharedSecret, OpenError> {
        let Some(key_id) = key_id else {
            return if self.allow_plaintext {
                Ok(SharedSecret::new(stored))
            } else {
                Err(OpenError::Plaintext)
            };
        };
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == key_id)
            .ok_or_else(|| OpenError::UnknownKey(key_id.to_owned()))?;
        let bytes = STANDARD.decode(stored).map_err(|_| OpenError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError::Corrupt);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| OpenError::Corrupt)?;
        let plain = key
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: client_key.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Corrupt)?;
        String::from_utf8(plain)
            .map(SharedSecret::new)
            .map_err(|_| OpenError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SharedSecret {
        SharedSecret::new("a-very-secret-value")
    }

    #[test]
    fn a_sealed_secret_opens_for_its_tenant_only() {
        let ring = Keyring::new(&[7; 32], &[]);
        let sealed = ring.seal("tenant-a", &secret());
        assert!(!sealed.ciphertext.contains("secret"));
        let opened = ring.open("tenant-a", Some(&sealed.key_id), &sealed.ciphertext);
        assert_eq!(opened.unwrap().expose(), "a-very-secret-value");
        assert_eq!(
            ring.open("tenant-b", Some(&sealed.key_id), &sealed.ciphertext),
            Err(OpenError::Corrupt)
        );
    }

    #[test]
    fn plain_text_opens_only_when_allowed() {
        let ring = Keyring::new(&[7; 32], &[]);
        assert_eq!(ring.open("t", None, "planted"), Err(OpenError::Plaintext));
        let legacy = ring.allowing_plaintext(true);
        assert_eq!(legacy.open("t", None, "legacy").unwrap().expose(), "legacy");
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let ring = Keyring::new(&[7; 32], &[]);
        assert_ne!(
            ring.seal("t", &secret()).ciphertext,
            ring.seal("t", &secret()).ciphertext
        );
    }

    #[test]
    fn old_keys_open_and_the_current_key_seals() {
        let old = Keyring::new(&[1; 32], &[]);
        let sealed = old.seal("t", &secret());
        let rotated = Keyring::new(&[2; 32], &[[1; 32]]);
        assert_ne!(rotated.current_id(), old.current_id());
        let opened = rotated.open("t", Some(&sealed.key_id), &sealed.ciphertext);
        assert_eq!(opened.unwrap().expose(), "a-very-secret-value");
        assert_eq!(rotated.seal("t", &secret()).key_id, rotated.current_id());
        let forgotten = Keyring::new(&[2; 32], &[]);
        assert_eq!(
            forgotten.open("t", Some(&sealed.key_id), &sealed.ciphertext),
            Err(OpenError::UnknownKey(sealed.key_id.clone()))
        );
    }

    #[test]
    fn tampered_ciphertexts_do_not_open() {
        let ring = Keyring::new(&[7; 32], &[]);
        let sealed = ring.seal("t", &secret());
        let mut bytes = STANDARD.decode(&sealed.ciphertext).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        for stored in [
            STANDARD.encode(&bytes),
            "not base64!".to_owned(),
            String::new(),
        ] {
            assert_eq!(
                ring.open("t", Some(&sealed.key_id), &stored),
                Err(OpenError::Corrupt)
            );
        }
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(Keyring::parse(&STANDARD.encode([0u8; 32]), "").is_ok());
        assert!(Keyring::parse(&STANDARD.encode([0u8; 31]), "").is_err());
        assert!(Keyring::parse("not base64", "").is_err());
        assert!(Keyring::parse(&STANDARD.encode([0u8; 32]), "short").is_err());
        let ring = Keyring::parse(
            &STANDARD.encode([0u8; 32]),
            &format!(
                "{}, {}",
                STANDARD.encode([1u8; 32]),
                STANDARD.encode([2u8; 32])
            ),
        )
        .unwrap();
        assert_eq!(ring.old.len(), 2);
        assert!(!format!("{ring:?}").contains(&STANDARD.encode([0u8; 32])));
    }

    #[test]
    fn a_key_file_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let (made, created) = Keyring::load_or_create(&path).unwrap();
        assert!(created);
        let (read, created) = Keyring::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(made.current_id(), read.current_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
