//! What the delivery engine knows about a message on its way: the received queue record, the
//! outcome of each attempt, the state a message is in, an endpoint's health, and the dead
//! letter that ends a message's road. No queue or store type here; the ports carry these.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::DeliveryMessage;
use super::id::{EndpointId, EventId, MessageId};
use super::queue_body::{sqs_accepts, QueueBody};
use super::trace::TraceContext;
use super::OrgId;

/// Receives of one queue message after which the queue gives up on it and moves it, as it is,
/// to the dead-letter queue: the delivery queue's redrive `maxReceiveCount` (template.yaml).
/// Only a message that crashes or outlasts the worker is received again: every other one is
/// settled after one attempt, and a retry is a new queue message.
pub const MAX_RECEIVES: u32 = 5;

/// One received queue message.
#[derive(Clone, Debug)]
pub struct QueueRecord {
    /// The queue's own id for the message (what `batchItemFailures` names).
    pub queue_message_id: String,
    pub receipt_handle: String,
    /// How often this very queue message was received (SQS `ApproximateReceiveCount`). It is
    /// not the attempt number, which travels in the body: a retry is a new queue message.
    pub receive_count: u32,
    pub body: String,
}

/// Why a message was dead-lettered (SQS message attribute [`DeadLetter::REASON`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeadLetterReason {
    /// Every attempt of the schedule failed.
    RetriesExhausted,
    /// The URL or the address it resolves to is refused by the target rules (SSRF defence);
    /// retrying cannot change that.
    RefusedTarget,
    /// The queue message is not a delivery message, or names no valid org.
    Unreadable,
    /// The endpoint's secret no longer decrypts; retrying will not help.
    SecretUnusable,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetriesExhausted => "retriesExhausted",
            Self::RefusedTarget => "refusedTarget",
            Self::Unreadable => "unreadable",
            Self::SecretUnusable => "secretUnusable",
        }
    }
}

/// A message parked in the dead-letter queue. The body is a delivery message, replayable as it
/// is (SQS's own DLQ redrive, `StartMessageMoveTask`): its schedule starts afresh and it keeps
/// its `webhook-id`. Why it stopped travels beside the body, as SQS message attributes the
/// worker ignores, so a message SQS itself redrives after too many receives (the body as it
/// was, without these attributes) has the same format.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub body: QueueBody,
    pub reason: DeadLetterReason,
    /// Attempts made (scheduled ones; a `circuitOpen` attempt counts).
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub dead_lettered_at: String,
}

impl DeadLetter {
    pub const REASON: &'static str = "DeadLetterReason";
    pub const ATTEMPTS: &'static str = "Attempts";
    pub const LAST_STATUS: &'static str = "LastStatus";
    pub const LAST_ERROR: &'static str = "LastError";
    pub const DEAD_LETTERED_AT: &'static str = "DeadLetteredAt";
    /// SQS takes attribute values up to the message size; a bounded error keeps them readable.
    pub const MAX_ERROR_LEN: usize = 1024;

    /// The attributes beside the body: (name, value, whether it is a number).
    pub fn attributes(&self) -> Vec<(&'static str, String, bool)> {
        let mut attributes = vec![
            (Self::REASON, self.reason.as_str().to_owned(), false),
            (Self::ATTEMPTS, self.attempts.to_string(), true),
            (Self::DEAD_LETTERED_AT, self.dead_lettered_at.clone(), false),
        ];
        if let Some(status) = self.last_status {
            attributes.push((Self::LAST_STATUS, status.to_string(), true));
        }
        if let Some(error) = self.last_error.as_deref().filter(|e| !e.is_empty()) {
            // Attribute values obey the body's character rule, with no escaping.
            let safe: String = error
                .chars()
                .map(|c| {
                    if sqs_accepts(c) {
                        c
                    } else {
                        char::REPLACEMENT_CHARACTER
                    }
                })
                .collect();
            attributes.push((
                Self::LAST_ERROR,
                truncate(&safe, Self::MAX_ERROR_LEN),
                false,
            ));
        }
        attributes
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What one attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// A 2xx.
    Delivered,
    /// Any other status, a timeout or a connection error.
    Failed,
    /// 410 Gone: the endpoint is disabled, the message ends.
    Gone,
    /// The target rules refused the URL or its address; nothing was sent.
    Refused,
    /// The endpoint's circuit was open: nothing was sent, the attempt still counts.
    CircuitOpen,
    /// The endpoint was deleted or disabled: nothing was sent, the message ends.
    Dropped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Gone => "gone",
            Self::Refused => "refused",
            Self::CircuitOpen => "circuitOpen",
            Self::Dropped => "dropped",
        }
    }
}

