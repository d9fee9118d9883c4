//! Narrow traits between the domain and the world. Each has an `aws` and an `embedded` adapter,
//! and both pass the same contract tests (`tests/contract_*.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use crate::domain::booking::Booking;
use crate::domain::delivery::{
    AttemptRecord, DeadLetter, DisabledReason, EndpointHealth, HealthChange, LogEntry,
    MessageRecord, MessageState, Outcome,
};
use crate::domain::endpoint::{Endpoint, EndpointChanges, PreviousSecret};
use crate::domain::event::{Event, EventType, PendingEvent};
use crate::domain::id::{BookingId, EndpointId, EventId, MessageId};
use crate::domain::idempotency::{IdempotencyCompletion, IdempotencyRecord};
use crate::domain::queue_body::QueueBody;
use crate::domain::OrgId;
use crate::error::{CipherError, QueueError, StoreError};

/// Largest page a list may ask for.
pub const MAX_PAGE_SIZE: usize = 100;
/// Most messages one `enqueue` call takes (the SQS batch limit).
pub const MAX_ENQUEUE_BATCH: usize = 10;
/// Most bytes of message bodies in one `enqueue` call (the SQS batch payload limit, 256 KiB,
/// less room for the request around them).
pub const MAX_ENQUEUE_BYTES: usize = 250 * 1024;

/// One page of an org's endpoints, oldest first.
#[derive(Debug)]
pub struct EndpointPage {
    pub endpoints: Vec<Endpoint>,
    /// Where the next page starts (after this id), when there is one.
    pub next_after: Option<EndpointId>,
}

/// What [`EndpointStore::get_endpoints`] answers: per key read, the endpoint if there is one.
pub type EndpointsRead = HashMap<(OrgId, EndpointId), Option<Endpoint>>;

/// Endpoints, always addressed through their org: another org's item cannot even be named.
pub trait EndpointStore: Send + Sync {
    /// Stores a new endpoint unless its org already has `max_per_org` endpoints
    /// (`StoreError::LimitReached`), atomically with the org's endpoint count, so concurrent
    /// creates cannot pass the cap together. `StoreError::Conflict` if its id is taken by
    /// another item (the same item again, as an SDK retry after a lost answer sends it, is a
    /// success), or if `completion`'s claim is no longer its request's. With `completion`,
    /// the answer is stored under its key in the same write.
    fn insert_endpoint(
        &self,
        endpoint: &Endpoint,
        max_per_org: usize,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
    ) -> impl Future<Output = Result<Option<Endpoint>, StoreError>> + Send;

    /// Several endpoints in one read (DynamoDB `BatchGetItem`, strongly consistent): for each
    /// key answered, the endpoint or `None` when there is none. A key missing from the answer
    /// was not read (DynamoDB left it unprocessed, throttled, after retries): its caller reads
    /// it on its own. Any number of keys; duplicates are read once.
    fn get_endpoints(
        &self,
        keys: &[(OrgId, EndpointId)],
    ) -> impl Future<Output = Result<EndpointsRead, StoreError>> + Send;

    /// Up to `limit` endpoints after `after`, in id (creation) order.
    fn list_endpoints(
        &self,
        org: &OrgId,
        limit: usize,
        after: Option<&EndpointId>,
    ) -> impl Future<Output = Result<EndpointPage, StoreError>> + Send;

