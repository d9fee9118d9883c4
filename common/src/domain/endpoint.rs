//! Webhook endpoints: the stored model, what the API shows of it, and input validation.

use serde::Serialize;

use super::delivery::{CircuitGate, DisabledReason, EndpointHealth};
use super::event::EventType;
use super::id::EndpointId;
use super::target::TargetPolicy;
use super::validation::{FieldError, Fields};
use super::OrgId;

pub const MAX_DESCRIPTION_LEN: usize = 512;

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
    /// The `whsec_` secret encrypted by the secret cipher, bound to `{org_id, endpoint_id}`.
    pub secret_ciphertext: Vec<u8>,
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
            created_at: &self.created_at,
            updated_at: &self.updated_at,
            secret: None,
        }
    }

    pub fn subscribes_to(&self, event_type: EventType) -> bool {
        !self.disabled && self.events.contains(&event_type)
    }
}

/// A validated `POST /webhooks` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEndpoint {
    pub url: String,
    pub events: Vec<EventType>,
    pub description: String,
}

/// A validated `PATCH /webhooks/{id}` body: only the fields to change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub events: Option<Vec<EventType>>,
    pub description: Option<String>,
    pub disabled: Option<bool>,
}

impl EndpointChanges {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl NewEndpoint {
    pub fn parse(body: &[u8], policy: &TargetPolicy) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::parse(body, &["url", "events", "description"])?;
        let url = url_field(&mut fields, policy, true);
        let events = events_field(&mut fields, true);
        let description = fields.string("description", false, MAX_DESCRIPTION_LEN);
        fields.finish()?;
        match (url, events) {
            (Some(url), Some(events)) => Ok(Self {
                url,
                events,
                description: description.unwrap_or_default(),
            }),
            // Unreachable in practice: a missing required field was recorded as an error above.
            _ => Err(vec![FieldError::new("body", "url and events are required")]),
        }
    }
}

impl EndpointChanges {
    pub fn parse(body: &[u8], policy: &TargetPolicy) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::parse(body, &["url", "events", "description", "disabled"])?;
        let changes = Self {
            url: url_field(&mut fields, policy, false),
            events: events_field(&mut fields, false),
            description: fields.string("description", false, MAX_DESCRIPTION_LEN),
            disabled: fields.boolean("disabled"),
        };
        let nothing_given = ["url", "events", "description", "disabled"]
            .iter()
            .all(|name| !fields.is_present(name));
        if nothing_given {
            fields.error(
                "body",
                "must change at least one of url, events, description, disabled",
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
