//! Webhook endpoints: the stored model, what the API shows of it, and input validation.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::delivery::{CircuitGate, DisabledReason, EndpointHealth};
use super::event::EventType;
use super::id::EndpointId;
use super::target::TargetPolicy;
use super::validation::{FieldError, Fields};
use super::OrgId;

pub const MAX_DESCRIPTION_LEN: usize = 512;
/// Most custom headers an endpoint may have.
pub const MAX_CUSTOM_HEADERS: usize = 20;
/// Longest custom header value, in bytes (1 KiB).
pub const MAX_HEADER_VALUE_LEN: usize = 1024;
/// Header names a custom header may not take, because they would change what the Standard
/// Webhooks contract or HTTP itself says about the request: the hop-by-hop headers of
/// RFC 9110 section 7.6.1 and RFC 2616 section 13.5.1, and those we set (the W3C trace
/// context included). Names starting with `webhook-` are refused too.
pub const RESERVED_HEADERS: [&str; 18] = [
    "content-type",
    "content-length",
    "content-encoding",
    "expect",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "upgrade",
    "traceparent",
    "tracestate",
];

/// An endpoint's custom headers, sent with every delivery: lower-case names to values. They
/// are configuration, not secrets: every read of the endpoint shows them.
pub type CustomHeaders = BTreeMap<String, String>;

/// The grace period of a rotation when the request names none: 24 hours.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The longest grace period a rotation may ask for: 7 days (604,800 s).
pub const MAX_ROTATION_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most previous secrets kept at once; the oldest is dropped past it, even before it expires.
pub const MAX_PREVIOUS_SECRETS: usize = 5;

/// A secret replaced by a rotation, still signing deliveries until `expires_at` (Unix ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousSecret {
    /// Encrypted as the current secret is, bound to `{org_id, endpoint_id}`.
    pub ciphertext: Vec<u8>,
    pub expires_at: u64,
}

/// An endpoint as stored: the org it belongs to and its secret, encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub org_id: OrgId,
    pub url: String,
    pub events: Vec<EventType>,
    pub description: String,
    pub disabled: bool,
    /// Why it is disabled; `None` while enabled.
    pub disabled_reason: Option<DisabledReason>,
    /// RFC 3339, when it was disabled.
    pub disabled_at: Option<String>,
    pub health: EndpointHealth,
    pub created_at: String,
    pub updated_at: String,
    /// Sent with every delivery.
    pub headers: CustomHeaders,
    /// The `whsec_` secret encrypted by the secret cipher, bound to `{org_id, endpoint_id}`.
    pub secret_ciphertext: Vec<u8>,
    /// Secrets replaced by rotations whose grace period may not be over, newest first.
    pub previous_secrets: Vec<PreviousSecret>,
    /// RFC 3339, when the secret was last rotated.
    pub secret_rotated_at: Option<String>,
}

/// What a response shows of an endpoint. `secret` is set only in the creation response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView<'a> {
    pub id: &'a EndpointId,
    pub url: &'a str,
    pub events: &'a [EventType],
    pub description: &'a str,
    pub disabled: bool,
    pub disabled_reason: Option<DisabledReason>,
    pub disabled_at: Option<&'a str>,
    pub health: HealthView,
    pub headers: &'a CustomHeaders,
    pub secret_rotated_at: Option<&'a str>,
    pub created_at: &'a str,
    pub updated_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<&'a str>,
}

/// An endpoint's delivery health as the API shows it; times in RFC 3339.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    pub failure_streak: u32,
    pub failing_since: Option<String>,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    /// `closed` or `open`.
    pub circuit: &'static str,
    pub circuit_open_until: Option<String>,
}

