//! The event catalogue and the message that carries one event to one endpoint.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::delivery::Trigger;
use super::id::{EndpointId, EventId, MessageId, RandomError};
use super::trace::TraceContext;
use super::OrgId;
use crate::time::now_rfc3339;

/// Every event type a subscriber can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "booking.created")]
    BookingCreated,
    #[serde(rename = "booking.updated")]
    BookingUpdated,
    #[serde(rename = "booking.cancelled")]
    BookingCancelled,
    /// Sent by `POST /webhooks/{id}/test` to that endpoint only; nobody subscribes to it.
    #[serde(rename = "webhook.test")]
    WebhookTest,
    /// Operational: one of the org's endpoints was disabled (410, failing too long, by hand).
    #[serde(rename = "endpoint.disabled")]
    EndpointDisabled,
    /// Operational: an endpoint's circuit opened after consecutive failures.
    #[serde(rename = "endpoint.circuit.opened")]
    EndpointCircuitOpened,
    /// Operational: a message is dead after its last attempt.
    #[serde(rename = "message.failed")]
    MessageFailed,
}

impl EventType {
    /// The catalogue: every type a message can carry.
    pub const ALL: [EventType; 7] = [
        EventType::BookingCreated,
        EventType::BookingUpdated,
        EventType::BookingCancelled,
        EventType::WebhookTest,
        EventType::EndpointDisabled,
        EventType::EndpointCircuitOpened,
        EventType::MessageFailed,
    ];
    /// The types an endpoint can subscribe to.
    pub const SUBSCRIBABLE: [EventType; 6] = [
        EventType::BookingCreated,
        EventType::BookingUpdated,
        EventType::BookingCancelled,
        EventType::EndpointDisabled,
        EventType::EndpointCircuitOpened,
        EventType::MessageFailed,
    ];
    /// What the product publishes about bookings.
    pub const BOOKING_EVENTS: [EventType; 3] = [
        EventType::BookingCreated,
        EventType::BookingUpdated,
        EventType::BookingCancelled,
    ];
    /// What the platform publishes about an org's own endpoints and messages. Never sent to
    /// the endpoint it is about (see [`Event::subject_endpoint`]).
    pub const OPERATIONAL: [EventType; 3] = [
        EventType::EndpointDisabled,
        EventType::EndpointCircuitOpened,
        EventType::MessageFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::BookingCreated => "booking.created",
            EventType::BookingUpdated => "booking.updated",
            EventType::BookingCancelled => "booking.cancelled",
            EventType::WebhookTest => "webhook.test",
            EventType::EndpointDisabled => "endpoint.disabled",
            EventType::EndpointCircuitOpened => "endpoint.circuit.opened",
            EventType::MessageFailed => "message.failed",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown event type")]
pub struct UnknownEventType;

impl FromStr for EventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(UnknownEventType)
    }
}

/// One occurrence of an event type, before it is fanned out to the subscribed endpoints. Kept in
/// the outbox until every message for it is enqueued.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub timestamp: String,
    pub data: serde_json::Value,
    /// The trace of the request that produced it, carried to every delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

impl Event {
    pub fn new(event_type: EventType, data: serde_json::Value) -> Result<Self, RandomError> {
        Ok(Self {
            id: EventId::generate()?,
            event_type,
            timestamp: now_rfc3339(),
            data,
            trace: None,
        })
    }

    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }

    /// The endpoint an operational event is about (its `data.endpointId`), which never gets
    /// it: an endpoint that is failing would not take the news, and would only fail again.
    pub fn subject_endpoint(&self) -> Option<EndpointId> {
        if !EventType::OPERATIONAL.contains(&self.event_type) {
            return None;
        }
        self.data["endpointId"].as_str().and_then(EndpointId::parse)
    }

    /// The message that carries this event to `endpoint_id`; the same on every publish.
    pub fn message_for(&self, org: &OrgId, endpoint_id: EndpointId) -> DeliveryMessage {
        DeliveryMessage {
            id: MessageId::for_delivery(&self.id, &endpoint_id),
            event_id: Some(self.id.clone()),
            attempt: 1,
            schedule_start: 1,
            trigger: Trigger::Scheduled,
            due_at: None,
            org_id: org.as_str().to_owned(),
            endpoint_id,
            event_type: self.event_type,
            timestamp: self.timestamp.clone(),
            data: self.data.clone(),
            trace: self.trace.clone(),
        }
    }
}

/// An event waiting in the outbox, as the relay sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingEvent {
    pub org: OrgId,
    pub event: Event,
    /// Relay runs that could not publish it so far; each sets it aside for longer.
    pub relay_failures: u32,
}

