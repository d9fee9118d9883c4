//! Plaintext secrets cached briefly in memory, so a warm container does not call KMS for every
//! delivery. An entry is keyed by the ciphertext it came from, so the current and previous
//! secrets of a rotated endpoint are each decrypted once per cache period; records of one
//! batch that need the same secret at the same moment wait for one decryption, not one each,
//! and share its answer, a failure included (ten records do not each wait for KMS to fail).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
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

/// One secret's slot: filled by the first caller's decryption, which the callers waiting with
/// it share. A failed one is removed from the cache once answered, so a later caller tries
/// again.
struct Slot {
    answer: SharedAnswer,
    expires_at: Instant,
}

type SharedAnswer = Arc<OnceCell<Result<WebhookSecret, SecretError>>>;

#[derive(Clone)]
pub(super) enum SecretError {
    /// Retrying later may help (KMS unavailable).
    Unavailable(String),
    /// It never will (wrong context, tampered or malformed).
    Unusable(String),
}

pub(super) struct SecretCache {
    ttl: Duration,
    slots: Mutex<HashMap<CacheKey, Slot>>,
}

impl SecretCache {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub(super) async fn get_or_decrypt(
        &self,
        cipher: &impl SecretCipher,
        ciphertext: &[u8],
        context: SecretContext<'_>,
    ) -> Result<WebhookSecret, SecretError> {
        let Some((key, slot)) = self.slot(ciphertext, context) else {
            return decrypt(cipher, ciphertext, context).await;
        };
        let answer = slot
            .get_or_init(|| decrypt(cipher, ciphertext, context))
            .await
            .clone();
        if answer.is_err() {
            if let Ok(mut slots) = self.slots.lock() {
                if slots
                    .get(&key)
                    .is_some_and(|held| Arc::ptr_eq(&held.answer, &slot))
                {
                    slots.remove(&key);
                }
            }
        }
        answer
    }

    /// The secret's key and current slot, a new one if it has none or its period is over;
    /// `None` when caching is off (a TTL of zero) or the lock is poisoned.
    fn slot(
        &self,
        ciphertext: &[u8],
        context: SecretContext<'_>,
    ) -> Option<(CacheKey, SharedAnswer)> {
        if self.ttl.is_zero() {
            return None;
        }
        let key = (
            context.org_id.clone(),
            context.endpoint_id.clone(),
            ciphertext.to_vec(),
        );
        let mut slots = self.slots.lock().ok()?;
        let now = Instant::now();
        if let Some(slot) = slots.get(&key).filter(|slot| slot.expires_at > now) {
            return Some((key, slot.answer.clone()));
        }
        if slots.len() >= SWEEP_THRESHOLD {
            slots.retain(|_, slot| slot.expires_at > now);
        }
        let answer = Arc::new(OnceCell::new());
        slots.insert(
            key.clone(),
            Slot {
                answer: answer.clone(),
                expires_at: now + self.ttl,
            },
        );
        Some((key, answer))
    }
}

