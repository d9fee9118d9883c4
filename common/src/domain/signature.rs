//! Standard Webhooks signatures: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::secret::{SecretFormatError, WebhookSecret};

/// How far a `webhook-timestamp` may be from the receiver's clock, either way: 5 minutes, the
/// tolerance of the Standard Webhooks reference libraries (it bounds replays of a captured
/// request).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

fn signed_content_mac(
    secret: &WebhookSecret,
    message_id: &str,
    timestamp: i64,
    body: &str,
) -> Result<Hmac<Sha256>, SecretFormatError> {
    let key = secret.key()?;
    // HMAC accepts a key of any length, so this cannot fail; map it anyway instead of panicking.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SecretFormatError::BadLength)?;
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Ok(mac)
}

/// The `webhook-signature` header value for one secret.
pub fn sign(
    secret: &WebhookSecret,
    message_id: &str,
    timestamp: i64,
    body: &str,
) -> Result<String, SecretFormatError> {
    let mac = signed_content_mac(secret, message_id, timestamp, body)?;
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The `webhook-signature` header value for several secrets (a rotation's grace period): one
/// `v1,` signature per secret, space-separated, in the order given. A Standard Webhooks
/// receiver accepts the request when any of them matches its secret.
pub fn sign_with_each(
    secrets: &[WebhookSecret],
    message_id: &str,
    timestamp: i64,
    body: &str,
) -> Result<String, SecretFormatError> {
    let signatures = secrets
        .iter()
        .map(|secret| sign(secret, message_id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(signatures.join(" "))
}

/// Why a request does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the webhook-timestamp header is missing or not a whole number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is {0} s from this machine's clock, more than the {TIMESTAMP_TOLERANCE_SECS} s allowed")]
    TimestampOutOfTolerance(i64),
    #[error("no v1 signature in webhook-signature matches this secret")]
    NoMatchingSignature,
    #[error(transparent)]
    Secret(#[from] SecretFormatError),
}

/// Verifies a received request as a Standard Webhooks receiver does: the timestamp within
/// [`TIMESTAMP_TOLERANCE_SECS`] of `now`, and one of the space-separated `v1,<base64>`
/// signatures equal to ours, compared in constant time (other versions are skipped).
pub fn verify(
    secret: &WebhookSecret,
    message_id: &str,
    timestamp: &str,
    signatures: &str,
    body: &str,
    now: i64,
) -> Result<(), VerifyError> {
    let timestamp: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    let skew = now.saturating_sub(timestamp);
    if skew.abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(VerifyError::TimestampOutOfTolerance(skew));
    }
    let mac = signed_content_mac(secret, message_id, timestamp, body)?;
    let matches = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
    if matches {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_vector() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn reference_rust_library_vector() {
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let signature = sign(
            &secret,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn verify_takes_any_listed_v1_signature_within_the_tolerance() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let (id, ts, body) = (
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(verify(&secret, id, "1614265330", good, body, ts), Ok(()));
        let listed = format!("v2,abc v1,AAAA {good}");
        assert_eq!(
            verify(&secret, id, "1614265330", &listed, body, ts + 300),
            Ok(())
        );
        assert_eq!(
            verify(&secret, id, "1614265330", good, body, ts + 301),
            Err(VerifyError::TimestampOutOfTolerance(301))
        );
        assert_eq!(
            verify(&secret, id, "1614265330", good, body, ts - 301),
            Err(VerifyError::TimestampOutOfTolerance(-301))
        );
        assert_eq!(
            verify(&secret, id, "1614265330", good, "{}", ts),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            verify(&secret, id, "soon", good, body, ts),
            Err(VerifyError::BadTimestamp)
        );
        let other = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            verify(&other, id, "1614265330", good, body, ts),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn any_change_changes_the_signature() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let base = sign(&secret, "msg_1", 1, "{}").unwrap();
        assert_ne!(base, sign(&secret, "msg_2", 1, "{}").unwrap());
        assert_ne!(base, sign(&secret, "msg_1", 2, "{}").unwrap());
        assert_ne!(base, sign(&secret, "msg_1", 1, "{ }").unwrap());
    }
}