/// One event for one endpoint: the body of a delivery queue message. Everything needed to
/// deliver (or replay) it, and nothing secret.
/// Unknown fields are ignored: during a deploy an older consumer may read a message written by
/// a newer producer, and must not dead-letter it for a field it does not know yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryMessage {
    pub id: MessageId,
    /// The event it carries (absent in messages written before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
    /// The attempt this queue message is for, 1-based. It travels in the body, not in the
    /// queue's receive count, so a crash or a throttle burns no attempt.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// The attempt number its current schedule began at: the schedule's position is
    /// `attempt - schedule_start + 1`. A replay or a recovery starts a fresh schedule and goes
    /// on numbering, so attempt records never collide.
    #[serde(default = "first_attempt", skip_serializing_if = "is_first")]
    pub schedule_start: u32,
    /// `manual`: a one-off attempt asked for through the API (resend), outside the schedule.
    #[serde(default, skip_serializing_if = "Trigger::is_scheduled")]
    pub trigger: Trigger,
    /// RFC 3339: not attempted before then. A retry due later than a queue delay can reach
    /// (SQS: 15 min) is re-sent, hop by hop, until it is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    pub org_id: String,
    pub endpoint_id: EndpointId,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub timestamp: String,
    pub data: serde_json::Value,
    /// The producer's trace context (absent in messages written before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

/// What the subscriber receives, in this field order.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    event_type: EventType,
    timestamp: &'a str,
    data: &'a serde_json::Value,
}

fn first_attempt() -> u32 {
    1
}

fn is_first(n: &u32) -> bool {
    *n == 1
}

impl DeliveryMessage {
    /// When the attempt is due, in Unix milliseconds; `None` (due now) when unset or unreadable.
    pub fn due_at_millis(&self) -> Option<u64> {
        crate::time::millis_from_rfc3339(self.due_at.as_deref()?)
    }

    /// This message for its attempt `attempt`, due at `due_at_millis`.
    pub fn for_attempt(&self, attempt: u32, due_at_millis: u64) -> Self {
        Self {
            attempt,
            due_at: Some(crate::time::rfc3339_from_millis(due_at_millis)),
            ..self.clone()
        }
    }

    /// Where its attempt is in its schedule, 1-based.
    pub fn schedule_position(&self) -> u32 {
        self.attempt.saturating_sub(self.schedule_start) + 1
    }

    /// This message at the start of a fresh schedule after `attempts_made` attempts (what a
    /// dead letter holds, so that a replay starts over, keeps its `webhook-id`, and numbers its
    /// attempts on).
    pub fn restarted(&self, attempts_made: u32) -> Self {
        let next = attempts_made + 1;
        Self {
            attempt: next,
            schedule_start: next,
            trigger: Trigger::Scheduled,
            due_at: None,
            ..self.clone()
        }
    }

    /// The JSON body POSTed to the subscriber: `{"type","timestamp","data"}`.
    pub fn payload(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(&Payload {
            event_type: self.event_type,
            timestamp: &self.timestamp,
            data: &self.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_round_trips() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert!("booking.deleted".parse::<EventType>().is_err());
    }

    #[test]
    fn payload_has_type_timestamp_and_data_only() {
        let message = DeliveryMessage {
            id: MessageId::parse("msg_01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap(),
            event_id: None,
            attempt: 3,
            schedule_start: 1,
            trigger: Trigger::Scheduled,
            due_at: Some("2026-01-01T00:05:00.000Z".into()),
            org_id: "org_1".into(),
            endpoint_id: EndpointId::parse("ep_01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap(),
            event_type: EventType::BookingCreated,
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            data: serde_json::json!({"booking": {"id": "bk_1"}}),
            trace: None,
        };
        assert_eq!(
            message.payload().unwrap(),
            r#"{"type":"booking.created","timestamp":"2026-01-01T00:00:00.000Z","data":{"booking":{"id":"bk_1"}}}"#
        );
        let body = serde_json::to_string(&message).unwrap();
        assert_eq!(
            serde_json::from_str::<DeliveryMessage>(&body).unwrap(),
            message
        );
        assert_eq!(message.due_at_millis(), Some(1_767_225_900_000));
        let restarted = message.restarted(3);
        assert_eq!((restarted.attempt, restarted.schedule_position()), (4, 1));
        assert_eq!(restarted.due_at, None);
        assert_eq!(message.schedule_position(), 3);
    }

    #[test]
    fn a_message_from_before_attempts_travelled_in_the_body_is_its_first_attempt() {
        let body = r#"{"id":"msg_01ARZ3NDEKTSV4RRFFQ69G5FAV","orgId":"org_1","endpointId":"ep_01ARZ3NDEKTSV4RRFFQ69G5FAV","type":"booking.created","timestamp":"2026-01-01T00:00:00.000Z","data":{}}"#;
        let message: DeliveryMessage = serde_json::from_str(body).unwrap();
        assert_eq!((message.attempt, message.due_at_millis()), (1, None));
    }
}