async fn decrypt(
    cipher: &impl SecretCipher,
    ciphertext: &[u8],
    context: SecretContext<'_>,
) -> Result<WebhookSecret, SecretError> {
    let plaintext = cipher
        .decrypt(ciphertext, context)
        .await
        .map_err(|e| match e {
            CipherError::Undecryptable => SecretError::Unusable(e.to_string()),
            CipherError::Unavailable(_) => SecretError::Unavailable(e.to_string()),
        })?;
    let text = String::from_utf8(plaintext)
        .map_err(|_| SecretError::Unusable("the secret is not text".into()))?;
    WebhookSecret::parse(&text).map_err(|e| SecretError::Unusable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SECRET: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn org() -> OrgId {
        OrgId::parse("org_a").unwrap()
    }

    fn endpoint(n: u8) -> EndpointId {
        EndpointId::parse(&format!(
            "ep_01ARZ3NDEKTSV4RRFFQ69G5FA{}",
            (b'V' + n) as char
        ))
        .unwrap()
    }

    /// Counts decryptions; after `delay` (so that concurrent callers overlap), decrypts by
    /// returning the ciphertext itself, or fails as a throttled KMS would.
    struct TestCipher {
        calls: AtomicUsize,
        delay: Duration,
        fails: bool,
    }

    impl TestCipher {
        fn new(delay_millis: u64, fails: bool) -> Self {
            Self {
                calls: AtomicUsize::new(0),
                delay: Duration::from_millis(delay_millis),
                fails,
            }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl SecretCipher for TestCipher {
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
            self.calls.fetch_add(1, Ordering::SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if self.fails {
                return Err(CipherError::Unavailable("throttled".into()));
            }
            Ok(ciphertext.to_vec())
        }
    }

    #[tokio::test]
    async fn a_warm_cache_decrypts_once_per_secret_until_it_expires() {
        tokio::time::pause();
        let cipher = TestCipher::new(0, false);
        let cache = SecretCache::new(Duration::from_secs(300));
        let org = org();
        let id = endpoint(0);
        let context = SecretContext {
            org_id: &org,
            endpoint_id: &id,
        };
        let first = SECRET;
        for _ in 0..5 {
            assert!(cache.get_or_decrypt(&cipher, first, context).await.is_ok());
        }
        assert_eq!(cipher.calls(), 1);

        let rotated = b"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let secret = cache
            .get_or_decrypt(&cipher, rotated, context)
            .await
            .ok()
            .unwrap();
        assert_eq!(secret.expose().as_bytes(), rotated);
        assert_eq!(cipher.calls(), 2);
        // During a rotation's grace period both sign every delivery: each stays cached.
        for _ in 0..3 {
            for ciphertext in [first, rotated.as_slice()] {
                assert!(cache
                    .get_or_decrypt(&cipher, ciphertext, context)
                    .await
                    .is_ok());
            }
        }
        assert_eq!(cipher.calls(), 2);

        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(cache
            .get_or_decrypt(&cipher, rotated, context)
            .await
            .is_ok());
        assert_eq!(cipher.calls(), 3);
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_secret_wait_for_one_decryption() {
        let cipher = TestCipher::new(50, false);
        let cache = SecretCache::new(Duration::from_secs(300));
        let org = org();
        let (id, other) = (endpoint(0), endpoint(1));
        let secret = SECRET;
        let calls = (0..10).map(|n| {
            let endpoint_id = if n < 8 { &id } else { &other };
            let context = SecretContext {
                org_id: &org,
                endpoint_id,
            };
            cache.get_or_decrypt(&cipher, secret, context)
        });
        let answers = futures_util::future::join_all(calls).await;
        assert!(answers.iter().all(|a| a.is_ok()));
        // Eight records of one endpoint, two of another: one decryption each.
        assert_eq!(cipher.calls(), 2);
    }

    #[tokio::test]
    async fn without_a_ttl_every_call_decrypts() {
        let cipher = TestCipher::new(0, false);
        let cache = SecretCache::new(Duration::ZERO);
        let org = org();
        let id = endpoint(0);
        let context = SecretContext {
            org_id: &org,
            endpoint_id: &id,
        };
        for _ in 0..3 {
            assert!(cache.get_or_decrypt(&cipher, SECRET, context).await.is_ok());
        }
        assert_eq!(cipher.calls(), 3);
    }

    #[tokio::test]
    async fn waiters_share_a_failed_decryption_and_the_next_call_tries_again() {
        let cipher = TestCipher::new(50, true);
        let cache = SecretCache::new(Duration::from_secs(300));
        let org = org();
        let id = endpoint(0);
        let context = SecretContext {
            org_id: &org,
            endpoint_id: &id,
        };
        let secret = SECRET;
        let answers = futures_util::future::join_all(
            (0..10).map(|_| cache.get_or_decrypt(&cipher, secret, context)),
        )
        .await;
        assert!(answers
            .iter()
            .all(|a| matches!(a, Err(SecretError::Unavailable(_)))));
        assert_eq!(cipher.calls(), 1);
        // Not cached: the next delivery asks KMS again.
        assert!(cache
            .get_or_decrypt(&cipher, secret, context)
            .await
            .is_err());
        assert_eq!(cipher.calls(), 2);
    }
}
