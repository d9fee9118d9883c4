//! Publishing an event: one delivery message per subscribed endpoint of the org, sent to the
//! delivery queue in batches. Any producer calls [`publish`]; a producer that must not lose the
//! event records it in the outbox with its own write first and calls [`publish_event`], and the
//! relay ([`relay_pending_events`]) publishes whatever the outbox still holds later.

use std::collections::HashSet;
use std::iter::Peekable;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde_json::Value;

use crate::domain::event::{Event, EventType, PendingEvent};
use crate::domain::id::RandomError;
use crate::domain::queue_body::QueueBody;
use crate::domain::OrgId;
use crate::error::StoreError;
use crate::metrics::{MetricSet, Unit};
use crate::ports::{
    DeliveryQueue, EndpointStore, EventOutbox, MAX_ENQUEUE_BATCH, MAX_ENQUEUE_BYTES,
};
use crate::time::unix_millis_now;

/// What a publish did.
#[derive(Debug, PartialEq, Eq)]
pub struct PublishReport {
    /// Subscribed, enabled endpoints found; a message was enqueued for each.
    pub endpoints: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("could not find the subscribers: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("a message could not be encoded: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("{failed} of {total} messages were not enqueued (last error: {last_error})")]
    NotEnqueued {
        failed: usize,
        total: usize,
        last_error: String,
    },
}

/// Batches of one fan-out in flight at once. With the per-org endpoint cap this bounds a
/// publish's memory to a few batches of bodies, whatever the number of subscribers.
const FANOUT_CONCURRENCY: usize = 4;

/// Sends `event_type` with `data` to every enabled endpoint of `org` subscribed to it.
pub async fn publish(
    store: &impl EndpointStore,
    queue: &impl DeliveryQueue,
    org: &OrgId,
    event_type: EventType,
    data: Value,
) -> Result<PublishReport, PublishError> {
    publish_event(store, queue, org, &Event::new(event_type, data)?).await
}

/// Sends an existing event. Message ids derive from the event and the endpoint, so publishing
/// the same event twice enqueues messages receivers can de-duplicate by `webhook-id`.
/// Bodies are encoded as batches are sent, [`FANOUT_CONCURRENCY`] batches at a time, and a
/// batch retries what it could not send once, itself: at most that many batches of bodies are
/// in memory, whether the queue takes them or not.
pub async fn publish_event(
    store: &impl EndpointStore,
    queue: &impl DeliveryQueue,
    org: &OrgId,
    event: &Event,
) -> Result<PublishReport, PublishError> {
    let mut subscribers = store.subscribers(org, event.event_type).await?;
    if let Some(subject) = event.subject_endpoint() {
        subscribers.retain(|id| *id != subject);
    }
    let total = subscribers.len();
    // Encoding a JSON value cannot fail in practice; if it ever does, the fan-out stops there.
    let encoding_error = OnceLock::new();
    let bodies = subscribers.into_iter().map_while(|endpoint_id| {
        QueueBody::encode(&event.message_for(org, endpoint_id))
            .map_err(|e| encoding_error.set(e))
            .ok()
    });
    let (failed, last_error) = enqueue_all(queue, bodies).await;
    if let Some(error) = encoding_error.into_inner() {
        return Err(PublishError::Encoding(error));
    }
    if failed > 0 {
        return Err(PublishError::NotEnqueued {
            failed,
            total,
            last_error: last_error.unwrap_or_else(|| "refused by the queue".into()),
        });
    }
    Ok(PublishReport { endpoints: total })
}

/// Publishes a stored event, then clears it from the outbox. A clear that fails is logged, not
/// returned: the event was published, and the relay publishing it again sends the same
/// message ids, which receivers de-duplicate.
pub async fn publish_and_clear(
    store: &(impl EndpointStore + EventOutbox),
    queue: &impl DeliveryQueue,
    org: &OrgId,
    event: &Event,
) -> Result<PublishReport, PublishError> {
    let report = publish_event(store, queue, org, event).await?;
    if let Err(error) = store.clear_event(org, &event.id).await {
        tracing::warn!(event_id = %event.id, %error, "published but not cleared; the relay publishes it again with the same message ids");
    }
    Ok(report)
}

/// The metrics of one publish: `EventsPublished`, `MessagesEnqueued` and `PublishFailures`,
/// zeros included so each is continuous, with the org, event and type as properties;
/// `enqueued` is `None` when the publish failed.
pub fn publish_metrics(org: &OrgId, event: &Event, enqueued: Option<usize>) -> MetricSet {
    let mut set = MetricSet::default();
    set.property("orgId", org.as_str());
    set.property("eventId", event.id.as_str());
    set.property("eventType", event.event_type.as_str());
    let published = enqueued.is_some();
    set.add(
        "EventsPublished",
        Unit::Count,
        f64::from(u8::from(published)),
    );
    set.add(
        "MessagesEnqueued",
        Unit::Count,
        enqueued.unwrap_or(0) as f64,
    );
    set.add(
        "PublishFailures",
        Unit::Count,
        f64::from(u8::from(!published)),
    );
    set
}