impl HealthView {
    fn of(health: &EndpointHealth, now_millis: u64) -> Self {
        let at = |millis: Option<u64>| millis.map(crate::time::rfc3339_from_millis);
        let open = health.gate(now_millis) != CircuitGate::Closed;
        Self {
            failure_streak: health.failure_streak,
            failing_since: at(health.failing_since),
            last_success_at: at(health.last_success_at),
            last_failure_at: at(health.last_failure_at),
            circuit: if open { "open" } else { "closed" },
            circuit_open_until: at(health.circuit_open_until.filter(|_| open)),
        }
    }
}

impl Endpoint {
    pub fn view(&self) -> EndpointView<'_> {
        EndpointView {
            id: &self.id,
            url: &self.url,
            events: &self.events,
            description: &self.description,
            disabled: self.disabled,
            disabled_reason: self.disabled_reason.filter(|_| self.disabled),
            disabled_at: self.disabled_at.as_deref().filter(|_| self.disabled),
            health: HealthView::of(&self.health, crate::time::unix_millis_now()),
            headers: &self.headers,
            secret_rotated_at: self.secret_rotated_at.as_deref(),
            created_at: &self.created_at,
            updated_at: &self.updated_at,
            secret: None,
        }
    }

    pub fn subscribes_to(&self, event_type: EventType) -> bool {
        !self.disabled && self.events.contains(&event_type)
    }

    /// The ciphertexts of every secret that signs a delivery at `now_millis`: the current one
    /// first, then each previous one still in its grace period.
    pub fn signing_secrets(&self, now_millis: u64) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.secret_ciphertext.as_slice()).chain(
            self.previous_secrets
                .iter()
                .filter(move |p| p.expires_at > now_millis)
                .map(|p| p.ciphertext.as_slice()),
        )
    }

    /// The previous secrets still in their grace period, when some stored one's is over (they
    /// are then deleted, not just ignored); `None` when nothing has expired.
    pub fn unexpired_previous_secrets(&self, now_millis: u64) -> Option<Vec<PreviousSecret>> {
        let expired = self
            .previous_secrets
            .iter()
            .any(|p| p.expires_at <= now_millis);
        expired.then(|| {
            self.previous_secrets
                .iter()
                .filter(|p| p.expires_at > now_millis)
                .cloned()
                .collect()
        })
    }

    /// The previous secrets after a rotation at `now_millis` to a new secret: the current one
    /// joins them until `now + grace`, and none signs past that (a rotation's grace bounds
    /// every older secret too: a rotation with no grace, after a leak, leaves the new secret
    /// alone at once). Expired ones are dropped, at most [`MAX_PREVIOUS_SECRETS`] are kept,
    /// newest first.
    pub fn previous_secrets_after_rotation(
        &self,
        grace: Duration,
        now_millis: u64,
    ) -> Vec<PreviousSecret> {
        let until = now_millis + u64::try_from(grace.as_millis()).unwrap_or(u64::MAX / 2);
        std::iter::once(PreviousSecret {
            ciphertext: self.secret_ciphertext.clone(),
            expires_at: until,
        })
        .chain(self.previous_secrets.iter().map(|p| PreviousSecret {
            ciphertext: p.ciphertext.clone(),
            expires_at: p.expires_at.min(until),
        }))
        .filter(|p| p.expires_at > now_millis)
        .take(MAX_PREVIOUS_SECRETS)
        .collect()
    }
}

/// A validated `POST /webhooks/{id}/secret/rotate` body (it may be empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationRequest {
    /// How long the replaced secret keeps signing deliveries.
    pub grace: Duration,
}

impl RotationRequest {
    pub fn parse(body: &[u8]) -> Result<Self, Vec<FieldError>> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self {
                grace: DEFAULT_ROTATION_GRACE,
            });
        }
        let mut fields = Fields::parse(body, &["gracePeriodSeconds"])?;
        let max = MAX_ROTATION_GRACE.as_secs();
        let grace = fields
            .whole_number("gracePeriodSeconds", 0, max)
            .map_or(DEFAULT_ROTATION_GRACE, Duration::from_secs);
        fields.finish()?;
        Ok(Self { grace })
    }
}