    /// Applies `changes` to an existing endpoint; `None` when there is no such endpoint in `org`.
    /// `disabled: true` records the reason `manual` and the time; `disabled: false` clears
    /// both and resets the endpoint's health (a fresh start, circuit closed).
    fn update_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
        changes: &EndpointChanges,
        updated_at: &str,
    ) -> impl Future<Output = Result<Option<Endpoint>, StoreError>> + Send;

    /// Deletes an endpoint (and counts it out of its org's endpoints); `false` when there was
    /// no such endpoint in `org`. A retry of a delete that happened, after its answer was lost,
    /// is still `true`.
    fn delete_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Applies a health change atomically (see [`HealthChange`]) and returns the health after
    /// it; `None` when there is no such endpoint, or when the change's condition did not hold
    /// (the circuit already open, the probe already taken).
    fn change_health(
        &self,
        org: &OrgId,
        id: &EndpointId,
        change: HealthChange,
    ) -> impl Future<Output = Result<Option<EndpointHealth>, StoreError>> + Send;

    /// Disables an enabled endpoint with `reason` at `at` (RFC 3339). With
    /// `failing_since_before` (Unix ms), only if its current failure streak began before then,
    /// so a success that lands meanwhile keeps it enabled. `false` when nothing changed.
    fn disable_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
        reason: DisabledReason,
        at: &str,
        failing_since_before: Option<u64>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Replaces an endpoint's secret by `new_ciphertext`, keeping `previous` as its previous
    /// secrets, if its secret is still `current_ciphertext` (what the rotation was made from).
    /// `false` when there is no such endpoint; `StoreError::Conflict` when its secret changed
    /// meanwhile (another rotation) or `completion`'s claim is no longer its request's. With
    /// `completion`, the answer is stored under its key in the same write.
    #[allow(clippy::too_many_arguments)]
    fn rotate_secret(
        &self,
        org: &OrgId,
        id: &EndpointId,
        current_ciphertext: &[u8],
        new_ciphertext: &[u8],
        previous: &[PreviousSecret],
        rotated_at: &str,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes previous secrets whose grace period is over: keeps only `kept`, if the current
    /// secret is still `current_ciphertext` (a rotation meanwhile wrote its own list). `false`
    /// when nothing changed.
    fn forget_expired_secrets(
        &self,
        org: &OrgId,
        id: &EndpointId,
        current_ciphertext: &[u8],
        kept: &[PreviousSecret],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every enabled endpoint of `org` subscribed to `event_type`, all pages read.
    fn subscribers(
        &self,
        org: &OrgId,
        event_type: EventType,
    ) -> impl Future<Output = Result<Vec<EndpointId>, StoreError>> + Send;
}

pub trait BookingStore: Send + Sync {
    /// Stores a booking together with the event that announces it, atomically, so the event
    /// cannot be lost between the two: it waits in the outbox until it is published. With
    /// `completion`, the answer is stored under its idempotency key in the same write.
    /// `StoreError::Conflict` when the booking or event id is taken, or `completion`'s claim
    /// is no longer its request's.
    fn insert_booking(
        &self,
        org: &OrgId,
        booking: &Booking,
        event: &Event,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_booking(
        &self,
        org: &OrgId,
        id: &BookingId,
    ) -> impl Future<Output = Result<Option<Booking>, StoreError>> + Send;

    /// Writes a changed booking (same id) with the event that announces the change, atomically,
    /// if the stored booking is still `confirmed` and last changed at `read_updated_at` (the
    /// `updatedAt` the change was made from): two changes at once cannot both win, and a
    /// cancelled booking stays as it is. `StoreError::Conflict` otherwise (the booking gone
    /// included), or when `completion`'s claim is no longer its request's.
    fn replace_booking(
        &self,
        org: &OrgId,
        booking: &Booking,
        read_updated_at: &str,
        event: &Event,
        completion: Option<&IdempotencyCompletion>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// `Idempotency-Key` records, under their org, for [`IDEMPOTENCY_WINDOW`](crate::domain::idempotency::IDEMPOTENCY_WINDOW).
pub trait IdempotencyStore: Send + Sync {
    /// Claims a key for a request: writes `claim` unless a record of the key is there and not
    /// [free](IdempotencyRecord::is_free) at `now_millis`. `None` when the claim is written;
    /// the record in the way otherwise.
    fn claim_idempotency_key(
        &self,
        org: &OrgId,
        claim: &IdempotencyRecord,
        now_millis: u64,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// The record of a key, when there is one and it has not expired (tests and operators:
    /// the API reads a record through [`IdempotencyStore::claim_idempotency_key`]).
    fn idempotency_record(
        &self,
        org: &OrgId,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// Stores a claim's answer; `StoreError::Conflict` when the claim is no longer its
    /// request's.
    fn complete_idempotency_key(
        &self,
        org: &OrgId,
        completion: &IdempotencyCompletion,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Gives a claim back (its request failed), so the key may be tried again; nothing when it
    /// is no longer `token`'s.
    fn release_idempotency_key(
        &self,
        org: &OrgId,
        key_id: &str,
        token: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Events recorded but not yet (known to be) fully enqueued.
pub trait EventOutbox: Send + Sync {
    /// Up to `limit` pending events due before `due_before_millis`, earliest due first, across
    /// all orgs (this is the relay's view, never a request's). An event is due from its
    /// creation, or, once set aside, from the time [`EventOutbox::set_aside_event`] gave.
    fn pending_events(
        &self,
        due_before_millis: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PendingEvent>, StoreError>> + Send;

    /// Records a failed relay of a pending event and moves it behind every event due before
    /// `due_at_millis`, so one event that keeps failing cannot hold back the others.
    /// `relay_failures` counts the failures so far, this one included. An event no longer in
    /// the outbox (cleared meanwhile) stays cleared.
    fn set_aside_event(
        &self,
        org: &OrgId,
        id: &EventId,
        relay_failures: u32,
        due_at_millis: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores an event on its own (no booking goes with it: the platform's operational events),
    /// to be published now or by the relay.
    fn add_event(
        &self,
        org: &OrgId,
        event: &Event,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes an event from the outbox once every message for it is enqueued.
    fn clear_event(
        &self,
        org: &OrgId,
        id: &EventId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// One page of an endpoint's messages.
#[derive(Debug, Default)]
pub struct MessagePage {
    pub messages: Vec<MessageRecord>,
    /// Where the next page starts (after this message), when there is one.
    pub next_after: Option<MessageId>,
}

/// One page of an endpoint's attempts.
#[derive(Debug, Default)]
pub struct AttemptPage {
    pub attempts: Vec<AttemptRecord>,
    /// Where the next page starts: after the attempt with this [`AttemptRecord::sort_key`].
    pub next_after: Option<String>,
}

/// The delivery log: every attempt, and where each message stands, under its org. Entries
/// expire at their `expires_at` (the table's TTL); an expired one is never returned.
pub trait DeliveryLog: Send + Sync {
    /// Writes attempt records and the message states they lead to, in as few calls as the
    /// store allows (DynamoDB: `BatchWriteItem`, 25 items a call). Writing an attempt again
    /// (the same message and number, after a crash) replaces it.
    fn record(&self, entries: &[LogEntry]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The attempts of one message, in attempt order.
    fn attempts_of(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        message_id: &MessageId,
    ) -> impl Future<Output = Result<Vec<AttemptRecord>, StoreError>> + Send;

    /// Marks a message `delivered` after a manual attempt succeeded, whatever its state, if it
    /// is in the log. Only the state and the last status change, so a scheduled attempt's write
    /// around it is not undone.
    fn note_manual_delivery(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        message_id: &MessageId,
        status: u16,
        at: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims a `failed` or `dead` message for a recovery: marks it `pending` (next attempt
    /// `at`), unless its state or attempts changed since `record` was read. `false` when they
    /// had: two recoveries, or a recovery and the worker, never both act on one message.
    fn claim_for_recovery(
        &self,
        record: &MessageRecord,
        at: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives a claimed message its state back, when it could not be queued.
    fn release_recovery(
        &self,
        record: &MessageRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes message states on their own (seeding, tests).
    fn record_messages(
        &self,
        records: &[MessageRecord],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` of an endpoint's messages, newest first, after `after`; only those in
    /// `state` when it is given.
    fn list_messages(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        state: Option<MessageState>,
        limit: usize,
        after: Option<&MessageId>,
    ) -> impl Future<Output = Result<MessagePage, StoreError>> + Send;

    /// Up to `limit` of an endpoint's attempts, newest first (newest message first, its latest
    /// attempt first), after the attempt whose sort key is `after`; only those of `message_id`,
    /// or with `outcome`, when given.
    fn list_attempts(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        message_id: Option<&MessageId>,
        outcome: Option<Outcome>,
        limit: usize,
        after: Option<&str>,
    ) -> impl Future<Output = Result<AttemptPage, StoreError>> + Send;

    /// Up to `limit` `failed` and `dead` messages of an endpoint whose event time is in
    /// `[since_millis, until_millis)`, oldest first, after `after`.
    fn recoverable_messages(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        since_millis: u64,
        until_millis: u64,
        after: Option<&MessageId>,
        limit: usize,
    ) -> impl Future<Output = Result<MessagePage, StoreError>> + Send;

    /// Where one message stands; `None` before its first attempt or after it expired.
    fn message_record(
        &self,
        org: &OrgId,
        endpoint_id: &EndpointId,
        message_id: &MessageId,
    ) -> impl Future<Output = Result<Option<MessageRecord>, StoreError>> + Send;
}

/// Whom a secret belongs to. Bound into its ciphertext, so a ciphertext moved to another
/// endpoint's row or another org does not decrypt.
#[derive(Clone, Copy, Debug)]
pub struct SecretContext<'a> {
    pub org_id: &'a OrgId,
    pub endpoint_id: &'a EndpointId,
}

pub trait SecretCipher: Send + Sync {
    fn encrypt(
        &self,
        plaintext: &[u8],
        context: SecretContext<'_>,
    ) -> impl Future<Output = Result<Vec<u8>, CipherError>> + Send;

    fn decrypt(
        &self,
        ciphertext: &[u8],
        context: SecretContext<'_>,
    ) -> impl Future<Output = Result<Vec<u8>, CipherError>> + Send;
}

/// The producer side of the delivery queue. It carries message bodies (encoded
/// [`DeliveryMessage`](crate::domain::event::DeliveryMessage)s, SQS-safe by construction):
/// the publisher encodes each once, and sizes its batches by them.
pub trait DeliveryQueue: Send + Sync {
    /// Sends up to [`MAX_ENQUEUE_BATCH`] bodies; returns the indexes of those that failed.
    fn enqueue(
        &self,
        bodies: &[QueueBody],
    ) -> impl Future<Output = Result<Vec<usize>, QueueError>> + Send;
}

/// Most delay a queue message can be sent with (SQS `DelaySeconds`: 900).
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(900);

/// The consumer side: how the delivery worker settles what it received. Each call takes up to
/// [`MAX_ENQUEUE_BATCH`] items and returns the indexes of those that failed.
pub trait QueueConsumer: Send + Sync {
    /// Deletes received messages, named by their receipt handles (a stale handle is no
    /// failure).
    fn acknowledge(
        &self,
        receipt_handles: &[&str],
    ) -> impl Future<Output = Result<Vec<usize>, QueueError>> + Send;

    /// Sends bodies to the delivery queue, each hidden for its delay (at most
    /// [`MAX_QUEUE_DELAY`]; longer is cut to it). A rescheduled message is a new queue
    /// message: it leaves the in-flight pool at once and its receive count starts over.
    fn reschedule(
        &self,
        messages: &[(QueueBody, Duration)],
    ) -> impl Future<Output = Result<Vec<usize>, QueueError>> + Send;

    /// Parks messages that will not be retried in the dead-letter queue.
    fn dead_letter(
        &self,
        letters: &[DeadLetter],
    ) -> impl Future<Output = Result<Vec<usize>, QueueError>> + Send;
}
