//! Sortable random identifiers: a prefix, then 26 Crockford base32 characters (48 bits of
//! milliseconds since the epoch, 80 random bits), as in ULID. Ids created later sort later, so
//! lists come out in creation order without an index.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const BODY_LEN: usize = 26;

/// Error from the operating system's random source.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

/// `bytes` random bytes from the OS CSPRNG, as lowercase hex (twice as many characters).
pub fn random_hex(bytes: usize) -> Result<String, RandomError> {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf)?;
    Ok(hex(&buf))
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn fill_random(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(|e| RandomError(e.to_string()))
}

fn sortable_body() -> Result<String, RandomError> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut random = [0u8; 10];
    fill_random(&mut random)?;
    Ok(encode_body(millis, random))
}

/// 48 bits of milliseconds then 80 other bits, as 26 Crockford base32 characters.
fn encode_body(millis: u64, rest: [u8; 10]) -> String {
    let mut value: u128 = u128::from(millis & 0xFFFF_FFFF_FFFF) << 80;
    for (i, byte) in rest.iter().enumerate() {
        value |= u128::from(*byte) << (72 - 8 * i);
    }
    let mut out = String::with_capacity(BODY_LEN);
    for i in (0..BODY_LEN).rev() {
        let index = ((value >> (5 * i)) & 0x1F) as usize;
        out.push(CROCKFORD[index] as char);
    }
    out
}

/// The milliseconds part of a body this module generated.
fn body_millis(body: &str) -> u64 {
    body.bytes().take(10).fold(0u64, |acc, b| {
        let digit = CROCKFORD.iter().position(|c| *c == b).unwrap_or(0) as u64;
        (acc << 5) | digit
    })
}

fn is_sortable_body(text: &str) -> bool {
    text.len() == BODY_LEN && text.bytes().all(|b| CROCKFORD.contains(&b))
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Result<Self, RandomError> {
                Ok(Self(format!("{}{}", $prefix, sortable_body()?)))
            }

            /// Accepts only the exact shape this module generates.
            pub fn parse(text: &str) -> Option<Self> {
                text.strip_prefix($prefix)
                    .filter(|body| is_sortable_body(body))
                    .map(|_| Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value).ok_or_else(|| format!("not a valid {} id: {value}", $prefix))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

prefixed_id!(
    /// A webhook endpoint's id, `ep_...`.
    EndpointId,
    "ep_"
);
prefixed_id!(
    /// A webhook message's id, `msg_...`: the `webhook-id` header, the same on every retry.
    MessageId,
    "msg_"
);
prefixed_id!(
    /// A booking's id, `bk_...`.
    BookingId,
    "bk_"
);
prefixed_id!(
    /// An event's id, `evt_...`: one occurrence, announced to every subscribed endpoint.
    EventId,
    "evt_"
);

impl EventId {
    /// An event id derived from `seed` (the same seed, the same id), dated `millis`: an event
    /// that may be announced twice (a redelivered attempt) is then one event, and its messages
    /// keep their `webhook-id`.
    pub fn derived(seed: &str, millis: u64) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(seed.as_bytes());
        let mut rest = [0u8; 10];
        rest.copy_from_slice(&digest[..10]);
        Self(format!("{}{}", Self::PREFIX, encode_body(millis, rest)))
    }

    /// When the event was created, in milliseconds since the epoch (from the id itself).
    pub fn created_millis(&self) -> u64 {
        body_millis(&self.0[Self::PREFIX.len()..])
    }
}

impl MessageId {
    /// A key below every id of a message whose event was created at `millis` or later, and
    /// above every earlier one (message ids sort by their event's time).
    pub fn lower_bound(millis: u64) -> String {
        format!("{}{}", Self::PREFIX, encode_body(millis, [0; 10]))
    }

    /// The message that carries `event` to `endpoint`. Derived, not drawn: publishing the same
    /// event again (a replay from the outbox) yields the same `webhook-id`, so receivers can
    /// de-duplicate it.
    pub fn for_delivery(event: &EventId, endpoint: &EndpointId) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(event.as_str())
            .chain_update(b"|")
            .chain_update(endpoint.as_str())
            .finalize();
        let mut rest = [0u8; 10];
        rest.copy_from_slice(&digest[..10]);
        Self(format!(
            "{}{}",
            Self::PREFIX,
            encode_body(event.created_millis(), rest)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_event_id_is_the_same_for_the_same_seed_and_time() {
        let id = EventId::derived("message.failed|msg_1|8", 1_900_000_000_000);
        assert_eq!(
            id,
            EventId::derived("message.failed|msg_1|8", 1_900_000_000_000)
        );
        assert_ne!(
            id,
            EventId::derived("message.failed|msg_1|7", 1_900_000_000_000)
        );
        assert_eq!(id.created_millis(), 1_900_000_000_000);
        assert_eq!(EventId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn ids_have_their_prefix_and_parse_back() {
        let id = EndpointId::generate().unwrap();
        assert!(id.as_str().starts_with("ep_"));
        assert_eq!(id.as_str().len(), 3 + BODY_LEN);
        assert_eq!(EndpointId::parse(id.as_str()), Some(id.clone()));
        assert!(MessageId::parse(id.as_str()).is_none(), "prefix is checked");
    }

    #[test]
    fn delivery_message_ids_are_stable_per_event_and_endpoint() {
        let event = EventId::generate().unwrap();
        let (one, two) = (
            EndpointId::generate().unwrap(),
            EndpointId::generate().unwrap(),
        );
        let id = MessageId::for_delivery(&event, &one);
        assert_eq!(id, MessageId::for_delivery(&event, &one));
        assert_ne!(id, MessageId::for_delivery(&event, &two));
        assert_ne!(
            id,
            MessageId::for_delivery(&EventId::generate().unwrap(), &one)
        );
        assert_eq!(MessageId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(
            &id.as_str()[4..14],
            &event.as_str()[4..14],
            "sorts with its event"
        );
    }

    #[test]
    fn an_event_id_knows_when_it_was_made() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let event = EventId::generate().unwrap();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!((before..=after).contains(&event.created_millis()));
    }

    #[test]
    fn later_ids_sort_later() {
        let first = EndpointId::generate().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = EndpointId::generate().unwrap();
        assert!(first < second);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for text in [
            "",
            "ep_",
            "ep_short",
            "ep_01ARZ3NDEKTSV4RRFFQ69G5FAi",
            "ep_01ARZ3NDEKTSV4RRFFQ69G5FAV#",
            "EP#x",
        ] {
            assert!(EndpointId::parse(text).is_none(), "{text}");
        }
        assert!(EndpointId::parse("ep_01ARZ3NDEKTSV4RRFFQ69G5FAV").is_some());
    }
}
