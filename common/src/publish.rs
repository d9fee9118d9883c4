//! Publishing an event: one delivery message per subscribed endpoint of the org, sent to the
//! delivery queue in batches. Any producer calls [`publish`]; a producer that must not lose the
//! event records it in the outbox with its own write first and calls [`publish_event`], and the
//! relay ([`relay_pending_events`]) publishes whatever the outbox still holds later.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use serde_json::Value;

use crate::domain::event::{Event, EventType};
use crate::domain::id::RandomError;
use crate::domain::OrgId;
use crate::error::StoreError;
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
/// Batches go out concurrently; messages a batch could not send are retried once.
pub async fn publish_event(
    store: &impl EndpointStore,
    queue: &impl DeliveryQueue,
    org: &OrgId,
    event: &Event,
) -> Result<PublishReport, PublishError> {
    let bodies = store
        .subscribers(org, event.event_type)
        .await?
        .into_iter()
        .map(|endpoint_id| serde_json::to_string(&event.message_for(org, endpoint_id)))
        .collect::<Result<Vec<String>, _>>()?;
    let total = bodies.len();
    let (unsent, _) = send_all(queue, bodies).await;
    let (unsent, last_error) = send_all(queue, unsent).await;
    if !unsent.is_empty() {
        return Err(PublishError::NotEnqueued {
            failed: unsent.len(),
            total,
            last_error: last_error.unwrap_or_else(|| "refused by the queue".into()),
        });
    }
    Ok(PublishReport { endpoints: total })
}

/// Sends in concurrent batches; returns what was not sent and the last error seen.
async fn send_all(
    queue: &impl DeliveryQueue,
    bodies: Vec<String>,
) -> (Vec<String>, Option<String>) {
    let batches = batches(&bodies);
    let results = join_all(batches.iter().map(|batch| queue.enqueue(batch))).await;
    let mut unsent = Vec::new();
    let mut last_error = None;
    for (batch, result) in batches.iter().zip(results) {
        match result {
            Ok(failed) => unsent.extend(failed.into_iter().filter_map(|i| batch.get(i).cloned())),
            Err(error) => {
                last_error = Some(error.to_string());
                unsent.extend(batch.iter().cloned());
            }
        }
    }
    (unsent, last_error)
}

/// Splits bodies into batches SQS accepts: at most [`MAX_ENQUEUE_BATCH`] messages and
/// [`MAX_ENQUEUE_BYTES`] of bodies each (a single larger body goes alone, for SQS to judge).
fn batches(bodies: &[String]) -> Vec<&[String]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, body) in bodies.iter().enumerate() {
        let body = body.len();
        let full = index - start == MAX_ENQUEUE_BATCH
            || (index > start && bytes + body > MAX_ENQUEUE_BYTES);
        if full {
            batches.push(&bodies[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += body;
    }
    if start < bodies.len() {
        batches.push(&bodies[start..]);
    }
    batches
}

/// What one relay run did.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RelayReport {
    pub published: usize,
    pub failed: usize,
}

/// Most events one relay run takes from the outbox.
pub const RELAY_BATCH: usize = 100;
/// Events a relay run publishes at once.
const RELAY_CONCURRENCY: usize = 8;
/// How long one relay run works, inside the relay function's 50 s timeout.
pub const RELAY_TIME_BUDGET: Duration = Duration::from_secs(40);

/// Publishes the events that have waited in the outbox longer than `min_age` (the producer's
/// own publish failed or it stopped before clearing them), then clears each one published.
pub async fn relay_pending_events(
    store: &(impl EndpointStore + EventOutbox),
    queue: &impl DeliveryQueue,
    min_age: Duration,
) -> Result<RelayReport, StoreError> {
    let cutoff = unix_millis_now().saturating_sub(min_age.as_millis() as u64);
    let pending = store.pending_events(cutoff, RELAY_BATCH).await?;
    // What is not relayed within the budget waits for the next run (it stays in the outbox).
    let deadline = tokio::time::Instant::now() + RELAY_TIME_BUDGET;
    let outcomes: Vec<bool> = futures_util::stream::iter(pending)
        .map(|(org, event)| async move {
            tokio::time::timeout_at(deadline, relay_one(store, queue, &org, &event))
                .await
                .unwrap_or(false)
        })
        .buffer_unordered(RELAY_CONCURRENCY)
        .collect()
        .await;
    let published = outcomes.iter().filter(|ok| **ok).count();
    Ok(RelayReport {
        published,
        failed: outcomes.len() - published,
    })
}

/// Publishes one pending event and clears it; whether it was published.
async fn relay_one(
    store: &(impl EndpointStore + EventOutbox),
    queue: &impl DeliveryQueue,
    org: &OrgId,
    event: &Event,
) -> bool {
    match publish_event(store, queue, org, event).await {
        Ok(published) => {
            if let Err(error) = store.clear_event(org, &event.id).await {
                tracing::warn!(event_id = %event.id, %error, "relayed but not cleared; the next run publishes it again with the same message ids");
            }
            tracing::info!(
                org_id = %org, event_id = %event.id, endpoints = published.endpoints,
                "relayed {} {} from the outbox", event.event_type, event.id
            );
            true
        }
        Err(error) => {
            tracing::error!(org_id = %org, event_id = %event.id, %error, "relay could not publish {}; it stays in the outbox", event.id);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(count: usize, bytes: usize) -> Vec<String> {
        (0..count).map(|_| "x".repeat(bytes)).collect()
    }

    #[test]
    fn batches_hold_at_most_ten_messages() {
        let sizes: Vec<usize> = batches(&bodies(23, 10)).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![10, 10, 3]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn batches_stay_under_the_payload_limit() {
        let sizes: Vec<usize> = batches(&bodies(5, 100 * 1024))
            .iter()
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let huge = ["x".repeat(300 * 1024), "x".to_owned()];
        let sizes: Vec<usize> = batches(&huge).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![1, 1], "an oversized message goes alone");
    }
}