/// Sends every body, in batches SQS accepts, [`FANOUT_CONCURRENCY`] batches at once, each
/// retrying once what the queue did not take. Bodies are drawn as batches are sent, so at most
/// that many batches are in memory. Returns how many bodies are left unsent and the last error
/// seen.
pub async fn enqueue_all(
    queue: &impl DeliveryQueue,
    bodies: impl Iterator<Item = QueueBody>,
) -> (usize, Option<String>) {
    let mut results = stream::iter(Batches::new(bodies))
        .map(|batch| send_batch(queue, batch))
        .buffer_unordered(FANOUT_CONCURRENCY);
    let (mut failed, mut last_error) = (0, None);
    while let Some((unsent, error)) = results.next().await {
        failed += unsent;
        last_error = error.or(last_error);
    }
    (failed, last_error)
}

/// Sends one batch, and once more what the queue did not take; how many bodies are left unsent
/// and the last error seen.
async fn send_batch(queue: &impl DeliveryQueue, batch: Vec<QueueBody>) -> (usize, Option<String>) {
    let mut pending = batch;
    let mut last_error = None;
    for _ in 0..2 {
        match queue.enqueue(&pending).await {
            Ok(failed) if failed.is_empty() => return (0, last_error),
            Ok(failed) => {
                pending = failed
                    .into_iter()
                    .filter_map(|i| pending.get(i).cloned())
                    .collect();
            }
            Err(error) => last_error = Some(error.to_string()),
        }
    }
    (pending.len(), last_error)
}

/// Groups bodies into batches SQS accepts: at most [`MAX_ENQUEUE_BATCH`] messages and
/// [`MAX_ENQUEUE_BYTES`] of bodies each (a single larger body goes alone, for SQS to judge).
struct Batches<I: Iterator<Item = QueueBody>> {
    bodies: Peekable<I>,
}

impl<I: Iterator<Item = QueueBody>> Batches<I> {
    fn new(bodies: I) -> Self {
        Self {
            bodies: bodies.peekable(),
        }
    }
}

impl<I: Iterator<Item = QueueBody>> Iterator for Batches<I> {
    type Item = Vec<QueueBody>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = self.bodies.next()?;
        let mut bytes = first.len();
        let mut batch = vec![first];
        while batch.len() < MAX_ENQUEUE_BATCH {
            let fits = self
                .bodies
                .peek()
                .is_some_and(|next| bytes + next.len() <= MAX_ENQUEUE_BYTES);
            match self.bodies.next_if(|_| fits) {
                Some(body) => {
                    bytes += body.len();
                    batch.push(body);
                }
                None => break,
            }
        }
        Some(batch)
    }
}

/// What one relay run did.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayReport {
    pub published: usize,
    /// Events whose publish failed; each was set aside with a longer backoff.
    pub failed: usize,
    /// Whether the run stopped at its time budget with events still due (the next run goes on).
    pub out_of_time: bool,
    /// Events the run found due (each read takes at most [`RELAY_BATCH`]).
    pub pending: usize,
    /// Messages the published events were fanned out to.
    pub messages: usize,
    /// Age of the oldest event due at the run's start, in seconds; 0 when none was.
    pub oldest_age_secs: u64,
}

impl RelayReport {
    /// The run's metrics, one EMF line even when nothing was due (so an alarm on the outbox
    /// age sees a relay that runs): `OutboxPending`, `OutboxOldestAgeSeconds`,
    /// `EventsPublished`, `MessagesEnqueued`, `PublishFailures`.
    pub fn metrics(&self) -> MetricSet {
        let mut set = MetricSet::default();
        set.add("OutboxPending", Unit::Count, self.pending as f64);
        set.add(
            "OutboxOldestAgeSeconds",
            Unit::Seconds,
            self.oldest_age_secs as f64,
        );
        set.add("EventsPublished", Unit::Count, self.published as f64);
        set.add("MessagesEnqueued", Unit::Count, self.messages as f64);
        set.add("PublishFailures", Unit::Count, self.failed as f64);
        set.property("source", "relay");
        set
    }
}