/// A validated `POST /webhooks` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEndpoint {
    pub url: String,
    pub events: Vec<EventType>,
    pub description: String,
    pub headers: CustomHeaders,
}

/// A validated `PATCH /webhooks/{id}` body: only the fields to change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub events: Option<Vec<EventType>>,
    pub description: Option<String>,
    pub disabled: Option<bool>,
    /// Replaces every custom header; empty removes them all.
    pub headers: Option<CustomHeaders>,
}

impl EndpointChanges {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl NewEndpoint {
    pub fn parse(body: &[u8], policy: &TargetPolicy) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::parse(body, &["url", "events", "description", "headers"])?;
        let url = url_field(&mut fields, policy, true);
        let events = events_field(&mut fields, true);
        let description = fields.string("description", false, MAX_DESCRIPTION_LEN);
        let headers = headers_field(&mut fields);
        fields.finish()?;
        match (url, events) {
            (Some(url), Some(events)) => Ok(Self {
                url,
                events,
                description: description.unwrap_or_default(),
                headers: headers.unwrap_or_default(),
            }),
            // Unreachable in practice: a missing required field was recorded as an error above.
            _ => Err(vec![FieldError::new("body", "url and events are required")]),
        }
    }
}

impl EndpointChanges {
    pub fn parse(body: &[u8], policy: &TargetPolicy) -> Result<Self, Vec<FieldError>> {
        const NAMES: [&str; 5] = ["url", "events", "description", "disabled", "headers"];
        let mut fields = Fields::parse(body, &NAMES)?;
        let changes = Self {
            url: url_field(&mut fields, policy, false),
            events: events_field(&mut fields, false),
            description: fields.string("description", false, MAX_DESCRIPTION_LEN),
            disabled: fields.boolean("disabled"),
            headers: headers_field(&mut fields),
        };
        if NAMES.iter().all(|name| !fields.is_present(name)) {
            fields.error(
                "body",
                format!("must change at least one of {}", NAMES.join(", ")),
            );
        }
        fields.finish()?;
        Ok(changes)
    }
}

fn url_field(fields: &mut Fields, policy: &TargetPolicy, required: bool) -> Option<String> {
    // Length is checked by the URL rules, with their own message; read with a generous bound.
    let text = fields.string("url", required, usize::MAX)?;
    match policy.url_problems(&text) {
        Ok(url) => Some(url.to_string()),
        Err(problems) => {
            for problem in problems {
                fields.error("url", problem.to_string());
            }
            None
        }
    }
}

/// The `headers` object: at most [`MAX_CUSTOM_HEADERS`] names, each an HTTP token (RFC 9110
/// section 5.6.2) that is not reserved, to values of at most [`MAX_HEADER_VALUE_LEN`] bytes of
/// visible ASCII, spaces and tabs (no CR or LF, so no header can be smuggled in). Names are
/// case-insensitive: they are stored in lower case, and two that differ only in case are
/// refused.
fn headers_field(fields: &mut Fields) -> Option<CustomHeaders> {
    let object = fields.object("headers")?;
    let mut headers = CustomHeaders::new();
    let mut ok = true;
    if object.len() > MAX_CUSTOM_HEADERS {
        fields.error(
            "headers",
            format!("must have at most {MAX_CUSTOM_HEADERS} headers"),
        );
        ok = false;
    }
    for (name, value) in object {
        let lower = name.to_ascii_lowercase();
        let problem = if !is_token(&name) {
            Some(format!(
                "{name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
            ))
        } else if lower.starts_with("webhook-") || RESERVED_HEADERS.contains(&lower.as_str()) {
            Some(format!(
                "{name} is reserved: the delivery sets it, or it is hop-by-hop"
            ))
        } else {
            match (headers.entry(lower), value) {
                (Entry::Occupied(_), _) => Some(format!(
                    "{name} is given more than once (header names ignore case)"
                )),
                (_, Value::String(value)) if value.len() > MAX_HEADER_VALUE_LEN => Some(format!(
                    "the value of {name} must be at most {MAX_HEADER_VALUE_LEN} bytes"
                )),
                (_, Value::String(value))
                    if !value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) =>
                {
                    Some(format!("the value of {name} must be visible ASCII characters, spaces or tabs (no CR, LF or other control characters)"))
                }
                (Entry::Vacant(slot), Value::String(value)) => {
                    slot.insert(value);
                    None
                }
                _ => Some(format!("the value of {name} must be a string")),
            }
        };
        if let Some(problem) = problem {
            fields.error("headers", problem);
            ok = false;
        }
    }
    ok.then_some(headers)
}

