//! The delivery worker: one attempt per received message, after which the message is settled
//! at once: acknowledged, re-sent for its next attempt (out of the queue's in-flight pool), or
//! dead-lettered. The attempt number travels in the message; every attempt is recorded.
//!
//! The same [`Deliverer::process_batch`] serves the `deliver-webhooks` Lambda (records from an
//! SQS event) and the local runner (records from the embedded queue).

mod batch_endpoints;
mod client;
mod secrets;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

pub use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use futures_util::stream::{self, StreamExt};
use serde_json::json;
use tokio::time::Instant;

pub use crate::domain::delivery::{DeadLetter, DeadLetterReason, QueueRecord};
use batch_endpoints::BatchEndpoints;
pub use client::{
    resolve_vetted, ClientBuildError, PostOutcome, PostResult, SignedRequest, WebhookClient,
    USER_AGENT_VALUE,
};
use secrets::SecretCache;

use crate::config::DeliveryConfig;
use crate::domain::delivery::{
    AttemptRecord, CircuitGate, DisabledReason, EndpointHealth, ErrorClass, HealthChange, LogEntry,
    MessageRecord, MessageState, Outcome, RecoverTask, Trigger,
};
use crate::domain::endpoint::Endpoint;
use crate::domain::event::{DeliveryMessage, Event, EventType};
use crate::domain::id::{EndpointId, EventId};
use crate::domain::queue_body::QueueBody;
use crate::domain::retry::{human_duration, NextStep};
use crate::domain::secret::WebhookSecret;
use crate::domain::signature::sign_with_each;
use crate::domain::OrgId;
use crate::error::StoreError;
use crate::metrics::{MetricSet, Unit};
use crate::ports::{
    DeliveryLog, DeliveryQueue, EndpointStore, EventOutbox, QueueConsumer, SecretCipher,
    SecretContext, MAX_ENQUEUE_BATCH, MAX_ENQUEUE_BYTES,
};
use crate::publish::{publish_and_clear, publish_metrics};
use crate::time::{
    millis_from_rfc3339, now_rfc3339, rfc3339_from_millis, unix_millis_now, unix_seconds_now,
};

/// Kept free at the end of an invocation for settling what was attempted (the store and queue
/// calls after the attempts); the attempts themselves must end before it.
pub const SETTLE_MARGIN: Duration = Duration::from_secs(10);
/// The most the attempt records of a group may hold up its settling: past it, the messages are
/// settled without their records (delivery wins over bookkeeping).
const LOG_WRITE_BUDGET: Duration = Duration::from_secs(2);
/// Room a dead letter's attributes take beside its body in a batched send (five attributes, the
/// error at most 1 KiB).
const DEAD_LETTER_ATTRIBUTES_ALLOWANCE: usize = 2 * 1024;
/// The most publishing held operational events may take at the end of a group's settling.
const NOTICE_BUDGET: Duration = Duration::from_secs(2);
/// How long a message waits when the store or KMS could not be reached. No attempt is counted:
/// the subscriber was never tried.
pub const POSTPONE_DELAY: Duration = Duration::from_secs(30);
/// A message due within this is attempted now rather than sent on another hop.
const DUE_TOLERANCE_MILLIS: u64 = 1_000;
/// While an endpoint is healthy, a success refreshes its `lastSuccessAt` at most this often
/// (one store write per minute, not per delivery).
const SUCCESS_REFRESH_MILLIS: u64 = 60_000;

/// What becomes of a received record.
enum Settle {
    /// Deleted: delivered, gone or dropped.
    Acknowledge,
    /// Sent again to the delivery queue, hidden for `delay` (its next attempt, a hop towards
    /// it, or a postponed try); the received one is then deleted.
    Reschedule { body: QueueBody, delay: Duration },
    /// Sent to the dead-letter queue; the received one is then deleted.
    DeadLetter(DeadLetter),
    /// Left to the queue, which hands it out again after its visibility timeout.
    Leave,
}

struct Decided {
    record: QueueRecord,
    settle: Settle,
    log: Option<LogEntry>,
}

/// What one try of a message came to.
enum Tried {
    /// The store or KMS could not be reached: nothing was attempted.
    Postponed(String),
    Attempted(Facts),
}

/// The facts of one attempt.
struct Facts {
    outcome: Outcome,
    status: Option<u16>,
    class: Option<ErrorClass>,
    error: Option<String>,
    latency: Duration,
    response_body: Option<String>,
    retry_after: Option<Duration>,
    /// Retrying cannot help: dead-letter now, for this reason.
    dead: Option<DeadLetterReason>,
}

impl Facts {
    fn unsent(outcome: Outcome, class: ErrorClass, error: String) -> Self {
        Self {
            outcome,
            status: None,
            class: Some(class),
            error: Some(error),
            latency: Duration::ZERO,
            response_body: None,
            retry_after: None,
            dead: None,
        }
    }

    fn dead(mut self, reason: DeadLetterReason) -> Self {
        self.dead = Some(reason);
        self
    }
}

pub struct Deliverer<S, C> {
    store: S,
    cipher: C,
    client: WebhookClient,
    config: DeliveryConfig,
    secrets: SecretCache,
    /// Operational events stored in the outbox and waiting for the next settle to publish
    /// them (whichever batch settles next; the relay publishes any a crash leaves behind).
    notices: Mutex<Vec<(OrgId, Event)>>,
}

impl<S: EndpointStore + DeliveryLog + EventOutbox, C: SecretCipher> Deliverer<S, C> {
    pub fn new(store: S, cipher: C, config: DeliveryConfig) -> Result<Self, ClientBuildError> {
        Ok(Self {
            client: WebhookClient::new(&config)?,
            secrets: SecretCache::new(config.secret_cache_ttl),
            notices: Mutex::new(Vec::new()),
            store,
            cipher,
            config,
        })
    }

