//! Recovery (`POST /webhooks/{id}/recover`): an endpoint's `failed` and `dead` messages of a
//! time range go back on the delivery queue, each for a fresh schedule under its own
//! `webhook-id`. Each is claimed first (marked `pending` only if it is still as it was read), so
//! two recoveries, or a recovery and the delivery worker, never both act on it. It works page by
//! page, for one run's time; what remains travels as a queue message of its own (a
//! [`RecoverTask`]) that the delivery worker takes up, run after run, so a recovery of any size
//! neither times out nor loses a message.

use std::time::Duration;

use tokio::time::Instant;

use futures_util::future::join_all;

use crate::domain::delivery::{RecoverRange, RecoverTask};
use crate::domain::queue_body::QueueBody;
use crate::domain::OrgId;
use crate::error::StoreError;
use crate::ports::{DeliveryLog, DeliveryQueue, EndpointStore, MAX_PAGE_SIZE};
use crate::publish::enqueue_all;
use crate::time::now_rfc3339;

/// How long one run recovers before it hands the rest on: inside the API function's 15 s, and
/// a small part of a delivery invocation's time.
pub const RUN_BUDGET: Duration = Duration::from_secs(5);

/// Claims made at once, each one conditional write.
const CLAIM_CONCURRENCY: usize = 16;

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
/// Stops, with nothing more queued, when the endpoint is gone or disabled meanwhile.
pub async fn recover(
    store: &(impl EndpointStore + DeliveryLog),
    queue: &impl DeliveryQueue,
    mut range: RecoverRange,
    budget: Duration,
) -> Result<Progress, RecoverError> {
    let org = OrgId::parse(&range.org_id).ok_or(RecoverError::InvalidOrg)?;
    let done = |recovered| Progress {
        recovered,
        continued: false,
    };
    match store.get_endpoint(&org, &range.endpoint_id).await? {
        Some(endpoint) if !endpoint.disabled => {}
        _ => {
            tracing::warn!(endpoint_id = %range.endpoint_id, "recovery stopped: the endpoint was deleted or disabled");
            return Ok(done(0));
        }
    }
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
        let mut claimed = Vec::new();
        for chunk in page.messages.chunks(CLAIM_CONCURRENCY) {
            let claims = chunk
                .iter()
                .map(|record| store.claim_for_recovery(record, &now));
            for (record, claim) in chunk.iter().zip(join_all(claims).await) {
                if claim? {
                    claimed.push(record);
                }
            }
        }
        let mut bodies = Vec::with_capacity(claimed.len());
        for record in &claimed {
            match record.restarted_message() {
                Some(message) => bodies.push(QueueBody::encode(&message)?),
                None => {
                    tracing::warn!(message_id = %record.message_id, "not recovered: its event type is no longer in the catalogue")
                }
            }
        }
        if let Err(error) = send(queue, bodies).await {
            for record in &claimed {
                store.release_recovery(record).await?;
            }
            return Err(error);
        }
        recovered += claimed.len();
        let Some(after) = page.next_after else {
            return Ok(done(recovered));
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
