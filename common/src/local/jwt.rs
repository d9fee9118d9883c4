//! HS256 bearer tokens for the local runner, which stands in for API Gateway's JWT authorizer:
//! it verifies the token, then hands the handlers the claims the way API Gateway would.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::time::unix_seconds_now;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error(
        "the token is not a JWT (three base64url parts, JSON header and claims, a numeric exp)"
    )]
    Malformed,
    #[error("the token is not signed with HS256")]
    WrongAlgorithm,
    #[error("the token's signature does not verify")]
    BadSignature,
    /// At this unix time.
    #[error("the token has expired")]
    Expired(i64),
    #[error("the token has no exp claim; tokens must expire")]
    NoExpiry,
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the signing key is unusable")]
    BadKey,
}

fn mac(secret: &[u8]) -> Result<Hmac<Sha256>, TokenError> {
    Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TokenError::BadKey)
}

/// A token for `org` under `claim`, valid for `ttl_secs`.
pub fn issue(secret: &[u8], claim: &str, org: &str, ttl_secs: i64) -> Result<String, TokenError> {
    let now = unix_seconds_now();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), json!("local-user"));
    claims.insert(claim.into(), json!(org));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + ttl_secs));
    let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = mac(secret)?;
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{signing_input}.{signature}"))
}

/// Verifies a token and returns its claims as API Gateway passes them: every value a string.
pub fn verify(secret: &[u8], token: &str) -> Result<HashMap<String, String>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |part: &str| -> Result<Value, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
    };
    if decode(header)?.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(TokenError::WrongAlgorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let mut mac = mac(secret)?;
    mac.update(format!("{header}.{payload}").as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let Value::Object(claims) = decode(payload)? else {
        return Err(TokenError::Malformed);
    };
    // RFC 7519 4.1.4 and 4.1.5, as API Gateway's JWT authorizer applies them: an expiry is
    // required here, and a token is refused before its not-before time.
    let now = unix_seconds_now();
    match claims.get("exp").map(Value::as_i64) {
        None => return Err(TokenError::NoExpiry),
        Some(None) => return Err(TokenError::Malformed),
        Some(Some(exp)) if exp <= now => return Err(TokenError::Expired(exp)),
        Some(_) => {}
    }
    if let Some(nbf) = claims.get("nbf") {
        if nbf.as_i64().is_none_or(|nbf| nbf > now) {
            return Err(TokenError::NotYetValid);
        }
    }
    Ok(claims
        .into_iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (name, text)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_carry_the_org() {
        let token = issue(b"s3cret", "org_id", "acme", 60).unwrap();
        let claims = verify(b"s3cret", &token).unwrap();
        assert_eq!(claims["org_id"], "acme");
    }

    #[test]
    fn forged_expired_and_unsigned_tokens_are_refused() {
        let token = issue(b"s3cret", "org_id", "acme", 60).unwrap();
        assert_eq!(
            verify(b"other", &token).unwrap_err(),
            TokenError::BadSignature
        );
        let expired = issue(b"s3cret", "org_id", "acme", -1).unwrap();
        assert!(matches!(
            verify(b"s3cret", &expired).unwrap_err(),
            TokenError::Expired(_)
        ));
        let [_, payload, _]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        assert_eq!(
            verify(b"s3cret", &format!("{none_header}.{payload}.")).unwrap_err(),
            TokenError::WrongAlgorithm
        );
        // A payload swapped for another org's under the original signature.
        let other = URL_SAFE_NO_PAD.encode(r#"{"org_id":"other"}"#);
        let [header, _, signature]: [&str; 3] =
            token.split('.').collect::<Vec<_>>().try_into().unwrap();
        assert_eq!(
            verify(b"s3cret", &format!("{header}.{other}.{signature}")).unwrap_err(),
            TokenError::BadSignature
        );
        assert_eq!(verify(b"s3cret", "a.b").unwrap_err(), TokenError::Malformed);
    }

    /// Signs `claims` as a token under `secret`.
    fn signed(secret: &[u8], claims: Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = mac(secret).unwrap();
        mac.update(format!("{header}.{payload}").as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{payload}.{signature}")
    }

    #[test]
    fn a_token_must_expire_and_be_valid_already() {
        let now = unix_seconds_now();
        let forever = signed(b"k", json!({"org_id": "acme"}));
        assert_eq!(verify(b"k", &forever).unwrap_err(), TokenError::NoExpiry);
        let text_exp = signed(b"k", json!({"org_id": "acme", "exp": "never"}));
        assert_eq!(verify(b"k", &text_exp).unwrap_err(), TokenError::Malformed);
        let early = signed(
            b"k",
            json!({"org_id": "acme", "exp": now + 60, "nbf": now + 30}),
        );
        assert_eq!(verify(b"k", &early).unwrap_err(), TokenError::NotYetValid);
        let ready = signed(
            b"k",
            json!({"org_id": "acme", "exp": now + 60, "nbf": now - 1}),
        );
        assert_eq!(verify(b"k", &ready).unwrap()["org_id"], "acme");
    }
}