    pub fn cipher(&self) -> &C {
        &self.cipher
    }

    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// Attempts every record, at most `concurrency` at a time, and settles each group of
    /// records whose attempts ended together as soon as they end: one store write for their
    /// attempt records, then their re-sends and dead letters, then one delete, so a slow
    /// subscriber holds only its own records. The endpoints of the records due now are read
    /// first, together (one `BatchGetItem` for a batch of 10). An attempt still running at
    /// `deadline` is abandoned and its record left to the queue. Returns the queue ids of the
    /// records left to the queue.
    pub async fn process_batch(
        &self,
        consumer: &(impl QueueConsumer + DeliveryQueue),
        records: Vec<QueueRecord>,
        deadline: Instant,
    ) -> Vec<String> {
        // Each body parsed once, for the batch read and for its own attempt.
        let parsed: Vec<(QueueRecord, Parsed)> = records
            .into_iter()
            .map(|record| {
                let message = serde_json::from_str(&record.body);
                (record, message)
            })
            .collect();
        let due = endpoints_due(parsed.iter().map(|(_, message)| message));
        let endpoints = &BatchEndpoints::read(&self.store, &due).await;
        let mut decided = stream::iter(parsed)
            .map(|(record, message)| async move {
                match tokio::time::timeout_at(deadline, self.decide(consumer, &record, message, endpoints)).await {
                    Ok((settle, log)) => Decided { record, settle, log },
                    Err(_) => {
                        tracing::error!(queue_message_id = %record.queue_message_id, "not attempted before the invocation's deadline; the queue hands it out again after its visibility timeout, for the same attempt");
                        Decided { record, settle: Settle::Leave, log: None }
                    }
                }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .ready_chunks(MAX_ENQUEUE_BATCH);
        let mut left = Vec::new();
        while let Some(group) = decided.next().await {
            left.extend(self.settle(consumer, group).await);
        }
        left
    }

    /// The `deliver-webhooks` handler: an SQS event in, the records left to the queue out.
    /// `deadline_epoch_millis` is the invocation's own deadline (its context's `deadline`, Unix
    /// ms); attempts end [`SETTLE_MARGIN`] before it, so what they came to is settled in time.
    pub async fn handle_sqs_event(
        &self,
        consumer: &(impl QueueConsumer + DeliveryQueue),
        event: SqsEvent,
        deadline_epoch_millis: u64,
    ) -> SqsBatchResponse {
        let remaining =
            Duration::from_millis(deadline_epoch_millis.saturating_sub(unix_millis_now()));
        let deadline = Instant::now() + remaining.saturating_sub(SETTLE_MARGIN);
        let mut response = SqsBatchResponse::default();
        let mut records = Vec::with_capacity(event.records.len());
        for message in event.records {
            let (Some(queue_message_id), Some(receipt_handle)) =
                (message.message_id, message.receipt_handle)
            else {
                tracing::error!("SQS record without a message id or receipt handle; skipped");
                continue;
            };
            let receive_count = message
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            records.push(QueueRecord {
                queue_message_id,
                receipt_handle,
                receive_count,
                body: message.body.unwrap_or_default(),
            });
        }
        for id in self.process_batch(consumer, records, deadline).await {
            response.add_failure(id);
        }
        response
    }

    /// Writes the group's log, sends its re-sends and dead letters, and deletes every record
    /// that is now settled. Returns the queue ids of the records left to the queue.
    async fn settle(
        &self,
        consumer: &(impl QueueConsumer + DeliveryQueue),
        group: Vec<Decided>,
    ) -> Vec<String> {
        // The log first: a crash after it repeats the attempt, whose record is then written
        // again under the same key; a crash before it loses nothing but the record.
        let entries: Vec<LogEntry> = group.iter().filter_map(|d| d.log.clone()).collect();
        if !entries.is_empty() {
            match tokio::time::timeout(LOG_WRITE_BUDGET, self.store.record(&entries)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, attempts = entries.len(), "could not write attempt records; the messages are settled all the same"),
                Err(_) => tracing::error!(attempts = entries.len(), "attempt records not written within {LOG_WRITE_BUDGET:?}; the messages are settled all the same"),
            }
        }
        self.emit_metrics(&group);
        let mut settled: Vec<bool> = group
            .iter()
            .map(|d| !matches!(d.settle, Settle::Leave))
            .collect();
        let (resend_at, resends) = picked(&group, |settle| match settle {
            Settle::Reschedule { body, delay } => Some((body.clone(), *delay)),
            _ => None,
        });
        for range in send_groups(resends.iter().map(|(body, _)| body.len())) {
            let sent = consumer.reschedule(&resends[range.clone()]).await;
            unsettle(
                &mut settled,
                &resend_at[range],
                sent,
                "re-send messages for their next attempt",
            );
        }
        let (letter_at, letters) = picked(&group, |settle| match settle {
            Settle::DeadLetter(letter) => Some(letter.clone()),
            _ => None,
        });
        let letter_sizes = letters
            .iter()
            .map(|letter| letter.body.len() + DEAD_LETTER_ATTRIBUTES_ALLOWANCE);
        for range in send_groups(letter_sizes) {
            let sent = consumer.dead_letter(&letters[range.clone()]).await;
            unsettle(
                &mut settled,
                &letter_at[range],
                sent,
                "dead-letter messages",
            );
        }
        let handles: Vec<&str> = group
            .iter()
            .zip(&settled)
            .filter(|(_, ok)| **ok)
            .map(|(d, _)| d.record.receipt_handle.as_str())
            .collect();
        if !handles.is_empty() {
            match consumer.acknowledge(&handles).await {
                Ok(failed) if failed.is_empty() => {}
                // The Lambda's event source mapping deletes them after the invocation anyway
                // (they are not reported as failures); elsewhere they come back once.
                Ok(failed) => tracing::warn!(
                    count = failed.len(),
                    "could not delete some settled messages"
                ),
                Err(error) => tracing::warn!(%error, "could not delete settled messages"),
            }
        }
        // After the group is settled, and bounded: they are in the outbox already, so what
        // is not published now the relay publishes later.
        if tokio::time::timeout(NOTICE_BUDGET, self.publish_notices(consumer))
            .await
            .is_err()
        {
            tracing::warn!("operational events not all published within {NOTICE_BUDGET:?}; the relay publishes the rest from the outbox");
        }
        group
            .into_iter()
            .zip(settled)
            .filter(|(_, ok)| !ok)
            .map(|(d, _)| d.record.queue_message_id)
            .collect()
    }

    /// Makes the record's attempt (or finds it is not due yet) and decides what becomes of it.
    async fn decide(
        &self,
        queue: &impl DeliveryQueue,
        record: &QueueRecord,
        message: Parsed,
        endpoints: &BatchEndpoints,
    ) -> (Settle, Option<LogEntry>) {
        let message = match message {
            Ok(message) => message,
            Err(_) if serde_json::from_str::<RecoverTask>(&record.body).is_ok() => {
                return (self.go_on_recovering(queue, record).await, None)
            }
            Err(error) => {
                tracing::error!(queue_message_id = %record.queue_message_id, %error, "unreadable queue message; dead-lettered as it is");
                let letter = DeadLetter {
                    body: QueueBody::received(record.body.clone()),
                    reason: DeadLetterReason::Unreadable,
                    attempts: 0,
                    last_status: None,
                    last_error: Some(format!("unreadable message: {error}")),
                    dead_lettered_at: now_rfc3339(),
                };
                return (Settle::DeadLetter(letter), None);
            }
        };
        let Some(org) = OrgId::parse(&message.org_id) else {
            // Not dropped: a producer bug must leave a trace an operator can replay from.
            let error = format!("the message names no valid org ({:?})", message.org_id);
            tracing::error!(message_id = %message.id, "{error}; dead-lettered");
            let attempts = message.attempt.saturating_sub(1);
            return (
                self.dead_letter(
                    &message,
                    DeadLetterReason::Unreadable,
                    attempts,
                    None,
                    Some(error),
                ),
                None,
            );
        };
        let now = unix_millis_now();
        if let Some(due) = message
            .due_at_millis()
            .filter(|due| *due > now + DUE_TOLERANCE_MILLIS)
        {
            // A hop: not due yet, and the queue's delay reaches 15 min at most.
            let delay = Duration::from_millis(due - now);
            return match QueueBody::encode(&message) {
                Ok(body) => (Settle::Reschedule { body, delay }, None),
                Err(error) => {
                    tracing::error!(message_id = %message.id, %error, "could not encode a message again");
                    (Settle::Leave, None)
                }
            };
        }
        let attempt = message.attempt.max(1);
        let started_at = now_rfc3339();
        let manual = message.trigger == Trigger::Manual;
        let facts = match self.try_once(&org, &message, now, manual, endpoints).await {
            Tried::Attempted(facts) => facts,
            Tried::Postponed(error) => {
                tracing::error!(message_id = %message.id, endpoint_id = %message.endpoint_id, attempt, "{error}; attempt {attempt} postponed by {}, not counted", human_duration(POSTPONE_DELAY));
                return match QueueBody::encode(&message) {
                    Ok(body) => (
                        Settle::Reschedule {
                            body,
                            delay: POSTPONE_DELAY,
                        },
                        None,
                    ),
                    Err(_) => (Settle::Leave, None),
                };
            }
        };
        if manual {
            return (
                Settle::Acknowledge,
                Some(self.manual_entry(&org, &message, started_at, &facts).await),
            );
        }
        let (id, endpoint) = (&message.id, &message.endpoint_id);
        let (settle, state, next_attempt_at) = match (facts.outcome, facts.dead) {
            (_, Some(reason)) => {
                let error = facts.error.as_deref().unwrap_or("");
                if reason == DeadLetterReason::RefusedTarget {
                    // The subscriber's URL, not a fault of ours: a warning, like exhausted retries.
                    tracing::warn!(message_id = %id, endpoint_id = %endpoint, attempt, error, trace_id = trace_id(&message), "{id} to {endpoint} dead-lettered after attempt {attempt}: {}", reason.as_str());
                } else {
                    tracing::error!(message_id = %id, endpoint_id = %endpoint, attempt, error, trace_id = trace_id(&message), "{id} to {endpoint} dead-lettered after attempt {attempt}: {}", reason.as_str());
                }
                (
                    self.dead_letter(&message, reason, attempt, facts.status, facts.error.clone()),
                    MessageState::Dead,
                    None,
                )
            }
            (Outcome::Delivered, None) => {
                tracing::info!(message_id = %id, endpoint_id = %endpoint, attempt, status = facts.status, latency_ms = facts.latency.as_millis() as u64, trace_id = trace_id(&message), "delivered {id} ({}) to {endpoint} on attempt {attempt}: HTTP {}", message.event_type, facts.status.unwrap_or_default());
                (Settle::Acknowledge, MessageState::Delivered, None)
            }
            (Outcome::Gone, None) => {
                tracing::warn!(message_id = %id, endpoint_id = %endpoint, attempt, status = 410, trace_id = trace_id(&message), "{endpoint} answered 410 Gone to {id}: endpoint disabled, no retry");
                (Settle::Acknowledge, MessageState::Failed, None)
            }
            (Outcome::Dropped, None) => {
                tracing::warn!(message_id = %id, endpoint_id = %endpoint, attempt, trace_id = trace_id(&message), "dropped {id} for {endpoint}: {}; not retried", facts.error.as_deref().unwrap_or(""));
                (Settle::Acknowledge, MessageState::Dropped, None)
            }
            (_, None) => match self
                .config
                .schedule
                .next_step_jittered(message.schedule_position(), facts.retry_after)
            {
                NextStep::RetryIn(delay) => {
                    let due =
                        unix_millis_now() + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    tracing::warn!(
                        message_id = %id, endpoint_id = %endpoint, attempt, status = facts.status, outcome = facts.outcome.as_str(),
                        error = facts.error.as_deref().unwrap_or(""), next_attempt_in = %human_duration(delay), trace_id = trace_id(&message),
                        "attempt {attempt} of {} for {id} to {endpoint} failed: {}; next attempt in {}",
                        self.config.schedule.max_attempts(), facts.error.as_deref().unwrap_or(""), human_duration(delay)
                    );
                    match QueueBody::encode(&message.for_attempt(attempt + 1, due)) {
                        Ok(body) => (
                            Settle::Reschedule { body, delay },
                            MessageState::Pending,
                            Some(rfc3339_from_millis(due)),
                        ),
                        Err(_) => (Settle::Leave, MessageState::Pending, None),
                    }
                }
                NextStep::GiveUp => {
                    // A subscriber that stayed down is its owner's to fix, not a fault of ours
                    // (the DLQ alarm is the operator's signal): a warning.
                    tracing::warn!(
                        message_id = %id, endpoint_id = %endpoint, attempt, status = facts.status, error = facts.error.as_deref().unwrap_or(""), trace_id = trace_id(&message),
                        "attempt {attempt} for {id} to {endpoint} failed: {}; no attempts left, dead-lettered", facts.error.as_deref().unwrap_or("")
                    );
                    // Not for an operational event itself: failures must not breed failures.
                    if !EventType::OPERATIONAL.contains(&message.event_type) {
                        let data = json!({
                            "endpointId": endpoint, "messageId": id, "eventId": message.event_id,
                            "eventType": message.event_type, "attempts": attempt,
                            "lastStatus": facts.status, "lastError": facts.error,
                        });
                        // One event per message and attempt, whatever the redeliveries: its
                        // id (and so its messages' webhook-id) is derived from them.
                        let seed = format!("message.failed|{id}|{attempt}");
                        // Dated by when the last attempt was due (stable across redeliveries of
                        // its queue message), or the event's time for a first attempt.
                        let dated = message
                            .due_at_millis()
                            .or_else(|| millis_from_rfc3339(&message.timestamp));
                        let event = Event {
                            id: EventId::derived(&seed, dated.unwrap_or_else(unix_millis_now)),
                            event_type: EventType::MessageFailed,
                            timestamp: now_rfc3339(),
                            data,
                            trace: None,
                        };
                        self.announce(&org, Ok(event), None).await;
                    }
                    (
                        self.dead_letter(
                            &message,
                            DeadLetterReason::RetriesExhausted,
                            attempt,
                            facts.status,
                            facts.error.clone(),
                        ),
                        MessageState::Dead,
                        None,
                    )
                }
            },
        };
        let log = self.log_entry(
            &org,
            &message,
            attempt,
            started_at,
            &facts,
            state,
            next_attempt_at,
        );
        (settle, Some(log))
    }

    fn dead_letter(
        &self,
        message: &DeliveryMessage,
        reason: DeadLetterReason,
        attempts: u32,
        last_status: Option<u16>,
        last_error: Option<String>,
    ) -> Settle {
        match QueueBody::encode(&message.restarted(attempts)) {
            Ok(body) => Settle::DeadLetter(DeadLetter {
                body,
                reason,
                attempts,
                last_status,
                last_error,
                dead_lettered_at: now_rfc3339(),
            }),
            Err(error) => {
                tracing::error!(message_id = %message.id, %error, "could not encode a dead letter; left to the queue's redrive");
                Settle::Leave
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn log_entry(
        &self,
        org: &OrgId,
        message: &DeliveryMessage,
        attempt: u32,
        at: String,
        facts: &Facts,
        state: MessageState,
        next_attempt_at: Option<String>,
    ) -> LogEntry {
        let expires_at = unix_seconds_now()
            + i64::try_from(self.config.retention.as_secs()).unwrap_or(i64::MAX / 2);
        LogEntry {
            attempt: AttemptRecord {
                org: org.clone(),
                endpoint_id: message.endpoint_id.clone(),
                message_id: message.id.clone(),
                attempt,
                at,
                outcome: facts.outcome,
                status_code: facts.status,
                error_class: facts.class,
                error: facts.error.clone(),
                latency_ms: u64::try_from(facts.latency.as_millis()).unwrap_or(u64::MAX),
                response_body: facts.response_body.clone(),
                trigger: message.trigger,
                expires_at,
            },
            message: Some(MessageRecord {
                org: org.clone(),
                endpoint_id: message.endpoint_id.clone(),
                message_id: message.id.clone(),
                event_id: message.event_id.clone(),
                event_type: message.event_type.as_str().to_owned(),
                timestamp: message.timestamp.clone(),
                data: message.data.clone(),
                state,
                attempts: attempt,
                next_attempt_at,
                last_status: facts.status,
                last_error: facts.error.clone(),
                updated_at: now_rfc3339(),
                expires_at,
                trace: message.trace.clone(),
            }),
        }
    }

    /// The record of a manual attempt (a resend): one attempt outside the schedule, numbered 0.
    /// It leaves the message's state to the schedule, but for a success, which marks the
    /// message `delivered`.
    async fn manual_entry(
        &self,
        org: &OrgId,
        message: &DeliveryMessage,
        at: String,
        facts: &Facts,
    ) -> LogEntry {
        tracing::info!(
            message_id = %message.id, endpoint_id = %message.endpoint_id, outcome = facts.outcome.as_str(), status = facts.status,
            "manual attempt of {} to {}: {}", message.id, message.endpoint_id, facts.outcome.as_str()
        );
        if let (Outcome::Delivered, Some(status)) = (facts.outcome, facts.status) {
            if let Err(error) = self
                .store
                .note_manual_delivery(
                    org,
                    &message.endpoint_id,
                    &message.id,
                    status,
                    &now_rfc3339(),
                )
                .await
            {
                tracing::warn!(message_id = %message.id, %error, "could not mark the message delivered after a manual attempt");
            }
        }
        let mut entry = self.log_entry(org, message, 0, at, facts, MessageState::Pending, None);
        entry.message = None;
        entry
    }

    /// Takes up a recovery where its last run stopped, for one run's time; what remains goes
    /// back on the queue as the next [`RecoverTask`].
    async fn go_on_recovering(&self, queue: &impl DeliveryQueue, record: &QueueRecord) -> Settle {
        let Ok(RecoverTask { recover }) = serde_json::from_str::<RecoverTask>(&record.body) else {
            return Settle::Leave;
        };
        match crate::recover::recover(&self.store, queue, recover, crate::recover::RUN_BUDGET).await
        {
            Ok(progress) => {
                tracing::info!(
                    recovered = progress.recovered,
                    more = progress.continued,
                    "recovery went on"
                );
                Settle::Acknowledge
            }
            Err(error) => {
                // Left to the queue: tried again after its visibility timeout, and moved to the
                // dead-letter queue after a few receives if it keeps failing.
                tracing::error!(%error, "a recovery run failed; left to the queue");
                Settle::Leave
            }
        }
    }

    /// One attempt of `message`, unless its endpoint is gone, disabled or behind an open
    /// circuit (a `manual` attempt goes through an open circuit: someone asked for it); the
    /// endpoint's health follows the outcome.
    async fn try_once(
        &self,
        org: &OrgId,
        message: &DeliveryMessage,
        now: u64,
        manual: bool,
        endpoints: &BatchEndpoints,
    ) -> Tried {
        let read = match endpoints.get(org, &message.endpoint_id) {
            Some(read) => Ok(read),
            None => self.store.get_endpoint(org, &message.endpoint_id).await,
        };
        let endpoint = match read {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => {
                return Tried::Attempted(Facts::unsent(
                    Outcome::Dropped,
                    ErrorClass::EndpointDeleted,
                    "the endpoint was deleted".into(),
                ))
            }
            Err(error) => return Tried::Postponed(format!("could not load the endpoint: {error}")),
        };
        if endpoint.disabled {
            return Tried::Attempted(Facts::unsent(
                Outcome::Dropped,
                ErrorClass::EndpointDisabled,
                "the endpoint is disabled".into(),
            ));
        }
        let gate = if manual {
            CircuitGate::Closed
        } else {
            endpoint.health.gate(now)
        };
        match gate {
            CircuitGate::Closed => {}
            CircuitGate::Open => return Tried::Attempted(circuit_open(&endpoint.health)),
            CircuitGate::ProbeDue => {
                let lease =
                    self.config.connect_timeout + self.config.request_timeout + SETTLE_MARGIN;
                let change = HealthChange::TakeProbe {
                    now_millis: now,
                    lease_until_millis: now
                        + u64::try_from(lease.as_millis()).unwrap_or(u64::MAX / 2),
                };
                let taken = self.store.change_health(org, &endpoint.id, change).await;
                endpoints.forget(org, &endpoint.id);
                match taken {
                    Ok(Some(_)) => {
                        tracing::info!(endpoint_id = %endpoint.id, message_id = %message.id, "probing {} with {} after {} consecutive failures", endpoint.id, message.id, endpoint.health.failure_streak)
                    }
                    Ok(None) => return Tried::Attempted(circuit_open(&endpoint.health)),
                    Err(error) => {
                        return Tried::Postponed(format!(
                            "could not take the circuit's probe: {error}"
                        ))
                    }
                }
            }
        }
        let secrets = match self.signing_secrets(org, &endpoint, now).await {
            Ok(secrets) => secrets,
            Err(tried) => return tried,
        };
        let body = match message.payload() {
            Ok(body) => body,
            Err(error) => {
                return Tried::Attempted(
                    Facts::unsent(
                        Outcome::Failed,
                        ErrorClass::Request,
                        format!("could not encode the payload: {error}"),
                    )
                    .dead(DeadLetterReason::Unreadable),
                )
            }
        };
        let timestamp = unix_seconds_now();
        let signature = match sign_with_each(&secrets, message.id.as_str(), timestamp, &body) {
            Ok(signature) => signature,
            Err(error) => {
                return Tried::Attempted(
                    Facts::unsent(
                        Outcome::Failed,
                        ErrorClass::SecretUnusable,
                        format!("the stored secret is malformed: {error}"),
                    )
                    .dead(DeadLetterReason::SecretUnusable),
                )
            }
        };
        let result = self
            .client
            .post(SignedRequest {
                url: &endpoint.url,
                message_id: message.id.as_str(),
                timestamp,
                signature: &signature,
                headers: &endpoint.headers,
                // A new span per attempt, in the producer's trace.
                traceparent: message.trace.as_ref().and_then(|t| t.child().ok()),
                tracestate: message.trace.as_ref().and_then(|t| t.tracestate.as_deref()),
                body,
            })
            .await;
        // Bookkeeping after the POST, not before it: previous secrets past their grace period
        // are deleted from the endpoint (conditionally on the current secret, so a rotation meanwhile
        // is never undone).
        if let Some(kept) = endpoint.unexpired_previous_secrets(now) {
            let forgotten = self
                .store
                .forget_expired_secrets(org, &endpoint.id, &endpoint.secret_ciphertext, &kept)
                .await;
            if let Err(error) = forgotten {
                tracing::warn!(endpoint_id = %endpoint.id, %error, "could not delete expired previous secrets; the next delivery tries again");
            }
        }
        let mut facts = Facts {
            outcome: Outcome::Failed,
            status: None,
            class: None,
            error: None,
            latency: result.latency,
            response_body: result.response_body,
            retry_after: None,
            dead: None,
        };
        match result.outcome {
            PostOutcome::Delivered { status } => {
                self.note_success(org, &endpoint, endpoints).await;
                facts.outcome = Outcome::Delivered;
                facts.status = Some(status);
            }
            PostOutcome::Gone => {
                self.disable(org, &endpoint, DisabledReason::Gone, None, endpoints)
                    .await;
                facts.outcome = Outcome::Gone;
                facts.status = Some(410);
            }
            PostOutcome::Refused { error } => {
                facts.outcome = Outcome::Refused;
                facts.class = Some(ErrorClass::RefusedTarget);
                facts.error = Some(error);
                facts.dead = Some(DeadLetterReason::RefusedTarget);
            }
            PostOutcome::Failed {
                status,
                class,
                error,
                retry_after,
            } => {
                self.note_failure(org, &endpoint, endpoints).await;
                facts.status = status;
                facts.class = Some(class);
                facts.error = Some(error);
                facts.retry_after = retry_after;
            }
        }
        Tried::Attempted(facts)
    }

    /// Every secret that signs a delivery to `endpoint` now, decrypted (cached): the current
    /// one, then the previous ones still in their grace period. A previous secret that cannot
    /// be used is left out (the current one still signs); the current one unusable is a
    /// dead letter, and a cipher outage postpones the attempt.
    async fn signing_secrets(
        &self,
        org: &OrgId,
        endpoint: &Endpoint,
        now_millis: u64,
    ) -> Result<Vec<WebhookSecret>, Tried> {
        let context = SecretContext {
            org_id: org,
            endpoint_id: &endpoint.id,
        };
        let mut secrets = Vec::new();
        for (index, ciphertext) in endpoint.signing_secrets(now_millis).enumerate() {
            match self
                .secrets
                .get_or_decrypt(&self.cipher, ciphertext, context)
                .await
            {
                Ok(secret) => secrets.push(secret),
                Err(secrets::SecretError::Unusable(error)) if index == 0 => {
                    return Err(Tried::Attempted(
                        Facts::unsent(Outcome::Failed, ErrorClass::SecretUnusable, error)
                            .dead(DeadLetterReason::SecretUnusable),
                    ))
                }
                Err(secrets::SecretError::Unusable(error)) => {
                    tracing::warn!(endpoint_id = %endpoint.id, %error, "a previous secret cannot be used; signing without it");
                }
                Err(secrets::SecretError::Unavailable(error)) => {
                    return Err(Tried::Postponed(error))
                }
            }
        }
        Ok(secrets)
    }

    /// Stores an operational event about one of `org`'s endpoints in the outbox and holds it
    /// for the next settle to publish (to the org's other endpoints subscribed to it). With
    /// `metric`, counts it (`CircuitsOpened`, `EndpointsDisabled`) in a line of its own.
    async fn announce(
        &self,
        org: &OrgId,
        event: Result<Event, crate::domain::id::RandomError>,
        metric: Option<&'static str>,
    ) {
        if let Some(name) = metric {
            let mut set = MetricSet::default();
            set.add(name, Unit::Count, 1.0);
            set.property("orgId", org.as_str());
            if let Ok(event) = &event {
                set.property("endpointId", event.data["endpointId"].clone());
            }
            self.config.metrics.emit(&set);
        }
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, "could not make an operational event");
                return;
            }
        };
        match self.store.add_event(org, &event).await {
            Ok(()) => {}
            // The same announcement again (a redelivered attempt): it is on its way already.
            Err(StoreError::Conflict) => return,
            Err(error) => {
                tracing::warn!(event_id = %event.id, %error, "could not store the {} event in the outbox; publishing it now only", event.event_type)
            }
        }
        if let Ok(mut notices) = self.notices.lock() {
            notices.push((org.clone(), event));
        }
    }

    /// Publishes the operational events held so far and clears them from the outbox. One
    /// that cannot be published now stays in the outbox for the relay.
    async fn publish_notices(&self, queue: &impl DeliveryQueue) {
        let notices = match self.notices.lock() {
            Ok(mut notices) => std::mem::take(&mut *notices),
            Err(_) => return,
        };
        for (org, event) in notices {
            let published = publish_and_clear(&self.store, queue, &org, &event).await;
            let enqueued = published.as_ref().ok().map(|report| report.endpoints);
            self.config
                .metrics
                .emit(&publish_metrics(&org, &event, enqueued));
            match published {
                Ok(report) => {
                    tracing::info!(org_id = %org, event_id = %event.id, endpoints = report.endpoints, "{} published to {} endpoint(s)", event.event_type, report.endpoints)
                }
                Err(error) => {
                    tracing::warn!(org_id = %org, event_id = %event.id, %error, "{} not published yet; it stays in the outbox for the relay", event.event_type)
                }
            }
        }
    }

    /// One EMF line per endpoint and outcome among the group's attempts: `Attempts` by
    /// `Outcome`, `AttemptLatency` of the POSTs made, `EndToEndLatency` (event time to
    /// delivered) and `DeadLetters`, with the org and endpoint as properties.
    fn emit_metrics(&self, group: &[Decided]) {
        let mut sets: BTreeMap<(String, String, &'static str), MetricSet> = BTreeMap::new();
        let mut unattributed_dead_letters = 0.0;
        for decided in group {
            let dead = f64::from(u8::from(matches!(decided.settle, Settle::DeadLetter(_))));
            let Some(log) = &decided.log else {
                unattributed_dead_letters += dead;
                continue;
            };
            let attempt = &log.attempt;
            let outcome = attempt.outcome.as_str();
            let key = (
                attempt.org.as_str().to_owned(),
                attempt.endpoint_id.as_str().to_owned(),
                outcome,
            );
            let set = sets.entry(key).or_insert_with(|| {
                let mut set = MetricSet::default().dimension("Outcome", outcome);
                set.property("orgId", attempt.org.as_str());
                set.property("endpointId", attempt.endpoint_id.as_str());
                set
            });
            set.add_by_dimension("Attempts", Unit::Count, 1.0);
            // Only attempts that reached the subscriber (an answer, a timeout, a refused or broken
            // connection): an unsent one has no latency to count.
            let posted = attempt.status_code.is_some()
                || matches!(
                    attempt.error_class,
                    Some(ErrorClass::Timeout | ErrorClass::Connection)
                );
            if posted {
                set.add(
                    "AttemptLatency",
                    Unit::Milliseconds,
                    attempt.latency_ms as f64,
                );
            }
            if attempt.outcome == Outcome::Delivered {
                let event_time = log
                    .message
                    .as_ref()
                    .and_then(|m| millis_from_rfc3339(&m.timestamp));
                // When the subscriber answered, not when the group settled.
                let delivered_at =
                    millis_from_rfc3339(&attempt.at).map(|at| at + attempt.latency_ms);
                if let (Some(event_time), Some(delivered_at)) = (event_time, delivered_at) {
                    set.add(
                        "EndToEndLatency",
                        Unit::Milliseconds,
                        delivered_at.saturating_sub(event_time) as f64,
                    );
                }
            }
            set.add("DeadLetters", Unit::Count, dead);
        }
        for set in sets.values() {
            self.config.metrics.emit(set);
        }
        if unattributed_dead_letters > 0.0 {
            let mut set = MetricSet::default();
            set.add("DeadLetters", Unit::Count, unattributed_dead_letters);
            self.config.metrics.emit(&set);
        }
    }

    async fn note_success(&self, org: &OrgId, endpoint: &Endpoint, endpoints: &BatchEndpoints) {
        let now = unix_millis_now();
        let needs_writing = |health: &EndpointHealth| {
            health.failure_streak != 0
                || health.circuit_open_until.is_some()
                || health
                    .last_success_at
                    .is_none_or(|at| now.saturating_sub(at) >= SUCCESS_REFRESH_MILLIS)
        };
        // Of ten records to one endpoint, the first success to end writes it and the batch's
        // view takes it at once: the other nine, concurrent or not, find nothing to write.
        let before = match endpoints.claim_success(org, &endpoint.id, now, needs_writing) {
            Some(Some(before)) => before,
            Some(None) => return,
            None if needs_writing(&endpoint.health) => endpoint.health.clone(),
            None => return,
        };
        match self
            .store
            .change_health(
                org,
                &endpoint.id,
                HealthChange::Succeeded { at_millis: now },
            )
            .await
        {
            Ok(changed) => {
                match &changed {
                    Some(changed) => endpoints.note_success(org, &endpoint.id, changed),
                    None => endpoints.forget(org, &endpoint.id),
                }
                if before.circuit_open_until.is_some() {
                    tracing::info!(endpoint_id = %endpoint.id, "the circuit of {} closed: a probe succeeded after {} consecutive failures", endpoint.id, before.failure_streak)
                }
            }
            Err(error) => {
                endpoints.forget(org, &endpoint.id);
                tracing::warn!(endpoint_id = %endpoint.id, %error, "could not record a success in the endpoint's health")
            }
        }
    }

    async fn note_failure(&self, org: &OrgId, endpoint: &Endpoint, endpoints: &BatchEndpoints) {
        let now = unix_millis_now();
        let changed = self
            .store
            .change_health(org, &endpoint.id, HealthChange::Failed { at_millis: now })
            .await;
        endpoints.forget(org, &endpoint.id);
        let health = match changed {
            Ok(Some(health)) => health,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(endpoint_id = %endpoint.id, %error, "could not record a failure in the endpoint's health");
                return;
            }
        };
        let disable_after =
            u64::try_from(self.config.disable_after.as_millis()).unwrap_or(u64::MAX);
        if let Some(since) = health
            .failing_since
            .filter(|since| now.saturating_sub(*since) >= disable_after)
        {
            self.disable(
                org,
                endpoint,
                DisabledReason::Failing,
                Some(since + 1),
                endpoints,
            )
            .await;
            return;
        }
        let circuit = self.config.circuit;
        if circuit.opens_at(health.failure_streak) && health.gate(now) != CircuitGate::Open {
            let open_for = circuit.open_duration(health.circuit_opens);
            let change = HealthChange::OpenCircuit {
                now_millis: now,
                until_millis: now + u64::try_from(open_for.as_millis()).unwrap_or(u64::MAX / 2),
            };
            match self.store.change_health(org, &endpoint.id, change).await {
                Ok(Some(opened)) => {
                    tracing::warn!(endpoint_id = %endpoint.id, failure_streak = health.failure_streak, circuit_open_for = %human_duration(open_for), "the circuit of {} opened for {} after {} consecutive failures", endpoint.id, human_duration(open_for), health.failure_streak);
                    let data = json!({
                        "endpointId": endpoint.id, "url": endpoint.url,
                        "failureStreak": health.failure_streak,
                        "openUntil": opened.circuit_open_until.map(rfc3339_from_millis),
                    });
                    let event = Event::new(EventType::EndpointCircuitOpened, data);
                    self.announce(org, event, Some("CircuitsOpened")).await;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(endpoint_id = %endpoint.id, %error, "could not open the endpoint's circuit")
                }
            }
        }
    }

    async fn disable(
        &self,
        org: &OrgId,
        endpoint: &Endpoint,
        reason: DisabledReason,
        failing_since_before: Option<u64>,
        endpoints: &BatchEndpoints,
    ) {
        let at = now_rfc3339();
        let disabled = self
            .store
            .disable_endpoint(org, &endpoint.id, reason, &at, failing_since_before)
            .await;
        endpoints.forget(org, &endpoint.id);
        match disabled {
            Ok(true) => {
                tracing::warn!(endpoint_id = %endpoint.id, disabled_reason = reason.as_str(), "endpoint {} disabled: {}", endpoint.id, reason.as_str());
                let data = json!({
                    "endpointId": endpoint.id, "url": endpoint.url,
                    "disabledReason": reason.as_str(), "disabledAt": at,
                });
                let event = Event::new(EventType::EndpointDisabled, data);
                self.announce(org, event, Some("EndpointsDisabled")).await;
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(endpoint_id = %endpoint.id, %error, "could not disable the endpoint ({})", reason.as_str())
            }
        }
    }
}

/// A queue record's body read as a delivery message (a recovery task or an unreadable body
/// otherwise).
type Parsed = Result<DeliveryMessage, serde_json::Error>;

/// The endpoints of the messages whose attempt is due now (not a hop, not a recovery task),
/// each once, in order.
fn endpoints_due<'a>(messages: impl Iterator<Item = &'a Parsed>) -> Vec<(OrgId, EndpointId)> {
    let now = unix_millis_now();
    let mut keys: Vec<(OrgId, EndpointId)> = Vec::new();
    for message in messages {
        let Ok(message) = message else {
            continue;
        };
        if message
            .due_at_millis()
            .is_some_and(|due| due > now + DUE_TOLERANCE_MILLIS)
        {
            continue;
        }
        let Some(org) = OrgId::parse(&message.org_id) else {
            continue;
        };
        let key = (org, message.endpoint_id.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The trace id a message carries, for its log lines (empty when none).
fn trace_id(message: &DeliveryMessage) -> &str {
    message.trace.as_ref().map_or("", |t| t.trace_id())
}

/// Consecutive ranges of items, each within one batched send: at most [`MAX_ENQUEUE_BATCH`]
/// items and [`MAX_ENQUEUE_BYTES`] bytes (SQS: 10 entries, 256 KiB).
fn send_groups(sizes: impl Iterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut bytes = 0;
    for (index, size) in sizes.enumerate() {
        match groups.last_mut() {
            Some(last) if last.len() < MAX_ENQUEUE_BATCH && bytes + size <= MAX_ENQUEUE_BYTES => {
                last.end = index + 1;
                bytes += size;
            }
            _ => {
                groups.push(index..index + 1);
                bytes = size;
            }
        }
    }
    groups
}

/// The items `pick` takes from a group's settlements, and the index of each in the group.
fn picked<T>(group: &[Decided], pick: impl Fn(&Settle) -> Option<T>) -> (Vec<usize>, Vec<T>) {
    group
        .iter()
        .enumerate()
        .filter_map(|(index, decided)| pick(&decided.settle).map(|item| (index, item)))
        .unzip()
}

/// After a batched send of the items at `at`: those the queue refused (all of them, when the
/// call failed) are not settled, so they are not acknowledged and come back after the
/// visibility timeout, for the same attempt.
fn unsettle(
    settled: &mut [bool],
    at: &[usize],
    sent: Result<Vec<usize>, crate::error::QueueError>,
    what: &str,
) {
    let failed = sent.unwrap_or_else(|error| {
        tracing::error!(%error, "could not {what}; they come back after the visibility timeout");
        (0..at.len()).collect()
    });
    for index in failed {
        if let Some(&record) = at.get(index) {
            settled[record] = false;
        }
    }
}

fn circuit_open(health: &EndpointHealth) -> Facts {
    let until = health
        .circuit_open_until
        .map(rfc3339_from_millis)
        .unwrap_or_default();
    Facts::unsent(
        Outcome::CircuitOpen,
        ErrorClass::CircuitOpen,
        format!(
            "not sent: the endpoint's circuit is open until {until} after {} consecutive failures",
            health.failure_streak
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::embedded::{LocalCipher, MemoryStore};
    use crate::domain::id::MessageId;
    use crate::metrics::Metrics;

    fn decided(endpoint: &str, outcome: Outcome, status: Option<u16>) -> Decided {
        let attempt = AttemptRecord {
            org: OrgId::parse("org_a").unwrap(),
            endpoint_id: crate::domain::id::EndpointId::parse(endpoint).unwrap(),
            message_id: MessageId::generate().unwrap(),
            attempt: 1,
            at: "2030-01-01T00:00:01.000Z".into(),
            outcome,
            status_code: status,
            error_class: None,
            error: None,
            latency_ms: 40,
            response_body: None,
            trigger: Trigger::Scheduled,
            expires_at: 0,
        };
        Decided {
            record: QueueRecord {
                queue_message_id: "q".into(),
                receipt_handle: "r".into(),
                receive_count: 1,
                body: String::new(),
            },
            settle: Settle::Acknowledge,
            log: Some(LogEntry {
                attempt,
                message: None,
            }),
        }
    }

    #[test]
    fn a_group_makes_one_emf_line_per_endpoint_and_outcome_not_per_attempt() {
        let mut config = DeliveryConfig::from_source(&|_: &str| None).unwrap();
        config.metrics = Metrics::in_memory("Test");
        let deliverer =
            Deliverer::new(MemoryStore::new(), LocalCipher::generate().unwrap(), config).unwrap();
        let (one, two) = (
            "ep_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "ep_01ARZ3NDEKTSV4RRFFQ69G5FAW",
        );
        let group = [
            decided(one, Outcome::Delivered, Some(200)),
            decided(one, Outcome::Delivered, Some(204)),
            decided(one, Outcome::Delivered, Some(200)),
            decided(one, Outcome::Failed, Some(500)),
            decided(two, Outcome::Delivered, Some(200)),
            decided(two, Outcome::CircuitOpen, None),
        ];
        deliverer.emit_metrics(&group);
        let lines: Vec<serde_json::Value> = deliverer
            .config
            .metrics
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        let delivered_to_one = lines
            .iter()
            .find(|l| l["endpointId"] == one && l["Outcome"] == "delivered")
            .unwrap();
        assert_eq!(delivered_to_one["Attempts"], 3.0);
        assert_eq!(
            delivered_to_one["AttemptLatency"],
            json!([40.0, 40.0, 40.0])
        );
        let open = lines
            .iter()
            .find(|l| l["Outcome"] == "circuitOpen")
            .unwrap();
        assert!(open.get("AttemptLatency").is_none(), "nothing was sent");
    }

    #[test]
    fn batched_sends_stay_within_ten_entries_and_the_batch_size() {
        assert_eq!(
            send_groups(std::iter::repeat_n(100, 25)),
            [0..10, 10..20, 20..25]
        );
        // 64 KiB bodies: three fit SQS's 256 KiB batch with room for the request, four do not.
        let big = 64 * 1024;
        assert_eq!(send_groups(std::iter::repeat_n(big, 7)), [0..3, 3..6, 6..7]);
        assert_eq!(send_groups([big * 5, 10, 10].into_iter()), [0..1, 1..3]);
        assert!(send_groups(std::iter::empty()).is_empty());
    }
}