/// What kind of failure an attempt met, for filtering and alarms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorClass {
    /// The subscriber answered with a status other than 2xx.
    HttpStatus,
    Timeout,
    /// No connection (refused, reset, TLS, DNS).
    Connection,
    /// Any other failure of the request.
    Request,
    RefusedTarget,
    CircuitOpen,
    EndpointDeleted,
    EndpointDisabled,
    SecretUnusable,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpStatus => "httpStatus",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Request => "request",
            Self::RefusedTarget => "refusedTarget",
            Self::CircuitOpen => "circuitOpen",
            Self::EndpointDeleted => "endpointDeleted",
            Self::EndpointDisabled => "endpointDisabled",
            Self::SecretUnusable => "secretUnusable",
        }
    }
}

macro_rules! parse_from_str {
    ($type:ty, [$($variant:expr),*]) => {
        impl std::str::FromStr for $type {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                [$($variant),*]
                    .into_iter()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| format!("unknown {}: {text}", stringify!($type)))
            }
        }
    };
}

parse_from_str!(
    Outcome,
    [
        Outcome::Delivered,
        Outcome::Failed,
        Outcome::Gone,
        Outcome::Refused,
        Outcome::CircuitOpen,
        Outcome::Dropped
    ]
);
parse_from_str!(
    ErrorClass,
    [
        ErrorClass::HttpStatus,
        ErrorClass::Timeout,
        ErrorClass::Connection,
        ErrorClass::Request,
        ErrorClass::RefusedTarget,
        ErrorClass::CircuitOpen,
        ErrorClass::EndpointDeleted,
        ErrorClass::EndpointDisabled,
        ErrorClass::SecretUnusable
    ]
);
parse_from_str!(
    MessageState,
    [
        MessageState::Pending,
        MessageState::Delivered,
        MessageState::Failed,
        MessageState::Dead,
        MessageState::Dropped
    ]
);

/// What made an attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Trigger {
    /// Its schedule.
    #[default]
    Scheduled,
    /// A person, through `POST /webhooks/{id}/messages/{msgId}/resend`: one attempt, outside
    /// the schedule, which it neither restarts nor advances.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Manual => "manual",
        }
    }

    pub fn is_scheduled(&self) -> bool {
        *self == Self::Scheduled
    }
}

parse_from_str!(Trigger, [Trigger::Scheduled, Trigger::Manual]);

/// Where a message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MessageState {
    /// Attempts are left; the next one is at `next_attempt_at`.
    Pending,
    Delivered,
    /// Ended undelivered at the subscriber's word: it answered 410 Gone.
    Failed,
    /// Ended in the dead-letter queue (attempts exhausted, refused target, unusable secret),
    /// from where it can be replayed.
    Dead,
    /// Its endpoint was deleted or disabled before it could be delivered.
    Dropped,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Dropped => "dropped",
        }
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most bytes of a subscriber's response body an attempt record keeps.
pub const MAX_RECORDED_RESPONSE: usize = 1024;

/// One attempt, as the delivery log keeps it (under the org, expiring with the retention).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    pub org: OrgId,
    pub endpoint_id: EndpointId,
    pub message_id: MessageId,
    /// 1-based, the message's own count (a `circuitOpen` attempt counts); 0 for a manual one.
    pub attempt: u32,
    /// RFC 3339, when the attempt started.
    pub at: String,
    pub outcome: Outcome,
    pub status_code: Option<u16>,
    pub error_class: Option<ErrorClass>,
    /// One line, for people.
    pub error: Option<String>,
    /// Milliseconds the POST took (0 when nothing was sent).
    pub latency_ms: u64,
    /// The first [`MAX_RECORDED_RESPONSE`] bytes of the response body (lossy UTF-8).
    pub response_body: Option<String>,
    pub trigger: Trigger,
    /// Unix seconds after which the store may delete it (DynamoDB TTL).
    pub expires_at: i64,
}

