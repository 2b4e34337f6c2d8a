//! Secrets the app holds for a tenant, each hidden from `Debug` so that no log shows one.

use std::fmt;

/// A tenant's sharedSecret; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret(String);

impl SharedSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for signing and verifying only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A token Forge hands the remote for calls back to the product; its `Debug` never shows it.
#[derive(Clone)]
pub struct ForgeToken(String);

impl ForgeToken {
    /// Wraps a token Forge handed the app (or an app's test handed it).
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the `Authorization` header of a product call only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ForgeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_credential_shows_in_debug() {
        let shown = format!(
            "{:?} {:?}",
            SharedSecret::new("s3cret"),
            ForgeToken::new("t0ken")
        );
        assert_eq!(shown, "[redacted] [redacted]");
    }
}
