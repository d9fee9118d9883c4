//! The in-process delivery worker: receives from a queue as the SQS event source mapping would,
//! and runs the same batch processing as the `deliver-webhooks` Lambda.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::adapters::aws::SqsRetryControl;
use crate::adapters::embedded::LocalQueue;
use crate::delivery::{Deliverer, QueueRecord};
use crate::error::QueueError;
use crate::ports::{EndpointStore, RetryControl, SecretCipher};

const BATCH_SIZE: usize = 10;
/// How long one receive waits for a first message (SQS's long-poll maximum).
const RECEIVE_WAIT: Duration = Duration::from_secs(20);

/// The consumer side the event source mapping plays on AWS.
pub trait Consumer: RetryControl {
    /// Up to `max` messages, waiting a while for the first; empty when none came.
    fn receive(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<QueueRecord>, QueueError>> + Send;
    fn delete(&self, receipt_handle: &str) -> impl Future<Output = Result<(), QueueError>> + Send;
}

impl Consumer for LocalQueue {
    async fn receive(&self, max: usize) -> Result<Vec<QueueRecord>, QueueError> {
        let deadline = tokio::time::Instant::now() + RECEIVE_WAIT;
        loop {
            let received = LocalQueue::receive(self, max)?;
            if !received.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(received.into_iter().map(QueueRecord::from).collect());
            }
            let wake = self
                .next_visible_at()?
                .map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                _ = self.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        LocalQueue::delete(self, receipt_handle)
    }
}

impl Consumer for SqsRetryControl {
    async fn receive(&self, max: usize) -> Result<Vec<QueueRecord>, QueueError> {
        let max = i32::try_from(max).unwrap_or(10);
        SqsRetryControl::receive(self, max, RECEIVE_WAIT.as_secs() as i32).await
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        SqsRetryControl::delete(self, receipt_handle).await
    }
}

/// Runs until `stopped` turns true; a batch under way is always finished first.
pub async fn run<S: EndpointStore, C: SecretCipher>(
    deliverer: &Deliverer<S, C>,
    queue: &impl Consumer,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        if *stopped.borrow() {
            return;
        }
        let received = tokio::select! {
            received = queue.receive(BATCH_SIZE) => received,
            _ = stopped.changed() => return,
        };
        let records = match received {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%error, "receiving from the queue failed; trying again shortly");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        let receipts: Vec<(String, String)> = records
            .iter()
            .map(|r| (r.queue_message_id.clone(), r.receipt_handle.clone()))
            .collect();
        let to_retry: HashSet<String> = deliverer
            .process_batch(queue, records)
            .await
            .into_iter()
            .collect();
        for (id, receipt) in receipts.iter().filter(|(id, _)| !to_retry.contains(id)) {
            if let Err(error) = queue.delete(receipt).await {
                tracing::error!(queue_message_id = %id, %error, "could not delete a settled message");
            }
        }
    }
}
