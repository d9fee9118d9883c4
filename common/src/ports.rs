//! Narrow traits between the domain and the world. Each has an `aws` and an `embedded` adapter,
//! and both pass the same contract tests (`tests/contract_*.rs`).

use std::future::Future;
use std::time::Duration;

use crate::delivery::DeadLetter;
use crate::domain::booking::Booking;
use crate::domain::endpoint::{Endpoint, EndpointChanges};
use crate::domain::event::{Event, EventType, PendingEvent};
use crate::domain::id::{EndpointId, EventId};
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

/// Endpoints, always addressed through their org: another org's item cannot even be named.
pub trait EndpointStore: Send + Sync {
    /// Stores a new endpoint unless its org already has `max_per_org` endpoints
    /// (`StoreError::LimitReached`), atomically with the org's endpoint count, so concurrent
    /// creates cannot pass the cap together. `StoreError::Conflict` if its id is taken by
    /// another item (the same item again, as an SDK retry after a lost answer sends it, is a
    /// success).
    fn insert_endpoint(
        &self,
        endpoint: &Endpoint,
        max_per_org: usize,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
    ) -> impl Future<Output = Result<Option<Endpoint>, StoreError>> + Send;

    /// Up to `limit` endpoints after `after`, in id (creation) order.
    fn list_endpoints(
        &self,
        org: &OrgId,
        limit: usize,
        after: Option<&EndpointId>,
    ) -> impl Future<Output = Result<EndpointPage, StoreError>> + Send;

    /// Applies `changes` to an existing endpoint; `None` when there is no such endpoint in `org`.
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

    /// Every enabled endpoint of `org` subscribed to `event_type`, all pages read.
    fn subscribers(
        &self,
        org: &OrgId,
        event_type: EventType,
    ) -> impl Future<Output = Result<Vec<EndpointId>, StoreError>> + Send;
}

pub trait BookingStore: Send + Sync {
    /// Stores a booking together with the event that announces it, atomically, so the event
    /// cannot be lost between the two: it waits in the outbox until it is published.
    fn insert_booking(
        &self,
        org: &OrgId,
        booking: &Booking,
        event: &Event,
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

    /// Removes an event from the outbox once every message for it is enqueued.
    fn clear_event(
        &self,
        org: &OrgId,
        id: &EventId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
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

/// The consumer side: what the delivery worker does with a message it could not deliver.
pub trait RetryControl: Send + Sync {
    /// Makes the received message (named by its receipt handle) visible again after `delay`.
    fn retry_later(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Parks a message that will not be retried, with what is needed to replay it.
    fn dead_letter(
        &self,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}
