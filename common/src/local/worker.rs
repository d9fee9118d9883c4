//! The in-process delivery worker: receives from a queue as the SQS event source mapping would,
//! and runs the same processing as the `deliver-webhooks` Lambda. It keeps receiving while slow
//! deliveries are under way: up to [`MAX_IN_FLIGHT`] messages are worked on at once, each on its
//! own, so a black-holed subscriber holds its own messages, not everyone's.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::adapters::aws::SqsConsumer;
use crate::adapters::embedded::LocalQueue;
use crate::delivery::Deliverer;
use crate::domain::delivery::QueueRecord;
use crate::error::QueueError;
use crate::ports::{DeliveryLog, DeliveryQueue, EndpointStore, QueueConsumer, SecretCipher};

const BATCH_SIZE: usize = 10;
/// Messages worked on at once: the template's default delivery concurrency (5 instances) times
/// the batch size (10), the same bound on in-flight messages as on AWS.
pub const MAX_IN_FLIGHT: usize = 50;
/// How long one receive waits for a first message (SQS's long-poll maximum).
const RECEIVE_WAIT: Duration = Duration::from_secs(20);

/// The receiving side the event source mapping plays on AWS.
pub trait Receiver: QueueConsumer + DeliveryQueue {
    /// Up to `max` messages, waiting a while for the first; empty when none came.
    fn receive(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<QueueRecord>, QueueError>> + Send;
}

impl Receiver for LocalQueue {
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
}

impl Receiver for SqsConsumer {
    async fn receive(&self, max: usize) -> Result<Vec<QueueRecord>, QueueError> {
        let max = i32::try_from(max).unwrap_or(10);
        SqsConsumer::receive(self, max, RECEIVE_WAIT.as_secs() as i32).await
    }
}

/// Runs until `stopped` turns true; the deliveries under way are finished first.
pub async fn run<S, C, R>(
    deliverer: Arc<Deliverer<S, C>>,
    queue: Arc<R>,
    mut stopped: watch::Receiver<bool>,
) where
    S: EndpointStore + DeliveryLog + crate::ports::EventOutbox + 'static,
    C: SecretCipher + 'static,
    R: Receiver + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut deliveries = JoinSet::new();
    loop {
        while deliveries.try_join_next().is_some() {}
        if *stopped.borrow() {
            break;
        }
        // One free slot at least, then as many more as are free, up to a batch.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit,
            _ = stopped.changed() => break,
        };
        let Ok(first) = first else { break };
        let mut permits = vec![first];
        while permits.len() < BATCH_SIZE {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let received = tokio::select! {
            received = queue.receive(permits.len()) => received,
            _ = stopped.changed() => break,
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
        // Each record settles on its own, with its own slot: a slow one holds only itself.
        for (record, permit) in records.into_iter().zip(permits) {
            let (deliverer, queue) = (deliverer.clone(), queue.clone());
            deliveries.spawn(async move {
                let deadline = tokio::time::Instant::now() + deliverer.config().record_budget();
                deliverer
                    .process_batch(queue.as_ref(), vec![record], deadline)
                    .await;
                drop(permit);
            });
        }
    }
    while deliveries.join_next().await.is_some() {}
}