/// Events one outbox read takes; a run reads again until nothing is due or its time is up.
pub const RELAY_BATCH: usize = 100;
/// Events a relay run publishes at once.
const RELAY_CONCURRENCY: usize = 16;
/// How long one relay run works, inside the relay function's 50 s timeout.
pub const RELAY_TIME_BUDGET: Duration = Duration::from_secs(40);
/// The first set-aside after a failed relay; each further failure doubles it, up to
/// [`RELAY_MAX_BACKOFF`]. Events still pending after 14 days expire (the outbox TTL).
pub const RELAY_FIRST_BACKOFF: Duration = Duration::from_secs(30);
pub const RELAY_MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How long an event is set aside after its `relay_failures`-th failed relay.
pub fn relay_backoff(relay_failures: u32) -> Duration {
    let doublings = relay_failures.saturating_sub(1).min(16);
    RELAY_FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(RELAY_MAX_BACKOFF)
}

/// Publishes the events that have been due in the outbox for longer than `min_age` (the
/// producer's own publish failed or it stopped before clearing them), then clears each one
/// published. It reads and publishes batch after batch until nothing is due or
/// [`RELAY_TIME_BUDGET`] is spent, so a backlog drains at the queue's speed. An event whose
/// publish fails is set aside with a growing backoff ([`relay_backoff`]), so the events behind
/// it pass it.
pub async fn relay_pending_events(
    store: &(impl EndpointStore + EventOutbox),
    queue: &impl DeliveryQueue,
    min_age: Duration,
) -> Result<RelayReport, StoreError> {
    let deadline = tokio::time::Instant::now() + RELAY_TIME_BUDGET;
    let mut report = RelayReport::default();
    // An event seen once in this run is not taken again by it: one whose clear or set-aside
    // failed stays due, and must not be published over and over until the budget is spent.
    let mut seen = HashSet::new();
    let mut first_read = true;
    loop {
        let cutoff = unix_millis_now().saturating_sub(min_age.as_millis() as u64);
        let pending = store.pending_events(cutoff, RELAY_BATCH).await?;
        let last_read = pending.len() < RELAY_BATCH;
        let fresh: Vec<PendingEvent> = pending
            .into_iter()
            .filter(|p| seen.insert(p.event.id.clone()))
            .collect();
        if first_read {
            first_read = false;
            // Earliest due first.
            let oldest = fresh.iter().map(|p| p.event.id.created_millis()).min();
            report.oldest_age_secs = oldest.map_or(0, |created| {
                unix_millis_now().saturating_sub(created) / 1000
            });
        }
        report.pending += fresh.len();
        if fresh.is_empty() {
            return Ok(report);
        }
        let outcomes: Vec<Relayed> = stream::iter(fresh)
            .map(|pending| async move {
                tokio::time::timeout_at(deadline, relay_one(store, queue, &pending))
                    .await
                    .unwrap_or(Relayed::OutOfTime)
            })
            .buffer_unordered(RELAY_CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Relayed::Published(messages) => {
                    report.published += 1;
                    report.messages += messages;
                }
                Relayed::Failed => report.failed += 1,
                Relayed::OutOfTime => report.out_of_time = true,
            }
        }
        if report.out_of_time || tokio::time::Instant::now() >= deadline {
            report.out_of_time = true;
            return Ok(report);
        }
        if last_read {
            return Ok(report);
        }
    }
}

enum Relayed {
    /// Published to this many endpoints.
    Published(usize),
    Failed,
    /// The run's budget ran out first; the event stays due for the next run.
    OutOfTime,
}