impl AttemptRecord {
    /// Where it sorts among its endpoint's attempts: by message, then by its place in the
    /// message (scheduled ones by number, manual ones after them by time).
    pub fn sort_key(&self) -> String {
        match self.trigger {
            Trigger::Scheduled => format!("{}#{:05}", self.message_id, self.attempt),
            Trigger::Manual => {
                let millis = crate::time::parse_rfc3339(&self.at)
                    .map(|at| at.unix_timestamp_nanos() / 1_000_000)
                    .unwrap_or_default();
                format!("{}#m{millis:013}", self.message_id)
            }
        }
    }
}

/// A message and where it stands, rewritten after each of its attempts.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageRecord {
    pub org: OrgId,
    pub endpoint_id: EndpointId,
    pub message_id: MessageId,
    pub event_id: Option<EventId>,
    pub event_type: String,
    /// The event's time, RFC 3339.
    pub timestamp: String,
    /// The event's `data`, so the message can be shown and sent again.
    pub data: serde_json::Value,
    pub state: MessageState,
    /// Attempts made so far.
    pub attempts: u32,
    /// RFC 3339, while `pending`.
    pub next_attempt_at: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
    /// Unix seconds after which the store may delete it (DynamoDB TTL).
    pub expires_at: i64,
    /// The producer's trace, so a resent or recovered message stays in it.
    pub trace: Option<TraceContext>,
}

impl MessageRecord {
    /// The message again, for a fresh schedule after its attempts so far (same `webhook-id`);
    /// `None` when its stored event type is no longer in the catalogue.
    pub fn restarted_message(&self) -> Option<DeliveryMessage> {
        let next = self.attempts + 1;
        Some(DeliveryMessage {
            id: self.message_id.clone(),
            event_id: self.event_id.clone(),
            attempt: next,
            schedule_start: next,
            trigger: Trigger::Scheduled,
            due_at: None,
            org_id: self.org.as_str().to_owned(),
            endpoint_id: self.endpoint_id.clone(),
            event_type: self.event_type.parse().ok()?,
            timestamp: self.timestamp.clone(),
            data: self.data.clone(),
            trace: self.trace.clone(),
        })
    }
}

/// What `POST /webhooks/{id}/recover` asks for: an endpoint's `failed` and `dead` messages whose
/// event time is in `[since, until)`, in message id (event time) order, after `after`. Pages
/// left when a run's time is up travel as a queue message of their own ([`RecoverTask`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverRange {
    pub org_id: String,
    pub endpoint_id: EndpointId,
    /// Unix ms, inclusive.
    pub since_millis: u64,
    /// Unix ms, exclusive.
    pub until_millis: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<MessageId>,
}

/// The delivery queue message that carries a recovery on where its last run stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverTask {
    pub recover: RecoverRange,
}

/// An attempt and the message state it led to: written together.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub attempt: AttemptRecord,
    /// The message's new state; `None` for a manual attempt, which leaves it to the schedule
    /// (a success is noted on its own, [`crate::ports::DeliveryLog::note_manual_delivery`]).
    pub message: Option<MessageRecord>,
}

/// Why an endpoint is disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DisabledReason {
    /// No success for the configured time while it kept failing.
    Failing,
    /// It answered 410 Gone.
    Gone,
    /// Its owner disabled it.
    Manual,
}

impl DisabledReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failing => "failing",
            Self::Gone => "gone",
            Self::Manual => "manual",
        }
    }
}

parse_from_str!(
    DisabledReason,
    [
        DisabledReason::Failing,
        DisabledReason::Gone,
        DisabledReason::Manual
    ]
);

/// An endpoint's delivery health, kept on the endpoint item. Times in Unix milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointHealth {
    /// Failed POSTs since the last success.
    pub failure_streak: u32,
    /// When the current streak began.
    pub failing_since: Option<u64>,
    pub last_success_at: Option<u64>,
    pub last_failure_at: Option<u64>,
    /// While set and in the future, the circuit is open: no POST is made.
    pub circuit_open_until: Option<u64>,
    /// Times the circuit opened during this streak (each doubles the next opening).
    pub circuit_opens: u32,
    /// A probe is under way until then; nobody else probes meanwhile.
    pub probe_until: Option<u64>,
}

/// What the circuit lets an attempt do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitGate {
    /// Closed: POST.
    Closed,
    /// Open: no POST.
    Open,
    /// Open, but its probe time has come: one caller may take the probe and POST.
    ProbeDue,
}

