//! The in-process delivery worker: receives from the embedded queue as the SQS event source
//! mapping would, and runs the same batch processing as the `deliver-webhooks` Lambda.

use std::collections::HashSet;

use tokio::sync::watch;

use crate::adapters::embedded::LocalQueue;
use crate::delivery::{Deliverer, QueueRecord};
use crate::ports::{EndpointStore, SecretCipher};

const BATCH_SIZE: usize = 10;

/// Runs until `stopped` turns true; a batch under way is always finished first.
pub async fn run<S: EndpointStore, C: SecretCipher>(
    deliverer: &Deliverer<S, C>,
    queue: &LocalQueue,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        if *stopped.borrow() {
            return;
        }
        let received = match queue.receive(BATCH_SIZE) {
            Ok(received) => received,
            Err(error) => {
                tracing::error!(%error, "the local queue failed; worker stops");
                return;
            }
        };
        if received.is_empty() {
            let next = queue.next_visible_at().ok().flatten();
            tokio::select! {
                _ = queue.changed() => {}
                _ = stopped.changed() => {}
                _ = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
            continue;
        }
        let records: Vec<QueueRecord> = received
            .iter()
            .map(|m| QueueRecord {
                queue_message_id: m.message_id.clone(),
                receipt_handle: m.receipt_handle.clone(),
                receive_count: m.receive_count,
                body: m.body.clone(),
            })
            .collect();
        let to_retry: HashSet<String> = deliverer
            .process_batch(queue, records)
            .await
            .into_iter()
            .collect();
        for message in received
            .iter()
            .filter(|m| !to_retry.contains(&m.message_id))
        {
            if let Err(error) = queue.delete(&message.receipt_handle) {
                tracing::error!(%error, "could not delete a settled message");
            }
        }
    }
}
