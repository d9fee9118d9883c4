//! `Idempotency-Key` on every POST: the same key from the same org within
//! [`IDEMPOTENCY_WINDOW`] gets the first answer again instead of a second effect (the Stripe
//! and IETF `draft-ietf-httpapi-idempotency-key-header` convention).
//!
//! A request first *claims* its key (a conditional write): the claim holds the request's
//! fingerprint and a lease. The answer is then stored under the key, in the same transaction
//! as the resource where the route writes one (a booking, an endpoint, a rotation), so a crash
//! cannot leave the resource without its answer. A failed request gives its claim back, so
//! it can be tried again with the same key; a claim whose lease ran out (its request crashed)
//! can be taken over.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::id::hex;

/// How long a key and its answer are kept: 24 hours.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long a claim keeps a key from another request before it counts as abandoned: longer
/// than any API function may run (15 s, template.yaml), with room for clock skew.
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);
/// Longest key accepted, in characters.
pub const MAX_KEY_LEN: usize = 255;
/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The answer header set on a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A valid `Idempotency-Key`: 1 to 255 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The rule, in words for error messages.
    pub const RULE: &'static str = "must be 1 to 255 printable ASCII characters";

    pub fn parse(text: &str) -> Option<Self> {
        let ok = !text.is_empty()
            && text.len() <= MAX_KEY_LEN
            && text.bytes().all(|b| (0x20..=0x7e).contains(&b));
        ok.then(|| Self(text.to_owned()))
    }

    /// What the store keys the record by: a SHA-256 of the key, hex, so any printable key
    /// makes a well-formed sort key of fixed length.
    pub fn storage_id(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }
}

/// What makes two requests "the same" for a key: method, path and body. A JSON body is
/// compared by its value (keys sorted, whitespace dropped), so a client that re-serialises its
/// retry is not refused; any other body byte for byte.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|mut value| {
            sort_keys(&mut value);
            serde_json::to_vec(&value).ok()
        });
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update(b" ");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(canonical.as_deref().unwrap_or(body));
    hex(&hash.finalize())
}

/// Sorts every object's keys, however deep (the workspace keeps JSON objects in their order).
fn sort_keys(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_keys);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// An answer as stored for replay: never a secret (a route whose answer holds one stores it
/// without, and shows it again from the stored ciphertext).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// JSON text.
    pub body: String,
}

/// Where a key stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// A request holds it until `lease_until` (Unix ms).
    Claimed {
        token: String,
        lease_until: u64,
    },
    Completed(StoredResponse),
}

/// A key's record under its org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// [`IdempotencyKey::storage_id`].
    pub key_id: String,
    /// [`fingerprint`] of the request that claimed it.
    pub fingerprint: String,
    pub state: KeyState,
    /// Unix seconds; the store's TTL removes it after, and it counts as absent from then.
    pub expires_at: i64,
}

impl IdempotencyRecord {
    /// A fresh claim by a request, leased from `now_millis`.
    pub fn claim(key_id: String, fingerprint: String, token: String, now_millis: u64) -> Self {
        let window = i64::try_from(IDEMPOTENCY_WINDOW.as_secs()).unwrap_or(i64::MAX);
        Self {
            key_id,
            fingerprint,
            state: KeyState::Claimed {
                token,
                lease_until: now_millis + CLAIM_LEASE.as_millis() as u64,
            },
            expires_at: (now_millis / 1000) as i64 + window,
        }
    }

    /// Whether a new claim may replace this record: it expired, or its claim was abandoned.
    pub fn is_free(&self, now_millis: u64) -> bool {
        self.expires_at <= (now_millis / 1000) as i64
            || matches!(self.state, KeyState::Claimed { lease_until, .. } if lease_until <= now_millis)
    }
}

/// A claim's answer, to be stored in the same write as the route's effect; the write is
/// refused if the claim is no longer `token`'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyCompletion {
    pub key_id: String,
    pub token: String,
    pub response: StoredResponse,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_of_bounded_length() {
        assert!(IdempotencyKey::parse("3f1c0a52-9a9e-4a0c-8a55-4b1e6b1d2f10").is_some());
        assert!(IdempotencyKey::parse("a key with spaces ~!").is_some());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_some());
        for bad in ["", "tab\there", "new\nline", "é", "\u{7f}"] {
            assert!(IdempotencyKey::parse(bad).is_none(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_none());
        let id = IdempotencyKey::parse("k").unwrap().storage_id();
        assert_eq!(id.len(), 64);
        assert_ne!(id, IdempotencyKey::parse("K").unwrap().storage_id());
    }

    #[test]
    fn a_fingerprint_compares_json_by_value_and_everything_else_exactly() {
        let a = fingerprint("POST", "/bookings", br#"{"a": 1, "b": [{"d": 2, "c": 3}]}"#);
        assert_eq!(
            a,
            fingerprint("POST", "/bookings", br#"{"b":[{"c":3,"d":2}],"a":1}"#)
        );
        assert_ne!(
            a,
            fingerprint("POST", "/bookings", br#"{"a": 2, "b": [{"d": 2, "c": 3}]}"#)
        );
        assert_ne!(
            a,
            fingerprint("POST", "/webhooks", br#"{"a": 1, "b": [{"d": 2, "c": 3}]}"#)
        );
        assert_ne!(
            a,
            fingerprint(
                "PATCH",
                "/bookings",
                br#"{"a": 1, "b": [{"d": 2, "c": 3}]}"#
            )
        );
        assert_ne!(
            fingerprint("POST", "/x", b"not json"),
            fingerprint("POST", "/x", b"not  json")
        );
    }

    #[test]
    fn a_claim_is_free_again_once_its_lease_or_the_window_ran_out() {
        let now = 1_800_000_000_000;
        let claim = IdempotencyRecord::claim("id".into(), "fp".into(), "t".into(), now);
        assert!(!claim.is_free(now));
        assert!(claim.is_free(now + CLAIM_LEASE.as_millis() as u64));
        let done = IdempotencyRecord {
            state: KeyState::Completed(StoredResponse {
                status: 201,
                body: "{}".into(),
            }),
            ..claim
        };
        assert!(!done.is_free(now + 3_600_000));
        assert!(done.is_free(now + IDEMPOTENCY_WINDOW.as_millis() as u64));
    }
}
