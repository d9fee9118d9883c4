//! Plaintext secrets cached briefly in memory, so a warm container does not call KMS for every
//! delivery. An entry is keyed by the ciphertext it came from, so the current and previous
//! secrets of a rotated endpoint are each decrypted once per cache period.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::id::EndpointId;
use crate::domain::secret::WebhookSecret;
use crate::domain::OrgId;
use crate::error::CipherError;
use crate::ports::{SecretCipher, SecretContext};

/// Past this many entries, expired ones are swept before inserting.
const SWEEP_THRESHOLD: usize = 1024;

/// Whose secret, and the ciphertext it was decrypted from.
type CacheKey = (OrgId, EndpointId, Vec<u8>);

struct Cached {
    secret: WebhookSecret,
    expires_at: Instant,
}

pub(super) enum SecretError {
    /// Retrying later may help (KMS unavailable).
    Unavailable(String),
    /// It never will (wrong context, tampered or malformed).
    Unusable(String),
}

pub(super) struct SecretCache {
    ttl: Duration,
    entries: Mutex<HashMap<CacheKey, Cached>>,
}

impl SecretCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(super) async fn get_or_decrypt(
        &self,
        cipher: &impl SecretCipher,
        ciphertext: &[u8],
        context: SecretContext<'_>,
    ) -> Result<WebhookSecret, SecretError> {
        let key = (
            context.org_id.clone(),
            context.endpoint_id.clone(),
            ciphertext.to_vec(),
        );
        if let Ok(entries) = self.entries.lock() {
            if let Some(cached) = entries.get(&key) {
                if cached.expires_at > Instant::now() {
                    return Ok(cached.secret.clone());
                }
            }
        }
        let plaintext = cipher
            .decrypt(ciphertext, context)
            .await
            .map_err(|e| match e {
                CipherError::Undecryptable => SecretError::Unusable(e.to_string()),
                CipherError::Unavailable(_) => SecretError::Unavailable(e.to_string()),
            })?;
        let text = String::from_utf8(plaintext)
            .map_err(|_| SecretError::Unusable("the secret is not text".into()))?;
        let secret =
            WebhookSecret::parse(&text).map_err(|e| SecretError::Unusable(e.to_string()))?;
        if !self.ttl.is_zero() {
            if let Ok(mut entries) = self.entries.lock() {
                let now = Instant::now();
                if entries.len() >= SWEEP_THRESHOLD {
                    entries.retain(|_, c| c.expires_at > now);
                }
                entries.insert(
                    key,
                    Cached {
                        secret: secret.clone(),
                        expires_at: now + self.ttl,
                    },
                );
            }
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts decryptions; decrypts by returning the ciphertext itself.
    struct CountingCipher(AtomicUsize);

    impl SecretCipher for CountingCipher {
        async fn encrypt(
            &self,
            plaintext: &[u8],
            _: SecretContext<'_>,
        ) -> Result<Vec<u8>, CipherError> {
            Ok(plaintext.to_vec())
        }
        async fn decrypt(
            &self,
            ciphertext: &[u8],
            _: SecretContext<'_>,
        ) -> Result<Vec<u8>, CipherError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(ciphertext.to_vec())
        }
    }

    #[tokio::test]
    async fn a_warm_cache_decrypts_once_per_secret_until_it_expires() {
        tokio::time::pause();
        let cipher = CountingCipher(AtomicUsize::new(0));
        let cache = SecretCache::new(Duration::from_secs(300));
        let org = OrgId::parse("org_a").unwrap();
        let id = EndpointId::parse("ep_01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        let context = SecretContext {
            org_id: &org,
            endpoint_id: &id,
        };
        let first = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        for _ in 0..5 {
            assert!(cache.get_or_decrypt(&cipher, first, context).await.is_ok());
        }
        assert_eq!(cipher.0.load(Ordering::SeqCst), 1);

        let rotated = b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let secret = cache
            .get_or_decrypt(&cipher, rotated, context)
            .await
            .ok()
            .unwrap();
        assert_eq!(secret.expose().as_bytes(), rotated);
        assert_eq!(cipher.0.load(Ordering::SeqCst), 2);
        // During a rotation's grace period both sign every delivery: each stays cached.
        for _ in 0..3 {
            for ciphertext in [first.as_slice(), rotated.as_slice()] {
                assert!(cache
                    .get_or_decrypt(&cipher, ciphertext, context)
                    .await
                    .is_ok());
            }
        }
        assert_eq!(cipher.0.load(Ordering::SeqCst), 2);

        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(cache
            .get_or_decrypt(&cipher, rotated, context)
            .await
            .is_ok());
        assert_eq!(cipher.0.load(Ordering::SeqCst), 3);
    }
}
