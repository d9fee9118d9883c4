//! Endpoint signing secrets: `whsec_` + base64 of random bytes (Standard Webhooks).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::id::{fill_random, RandomError};

pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of key material in a generated secret (Standard Webhooks allows 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// A plaintext signing secret. `Debug` never shows it, so it cannot leak through a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretFormatError {
    #[error("a secret starts with whsec_")]
    MissingPrefix,
    #[error("a secret is base64 after its prefix")]
    NotBase64,
    #[error("a secret holds 24 to 64 bytes of key material")]
    BadLength,
}

impl WebhookSecret {
    /// A new secret from the OS CSPRNG.
    pub fn generate() -> Result<Self, RandomError> {
        let mut key = [0u8; SECRET_BYTES];
        fill_random(&mut key)?;
        Ok(Self(format!("{SECRET_PREFIX}{}", STANDARD.encode(key))))
    }

    /// Accepts a `whsec_` secret, such as one decrypted from storage.
    pub fn parse(text: &str) -> Result<Self, SecretFormatError> {
        let secret = Self(text.to_owned());
        secret.key()?;
        Ok(secret)
    }

    /// The HMAC key: the base64-decoded part after the prefix.
    pub fn key(&self) -> Result<Vec<u8>, SecretFormatError> {
        let encoded = self
            .0
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretFormatError::MissingPrefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretFormatError::NotBase64)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretFormatError::BadLength);
        }
        Ok(key)
    }

    /// The plaintext, for the one response that may show it and for encryption.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_32_random_bytes_and_distinct() {
        let a = WebhookSecret::generate().unwrap();
        let b = WebhookSecret::generate().unwrap();
        assert!(a.expose().starts_with("whsec_"));
        assert_eq!(a.key().unwrap().len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn debug_output_redacts_the_secret() {
        let secret = WebhookSecret::generate().unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains(secret.expose()));
        assert!(!shown.contains("whsec_"));
    }

    #[test]
    fn malformed_secrets_are_refused() {
        assert_eq!(
            WebhookSecret::parse("abc").unwrap_err(),
            SecretFormatError::MissingPrefix
        );
        assert_eq!(
            WebhookSecret::parse("whsec_!!!").unwrap_err(),
            SecretFormatError::NotBase64
        );
        assert_eq!(
            WebhookSecret::parse("whsec_AAAA").unwrap_err(),
            SecretFormatError::BadLength
        );
    }
}
