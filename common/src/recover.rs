//! Recovery (`POST /webhooks/{id}/recover`): an endpoint's `failed` and `dead` messages of a
//! time range go back on the delivery queue, each for a fresh schedule under its own
//! `webhook-id`, and are marked `pending`. It works page by page, for one run's time; what
//! remains travels as a queue message of its own (a [`RecoverTask`]) that the delivery worker
//! takes up, run after run, so a recovery of any size neither times out nor loses a message.

use std::time::Duration;

use tokio::time::Instant;

use crate::domain::delivery::{MessageRecord, MessageState, RecoverRange, RecoverTask};
use crate::domain::queue_body::QueueBody;
use crate::domain::OrgId;
use crate::error::StoreError;
use crate::ports::{DeliveryLog, DeliveryQueue, MAX_PAGE_SIZE};
use crate::publish::enqueue_all;
use crate::time::now_rfc3339;

/// How long one run recovers before it hands the rest on: inside the API function's 15 s, and
/// a small part of a delivery invocation's time.
pub const RUN_BUDGET: Duration = Duration::from_secs(5);

/// What a run did.
#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    /// Messages put back on the queue by this run.
    pub recovered: usize,
    /// Whether messages remain, handed on as a [`RecoverTask`].
    pub continued: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{unsent} messages could not be enqueued: {error}")]
    NotEnqueued { unsent: usize, error: String },
    #[error("could not encode a message: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("the recovery names no valid org")]
    InvalidOrg,
}

/// Recovers `range` page by page until it is done or `budget` is spent; then hands the rest on.
pub async fn recover(
    store: &impl DeliveryLog,
    queue: &impl DeliveryQueue,
    mut range: RecoverRange,
    budget: Duration,
) -> Result<Progress, RecoverError> {
    let org = OrgId::parse(&range.org_id).ok_or(RecoverError::InvalidOrg)?;
    let deadline = Instant::now() + budget;
    let mut recovered = 0;
    loop {
        let page = store
            .recoverable_messages(
                &org,
                &range.endpoint_id,
                range.since_millis,
                range.until_millis,
                range.after.as_ref(),
                MAX_PAGE_SIZE,
            )
            .await?;
        let now = now_rfc3339();
        let mut bodies = Vec::with_capacity(page.messages.len());
        let mut pending = Vec::with_capacity(page.messages.len());
        for record in page.messages {
            let Some(message) = record.restarted_message() else {
                tracing::warn!(message_id = %record.message_id, "not recovered: its event type is no longer in the catalogue");
                continue;
            };
            bodies.push(QueueBody::encode(&message)?);
            pending.push(MessageRecord {
                state: MessageState::Pending,
                next_attempt_at: Some(now.clone()),
                updated_at: now.clone(),
                ..record
            });
        }
        send(queue, bodies).await?;
        // After the enqueue: a failure between the two leaves a message both queued and still
        // `failed`, which a second recovery may queue again (same `webhook-id`), never lost.
        store.record_messages(&pending).await?;
        recovered += pending.len();
        let Some(after) = page.next_after else {
            return Ok(Progress {
                recovered,
                continued: false,
            });
        };
        range.after = Some(after);
        if Instant::now() >= deadline {
            send(
                queue,
                vec![QueueBody::encode(&RecoverTask { recover: range })?],
            )
            .await?;
            return Ok(Progress {
                recovered,
                continued: true,
            });
        }
    }
}

async fn send(queue: &impl DeliveryQueue, bodies: Vec<QueueBody>) -> Result<(), RecoverError> {
    match enqueue_all(queue, bodies.into_iter()).await {
        (0, _) => Ok(()),
        (unsent, error) => Err(RecoverError::NotEnqueued {
            unsent,
            error: error.unwrap_or_else(|| "refused by the queue".into()),
        }),
    }
}