/// Publishes one pending event and clears it, or sets it aside.
async fn relay_one(
    store: &(impl EndpointStore + EventOutbox),
    queue: &impl DeliveryQueue,
    pending: &PendingEvent,
) -> Relayed {
    let PendingEvent {
        org,
        event,
        relay_failures,
    } = pending;
    match publish_and_clear(store, queue, org, event).await {
        Ok(published) => {
            tracing::info!(
                org_id = %org, event_id = %event.id, endpoints = published.endpoints,
                trace_id = event.trace.as_ref().map_or("", |t| t.trace_id()),
                "relayed {} {} from the outbox", event.event_type, event.id
            );
            Relayed::Published(published.endpoints)
        }
        Err(error) => {
            let relay_failures = relay_failures + 1;
            let backoff = relay_backoff(relay_failures);
            let due_at = unix_millis_now() + backoff.as_millis() as u64;
            // The field name is what the relay's log metric filter (template.yaml) counts.
            tracing::error!(
                org_id = %org, event_id = %event.id, relay_failures, %error,
                "relay could not publish {} (failure {relay_failures}); set aside for {}s", event.id, backoff.as_secs()
            );
            if let Err(error) = store
                .set_aside_event(org, &event.id, relay_failures, due_at)
                .await
            {
                tracing::error!(event_id = %event.id, %error, "could not set the event aside; it stays due");
            }
            Relayed::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(count: usize, bytes: usize) -> Vec<QueueBody> {
        // A JSON string of `bytes - 2` characters encodes to `bytes` bytes.
        (0..count)
            .map(|_| QueueBody::encode(&"x".repeat(bytes - 2)).unwrap())
            .collect()
    }

    fn sizes(bodies: Vec<QueueBody>) -> Vec<usize> {
        Batches::new(bodies.into_iter()).map(|b| b.len()).collect()
    }

    #[test]
    fn batches_hold_at_most_ten_messages() {
        assert_eq!(sizes(bodies(23, 10)), vec![10, 10, 3]);
        assert!(sizes(Vec::new()).is_empty());
    }

    #[test]
    fn batches_stay_under_the_payload_limit() {
        assert_eq!(sizes(bodies(5, 100 * 1024)), vec![2, 2, 1]);
        let mut huge = bodies(1, 300 * 1024);
        huge.extend(bodies(1, 3));
        assert_eq!(sizes(huge), vec![1, 1], "an oversized message goes alone");
    }

    #[test]
    fn batches_are_taken_lazily() {
        let taken = std::cell::Cell::new(0);
        let source = bodies(25, 10)
            .into_iter()
            .inspect(|_| taken.set(taken.get() + 1));
        let mut batches = Batches::new(source);
        assert_eq!(batches.next().map(|b| b.len()), Some(10));
        assert!(
            taken.get() <= 11,
            "one batch and at most one peeked body, not all 25"
        );
    }

    /// Refuses each body the first time it sees it (or always, when `always`), and counts
    /// what it took.
    #[derive(Default)]
    struct FirstTimeRefusingQueue {
        seen: std::sync::Mutex<std::collections::HashSet<String>>,
        taken: std::sync::atomic::AtomicUsize,
        always: bool,
    }

    impl DeliveryQueue for FirstTimeRefusingQueue {
        async fn enqueue(
            &self,
            bodies: &[QueueBody],
        ) -> Result<Vec<usize>, crate::error::QueueError> {
            if self.always {
                return Err(crate::error::QueueError::Unavailable("down".into()));
            }
            let mut seen = self.seen.lock().unwrap();
            let refused: Vec<usize> = (0..bodies.len())
                .filter(|&i| seen.insert(bodies[i].as_str().to_owned()))
                .collect();
            let taken = bodies.len() - refused.len();
            self.taken
                .fetch_add(taken, std::sync::atomic::Ordering::SeqCst);
            Ok(refused)
        }
    }

    async fn org_with_endpoints(count: usize) -> (crate::adapters::embedded::MemoryStore, OrgId) {
        let store = crate::adapters::embedded::MemoryStore::new();
        let org = OrgId::parse("org_fanout").unwrap();
        for _ in 0..count {
            let endpoint = crate::domain::endpoint::Endpoint {
                id: crate::domain::id::EndpointId::generate().unwrap(),
                org_id: org.clone(),
                url: "https://hooks.example.com/in".into(),
                events: vec![EventType::BookingCreated],
                description: String::new(),
                disabled: false,
                disabled_reason: None,
                disabled_at: None,
                health: Default::default(),
                created_at: "2030-01-01T00:00:00.000Z".into(),
                updated_at: "2030-01-01T00:00:00.000Z".into(),
                secret_ciphertext: vec![1],
                previous_secrets: Vec::new(),
                secret_rotated_at: None,
                headers: Default::default(),
            };
            store.insert_endpoint(&endpoint, 1000, None).await.unwrap();
        }
        (store, org)
    }

    #[tokio::test]
    async fn each_batch_retries_what_the_queue_refused_once() {
        let (store, org) = org_with_endpoints(25).await;
        let queue = FirstTimeRefusingQueue::default();
        let event = Event::new(EventType::BookingCreated, serde_json::json!({})).unwrap();
        let report = publish_event(&store, &queue, &org, &event).await.unwrap();
        assert_eq!(report.endpoints, 25);
        assert_eq!(queue.taken.load(std::sync::atomic::Ordering::SeqCst), 25);
    }

    #[tokio::test]
    async fn a_queue_that_is_down_fails_the_publish_with_every_message_counted() {
        let (store, org) = org_with_endpoints(25).await;
        let queue = FirstTimeRefusingQueue {
            always: true,
            ..Default::default()
        };
        let event = Event::new(EventType::BookingCreated, serde_json::json!({})).unwrap();
        match publish_event(&store, &queue, &org, &event).await {
            Err(PublishError::NotEnqueued {
                failed,
                total,
                last_error,
            }) => {
                assert_eq!((failed, total), (25, 25));
                assert!(last_error.contains("down"), "{last_error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relay_backoff_doubles_up_to_an_hour() {
        assert_eq!(relay_backoff(1), Duration::from_secs(30));
        assert_eq!(relay_backoff(2), Duration::from_secs(60));
        assert_eq!(relay_backoff(5), Duration::from_secs(480));
        assert_eq!(relay_backoff(8), Duration::from_secs(3600));
        assert_eq!(relay_backoff(u32::MAX), Duration::from_secs(3600));
    }
}
