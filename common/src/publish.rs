//! Publishing an event: one delivery message per subscribed endpoint of the org, sent to the
//! delivery queue in batches. Any producer (bookings today) calls [`publish`].

use futures_util::future::join_all;
use serde_json::Value;

use crate::domain::event::{DeliveryMessage, EventType};
use crate::domain::id::{MessageId, RandomError};
use crate::domain::OrgId;
use crate::error::{QueueError, StoreError};
use crate::ports::{DeliveryQueue, EndpointStore, MAX_ENQUEUE_BATCH};
use crate::time::now_rfc3339;

/// What a publish did.
#[derive(Debug, PartialEq, Eq)]
pub struct PublishReport {
    /// Subscribed, enabled endpoints found.
    pub endpoints: usize,
    /// Messages the queue accepted.
    pub enqueued: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("could not find the subscribers: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("{failed} of {total} messages were not enqueued (last error: {last_error})")]
    NotEnqueued {
        failed: usize,
        total: usize,
        last_error: String,
    },
}

/// Sends `event_type` with `data` to every enabled endpoint of `org` subscribed to it.
/// Batches go out concurrently; messages a batch could not send are retried once.
pub async fn publish(
    store: &impl EndpointStore,
    queue: &impl DeliveryQueue,
    org: &OrgId,
    event_type: EventType,
    data: Value,
) -> Result<PublishReport, PublishError> {
    let endpoints = store.subscribers(org, event_type).await?;
    let timestamp = now_rfc3339();
    let messages = endpoints
        .into_iter()
        .map(|endpoint_id| {
            Ok(DeliveryMessage {
                id: MessageId::generate()?,
                org_id: org.as_str().to_owned(),
                endpoint_id,
                event_type,
                timestamp: timestamp.clone(),
                data: data.clone(),
            })
        })
        .collect::<Result<Vec<_>, RandomError>>()?;
    let total = messages.len();

    let (unsent, _) = send_all(queue, messages).await;
    let (unsent, last_error) = send_all(queue, unsent).await;
    if !unsent.is_empty() {
        return Err(PublishError::NotEnqueued {
            failed: unsent.len(),
            total,
            last_error: last_error.unwrap_or_else(|| "refused by the queue".into()),
        });
    }
    Ok(PublishReport {
        endpoints: total,
        enqueued: total,
    })
}

/// Sends in concurrent batches; returns what was not sent and the last error seen.
async fn send_all(
    queue: &impl DeliveryQueue,
    messages: Vec<DeliveryMessage>,
) -> (Vec<DeliveryMessage>, Option<String>) {
    let batches: Vec<&[DeliveryMessage]> = messages.chunks(MAX_ENQUEUE_BATCH).collect();
    let results = join_all(batches.iter().map(|batch| queue.enqueue(batch))).await;
    let mut unsent = Vec::new();
    let mut last_error = None;
    for (batch, result) in batches.iter().zip(results) {
        match result {
            Ok(failed) => unsent.extend(failed.into_iter().filter_map(|i| batch.get(i).cloned())),
            Err(error) => {
                last_error = Some(match &error {
                    QueueError::Unavailable(detail) | QueueError::Encoding(detail) => {
                        detail.clone()
                    }
                });
                unsent.extend(batch.iter().cloned());
            }
        }
    }
    (unsent, last_error)
}