/// An HTTP token (RFC 9110 section 5.6.2): one or more tchar.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn events_field(fields: &mut Fields, required: bool) -> Option<Vec<EventType>> {
    let names = fields.string_array("events", required)?;
    if names.is_empty() {
        fields.error("events", "must list at least one event type");
        return None;
    }
    let mut events = Vec::with_capacity(names.len());
    let mut ok = true;
    for name in &names {
        match name.parse::<EventType>() {
            Ok(t) if events.contains(&t) => {
                fields.error("events", format!("lists {name} more than once"));
                ok = false;
            }
            Ok(t) if EventType::SUBSCRIBABLE.contains(&t) => events.push(t),
            _ => {
                let known: Vec<_> = EventType::SUBSCRIBABLE.iter().map(|t| t.as_str()).collect();
                fields.error(
                    "events",
                    format!(
                        "{name} is not a known event type (known: {})",
                        known.join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(events)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::domain::target::MAX_URL_LEN;

    const STRICT: TargetPolicy = TargetPolicy::STRICT;

    #[test]
    fn every_problem_of_a_url_is_reported_at_once() {
        let body = br#"{"url":"http://user:pw@127.0.0.1/in","events":["booking.created"]}"#;
        let errors = NewEndpoint::parse(body, &STRICT).unwrap_err();
        let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "must use https",
                "must not contain a user name or password",
                "must not point to a private, loopback, link-local or otherwise non-public address"
            ]
        );
        assert!(errors.iter().all(|e| e.field == "url"));
    }

    #[test]
    fn a_url_too_long_once_normalised_is_refused() {
        // 2,042 characters as sent, about 12,000 once percent-encoded: it would be stored,
        // then refused at every delivery by the same rule.
        let url = format!("https://example.com/{}", "é".repeat(2042 - 20));
        assert_eq!(url.chars().count(), 2042);
        let body = json!({ "url": url, "events": ["booking.created"] }).to_string();
        let errors = NewEndpoint::parse(body.as_bytes(), &STRICT).unwrap_err();
        assert_eq!(fields_of(&errors), ["url"]);
        assert!(errors[0].message.contains("normalisation"), "{errors:?}");
        // Just under the limit once encoded: accepted, and stored within it.
        let url = format!("https://example.com/{}", "é".repeat((MAX_URL_LEN - 20) / 6));
        let body = json!({ "url": url, "events": ["booking.created"] }).to_string();
        let stored = NewEndpoint::parse(body.as_bytes(), &STRICT).unwrap().url;
        assert!(stored.len() <= MAX_URL_LEN);
    }

    /// Pieces that normalisation changes: non-ASCII, dots, case, percent signs, ports, IPv6.
    fn url_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("é".to_owned()),
            Just("/../".to_owned()),
            Just("/./".to_owned()),
            Just("%41".to_owned()),
            Just("%zz".to_owned()),
            Just("?q= a".to_owned()),
            Just("#frag".to_owned()),
            Just(":443".to_owned()),
            Just("\\".to_owned()),
            Just("\t".to_owned()),
            "[a-zA-Z0-9]{0,8}",
            any::<String>(),
        ];
        let scheme = prop_oneof![Just("https://"), Just("HTTPS://"), Just("http://")];
        let host = prop_oneof![
            Just("Example.COM"),
            Just("bücher.example"),
            Just("[2606:4700::1111]"),
            Just("1.1.1.1"),
            Just("hooks.example.com."),
        ];
        (
            scheme,
            host,
            proptest::collection::vec(piece, 0..40),
            0usize..400,
        )
            .prop_map(|(scheme, host, pieces, pad)| {
                format!("{scheme}{host}/{}{}", pieces.concat(), "é".repeat(pad))
            })
    }

    proptest! {
        /// What the API stores passes the same validation again, unchanged.
        #[test]
        fn validation_is_idempotent(
            url in url_like(),
            description in any::<String>(),
            relaxed in any::<bool>(),
        ) {
            let policy = if relaxed { TargetPolicy::LOCAL_DEVELOPMENT } else { STRICT };
            let body = json!({ "url": url, "events": ["booking.created"], "description": description });
            if let Ok(new) = NewEndpoint::parse(body.to_string().as_bytes(), &policy) {
                prop_assert!(new.url.len() <= MAX_URL_LEN);
                let again = json!({ "url": new.url, "events": new.events, "description": new.description });
                let again = NewEndpoint::parse(again.to_string().as_bytes(), &policy);
                prop_assert_eq!(again.as_ref(), Ok(&new));
                let patch = json!({ "url": new.url, "description": new.description });
                let patch = EndpointChanges::parse(patch.to_string().as_bytes(), &policy).unwrap();
                prop_assert_eq!(patch.url.as_ref(), Some(&new.url));
            }
        }
    }

    fn fields_of(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_valid_body_is_accepted() {
        let body = br#"{"url":"https://hooks.example.com/in","events":["booking.created"],"description":"CRM"}"#;
        let new = NewEndpoint::parse(body, &STRICT).unwrap();
        assert_eq!(new.events, vec![EventType::BookingCreated]);
        assert_eq!(new.description, "CRM");
    }

    #[test]
    fn every_problem_is_listed() {
        let body = br#"{"url":"http://10.0.0.1","events":["booking.created","booking.created","nope"],"description":5,"org_id":"x"}"#;
        let errors = NewEndpoint::parse(body, &STRICT).unwrap_err();
        assert_eq!(
            fields_of(&errors),
            vec!["org_id", "url", "url", "events", "events", "description"],
            "http and a private address: two problems of the url"
        );
    }

    #[test]
    fn events_must_be_a_non_empty_array_of_known_types() {
        for events in [
            r#"[]"#,
            r#""booking.created""#,
            r#"[1]"#,
            r#"["booking.deleted"]"#,
        ] {
            let body = format!(r#"{{"url":"https://a.example.com","events":{events}}}"#);
            let errors = NewEndpoint::parse(body.as_bytes(), &STRICT).unwrap_err();
            assert_eq!(fields_of(&errors), vec!["events"], "{events}");
        }
    }

    #[test]
    fn patch_needs_at_least_one_field_and_validates_each() {
        assert!(EndpointChanges::parse(b"{}", &STRICT).is_err());
        let changes = EndpointChanges::parse(br#"{"disabled":true}"#, &STRICT).unwrap();
        assert_eq!(changes.disabled, Some(true));
        let errors =
            EndpointChanges::parse(br#"{"disabled":"yes","url":"https://127.0.0.1"}"#, &STRICT)
                .unwrap_err();
        assert_eq!(fields_of(&errors), vec!["url", "disabled"]);
        let long = format!(
            r#"{{"description":"{}"}}"#,
            "d".repeat(MAX_DESCRIPTION_LEN + 1)
        );
        assert_eq!(
            fields_of(&EndpointChanges::parse(long.as_bytes(), &STRICT).unwrap_err()),
            vec!["description"]
        );
    }
}
