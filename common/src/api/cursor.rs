//! Opaque pagination cursors. A cursor names the org it was issued to, so one from another org
//! (or a forged or garbled one) is refused with a 400 instead of being followed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::domain::id::EndpointId;
use crate::domain::OrgId;
use crate::error::ApiError;

const VERSION: &str = "v1";

/// Where the next page of an org's list starts.
#[derive(Debug, PartialEq, Eq)]
pub struct Cursor {
    pub after: EndpointId,
}

impl Cursor {
    pub fn encode(org: &OrgId, after: &EndpointId) -> String {
        URL_SAFE_NO_PAD.encode(format!("{VERSION}|{org}|{after}"))
    }

    pub fn decode(text: &str, org: &OrgId) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::invalid(
                "cursor",
                "is not a cursor this API issued: pass a page's nextCursor back as it is",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.splitn(3, '|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(VERSION), Some(owner), Some(after)) if owner == org.as_str() => Ok(Self {
                after: EndpointId::parse(after).ok_or_else(invalid)?,
            }),
            (Some(VERSION), Some(_), Some(_)) => Err(ApiError::invalid(
                "cursor",
                "was issued to another organization",
            )),
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_only_works_for_its_org() {
        let org = OrgId::parse("org_a").unwrap();
        let other = OrgId::parse("org_b").unwrap();
        let after = EndpointId::parse("ep_01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        let cursor = Cursor::encode(&org, &after);
        assert_eq!(Cursor::decode(&cursor, &org).unwrap().after, after);
        assert!(Cursor::decode(&cursor, &other).is_err());
        for garbage in ["", "!!!", "djE", &URL_SAFE_NO_PAD.encode("v1|org_a|nope")] {
            assert!(Cursor::decode(garbage, &org).is_err(), "{garbage}");
        }
    }
}
