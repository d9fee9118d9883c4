//! The domain: what an endpoint, an event, a secret, a signature and a retry are. No AWS type here.

pub mod booking;
pub mod catalogue;
pub mod delivery;
pub mod endpoint;
pub mod event;
pub mod id;
pub mod idempotency;
pub mod queue_body;
pub mod retry;
pub mod secret;
pub mod signature;
pub mod target;
pub mod trace;
pub mod validation;

use std::fmt;

/// The organization (tenant) a request acts for. Only ever built from verified claims.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(String);

impl OrgId {
    /// Longest org id accepted from a claim; DynamoDB keys stay far below their limits with it.
    pub const MAX_LEN: usize = 128;
    /// [`OrgId::parse`]'s rule, in words for error messages.
    pub const RULE: &'static str = "1 to 128 characters, without `#`, `|` or control characters";

    /// Accepts a claim value as an org id: non-empty, bounded, and without the `#` that separates
    /// the parts of a storage key.
    pub fn parse(value: &str) -> Option<Self> {
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .chars()
                .all(|c| !c.is_control() && c != '#' && c != '|');
        ok.then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