impl EndpointHealth {
    pub fn gate(&self, now_millis: u64) -> CircuitGate {
        match self.circuit_open_until {
            None => CircuitGate::Closed,
            Some(until) if now_millis < until => CircuitGate::Open,
            Some(_) if self.probe_until.is_some_and(|lease| now_millis < lease) => {
                CircuitGate::Open
            }
            Some(_) => CircuitGate::ProbeDue,
        }
    }
}

/// When an endpoint's circuit opens and for how long (settings `WEBHOOKS_CIRCUIT_FAILURES`,
/// `WEBHOOKS_CIRCUIT_OPEN_SECS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitPolicy {
    /// Consecutive failed POSTs that open the circuit.
    pub failures: u32,
    /// How long it first stays open; each failed probe doubles it, up to [`Self::MAX_OPEN`].
    pub open_for: Duration,
}

impl CircuitPolicy {
    pub const MAX_OPEN: Duration = Duration::from_secs(3600);

    /// Whether a streak this long opens the circuit.
    pub fn opens_at(&self, failure_streak: u32) -> bool {
        failure_streak >= self.failures
    }

    /// How long the circuit stays open when it opens for the `opens`-th time (0-based) in a
    /// streak.
    pub fn open_duration(&self, opens: u32) -> Duration {
        let factor = 1u32 << opens.min(16);
        self.open_for
            .saturating_mul(factor)
            .min(Self::MAX_OPEN.max(self.open_for))
    }
}

/// A change to an endpoint's health, applied atomically by the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthChange {
    /// A 2xx: the streak ends, the circuit closes.
    Succeeded { at_millis: u64 },
    /// A failed POST: the streak grows (it begins now if there was none); a probe lease ends.
    Failed { at_millis: u64 },
    /// Opens the circuit until `until_millis`, unless it is open already (concurrent failures
    /// open it once), and counts the opening.
    OpenCircuit { now_millis: u64, until_millis: u64 },
    /// Takes the probe of an open circuit whose time has come, until `lease_until_millis`;
    /// only one caller gets it.
    TakeProbe {
        now_millis: u64,
        lease_until_millis: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_backoff_doubles_up_to_an_hour() {
        let policy = CircuitPolicy {
            failures: 5,
            open_for: Duration::from_secs(60),
        };
        assert!(!policy.opens_at(4) && policy.opens_at(5) && policy.opens_at(6));
        assert_eq!(policy.open_duration(0), Duration::from_secs(60));
        assert_eq!(policy.open_duration(1), Duration::from_secs(120));
        assert_eq!(policy.open_duration(5), Duration::from_secs(1920));
        assert_eq!(policy.open_duration(6), Duration::from_secs(3600));
        assert_eq!(policy.open_duration(400), Duration::from_secs(3600));
    }

    #[test]
    fn the_gate_follows_the_open_time_and_the_probe_lease() {
        let mut health = EndpointHealth::default();
        assert_eq!(health.gate(1_000), CircuitGate::Closed);
        health.circuit_open_until = Some(2_000);
        assert_eq!(health.gate(1_999), CircuitGate::Open);
        assert_eq!(health.gate(2_000), CircuitGate::ProbeDue);
        health.probe_until = Some(3_000);
        assert_eq!(health.gate(2_500), CircuitGate::Open);
        assert_eq!(health.gate(3_000), CircuitGate::ProbeDue);
    }

    #[test]
    fn names_round_trip_and_match_serde() {
        for outcome in [
            Outcome::Delivered,
            Outcome::Failed,
            Outcome::Gone,
            Outcome::Refused,
            Outcome::CircuitOpen,
            Outcome::Dropped,
        ] {
            assert_eq!(outcome.as_str().parse::<Outcome>(), Ok(outcome));
            assert_eq!(serde_json::to_value(outcome).unwrap(), outcome.as_str());
        }
        for state in [
            MessageState::Pending,
            MessageState::Delivered,
            MessageState::Failed,
            MessageState::Dead,
            MessageState::Dropped,
        ] {
            assert_eq!(state.as_str().parse::<MessageState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        for reason in [
            DeadLetterReason::RetriesExhausted,
            DeadLetterReason::RefusedTarget,
            DeadLetterReason::Unreadable,
            DeadLetterReason::SecretUnusable,
        ] {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }

    #[test]
    fn a_long_error_is_cut_at_a_character_boundary() {
        let error = "é".repeat(DeadLetter::MAX_ERROR_LEN);
        let cut = truncate(&error, DeadLetter::MAX_ERROR_LEN - 1);
        assert!(cut.len() < DeadLetter::MAX_ERROR_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
