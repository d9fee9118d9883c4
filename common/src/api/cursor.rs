//! Opaque pagination cursors. A cursor names the org it was issued to, so one from another org
//! (or a forged or garbled one) is refused with a 400 instead of being followed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::domain::OrgId;
use crate::error::ApiError;

const VERSION: &str = "v1";

/// Where the next page of an org's list starts: the key of the last item of the page before.
pub struct Cursor;

impl Cursor {
    pub fn encode(org: &OrgId, after: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{VERSION}|{org}|{after}"))
    }

    /// The key a cursor of `org` holds, read by `parse` (the list's own key type: a cursor of
    /// another list does not parse).
    pub fn decode<T>(
        text: &str,
        org: &OrgId,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ApiError> {
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
            (Some(VERSION), Some(owner), Some(after)) if owner == org.as_str() => {
                parse(after).ok_or_else(invalid)
            }
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
    use crate::domain::id::EndpointId;

    #[test]
    fn a_cursor_only_works_for_its_org() {
        let org = OrgId::parse("org_a").unwrap();
        let other = OrgId::parse("org_b").unwrap();
        let after = EndpointId::parse("ep_01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        let cursor = Cursor::encode(&org, after.as_str());
        assert_eq!(
            Cursor::decode(&cursor, &org, EndpointId::parse).unwrap(),
            after
        );
        assert!(Cursor::decode(&cursor, &other, EndpointId::parse).is_err());
        for garbage in ["", "!!!", "djE", &URL_SAFE_NO_PAD.encode("v1|org_a|nope")] {
            assert!(
                Cursor::decode(garbage, &org, EndpointId::parse).is_err(),
                "{garbage}"
            );
        }
        let of_another_list = Cursor::encode(&org, "msg_01ARZ3NDEKTSV4RRFFQ69G5FAV");
        assert!(Cursor::decode(&of_another_list, &org, EndpointId::parse).is_err());
    }
}
