//! Queue message bodies that SQS accepts, by construction.
//!
//! SQS refuses a message whose body holds a character outside
//! `#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF`
//! (SendMessage, `MessageBody`: "InvalidMessageContents"), and refuses a whole batch entry for
//! it. A booking note holding U+FFFF is valid JSON and valid UTF-8, so a body encoded with a
//! plain `serde_json::to_string` would be refused on every try. [`QueueBody::encode`] writes
//! every such character as a JSON `\uXXXX` escape, which any JSON reader decodes to the same
//! string, so what a subscriber receives is unchanged.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};

/// A JSON document every character of which SQS accepts in a message body. The only way to
/// make one is [`QueueBody::encode`], and the queue ports take nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueBody(String);

impl QueueBody {
    /// Encodes `value` as compact JSON, escaping what SQS refuses.
    ///
    /// # Errors
    /// Whatever `serde_json` reports for `value` (a map with non-string keys, a failing
    /// `Serialize` impl).
    pub fn encode(value: &impl Serialize) -> Result<Self, serde_json::Error> {
        let mut bytes = Vec::with_capacity(256);
        value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut bytes,
            SqsSafeFormatter,
        ))?;
        // serde_json writes UTF-8 only, and the formatter only adds ASCII.
        String::from_utf8(bytes)
            .map(Self)
            .map_err(|e| serde_json::Error::io(io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    /// A body as the queue handed it out: SQS accepted it once, so it is sendable as it is
    /// (how an unreadable message reaches the dead-letter queue unchanged).
    pub fn received(body: String) -> Self {
        Self(body)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length in bytes (what SQS's size limits count).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Whether SQS accepts `c` in a message body (the character rule quoted in the module docs).
pub fn sqs_accepts(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Compact JSON, with every character SQS refuses inside a string written as `\uXXXX`.
/// serde_json already escapes the C0 controls; what is left to escape is U+FFFE and U+FFFF
/// (surrogates cannot occur in a Rust string, and every refused character is in the BMP).
struct SqsSafeFormatter;

impl Formatter for SqsSafeFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some(index) = rest.find(|c: char| !sqs_accepts(c)) {
            CompactFormatter.write_string_fragment(writer, &rest[..index])?;
            let refused = rest[index..].chars().next().unwrap_or_default();
            write!(writer, "\\u{:04x}", u32::from(refused))?;
            rest = &rest[index + refused.len_utf8()..];
        }
        CompactFormatter.write_string_fragment(writer, rest)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn refused_characters_are_escaped_and_decode_back() {
        let notes = "a\u{FFFF}b\u{FFFE}c\u{0}d\u{1F}e\u{7F}f\u{10FFFF}";
        let body = QueueBody::encode(&json!({ "notes": notes, "k\u{FFFF}": 1 })).unwrap();
        assert!(body.as_str().chars().all(sqs_accepts), "{body:?}");
        assert!(body.as_str().contains(r"\uffff"));
        assert!(body.as_str().contains(r"\ufffe"));
        let back: Value = serde_json::from_str(body.as_str()).unwrap();
        assert_eq!(back["notes"], notes);
        assert_eq!(back["k\u{FFFF}"], 1);
    }

    #[test]
    fn the_rule_matches_the_sqs_ranges() {
        for allowed in [
            '\t',
            '\n',
            '\r',
            ' ',
            '\u{D7FF}',
            '\u{E000}',
            '\u{FFFD}',
            '\u{10000}',
        ] {
            assert!(sqs_accepts(allowed), "{allowed:?}");
        }
        for refused in [
            '\u{0}', '\u{8}', '\u{B}', '\u{C}', '\u{1F}', '\u{FFFE}', '\u{FFFF}',
        ] {
            assert!(!sqs_accepts(refused), "{refused:?}");
        }
    }

    proptest! {
        /// Any string, as a value or a key, encodes to a body SQS accepts that decodes to the
        /// same string.
        #[test]
        fn any_string_is_sqs_safe_and_round_trips(text in any::<String>(), key in any::<String>()) {
            let value = json!({ "data": { "notes": text.clone() }, key.clone(): [text.clone()] });
            let body = QueueBody::encode(&value).unwrap();
            prop_assert!(body.as_str().chars().all(sqs_accepts));
            let back: Value = serde_json::from_str(body.as_str()).unwrap();
            prop_assert_eq!(back, value);
        }

        /// Strings made only of the characters at the edges of the rule.
        #[test]
        fn edge_characters_round_trip(chars in proptest::collection::vec(
            prop_oneof![Just('\u{FFFE}'), Just('\u{FFFF}'), Just('\u{0}'), Just('\u{1F}'),
                        Just('\u{D7FF}'), Just('\u{E000}'), Just('\u{FFFD}'), Just('\u{10000}'),
                        Just('"'), Just('\\')], 0..64)) {
            let text: String = chars.into_iter().collect();
            let body = QueueBody::encode(&text).unwrap();
            prop_assert!(body.as_str().chars().all(sqs_accepts));
            prop_assert_eq!(serde_json::from_str::<String>(body.as_str()).unwrap(), text);
        }
    }
}
