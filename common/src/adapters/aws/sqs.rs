//! The delivery queue on SQS: batched sends on the producer side; visibility changes and
//! explicit dead-lettering on the consumer side.

use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;

use super::describe;
use crate::delivery::{DeadLetter, QueueRecord};
use crate::domain::queue_body::QueueBody;
use crate::error::QueueError;
use crate::ports::{DeliveryQueue, RetryControl, MAX_ENQUEUE_BATCH};

fn unavailable(error: impl std::error::Error) -> QueueError {
    QueueError::Unavailable(describe(&error))
}

#[derive(Clone)]
pub struct SqsDeliveryQueue {
    client: Client,
    queue_url: String,
}

impl SqsDeliveryQueue {
    pub fn from_sdk_config(sdk: &super::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self::new(Client::new(sdk), queue_url)
    }

    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

impl DeliveryQueue for SqsDeliveryQueue {
    async fn enqueue(&self, bodies: &[QueueBody]) -> Result<Vec<usize>, QueueError> {
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        if bodies.len() > MAX_ENQUEUE_BATCH {
            return Err(QueueError::Encoding(format!(
                "at most {MAX_ENQUEUE_BATCH} messages per batch"
            )));
        }
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(index, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(body.as_str())
                    .build()
                    .map_err(|e| QueueError::Encoding(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(unavailable)?;
        let failed = output
            .failed
            .iter()
            .filter_map(|entry| {
                tracing::warn!(entry = %entry.id, code = %entry.code, sender_fault = entry.sender_fault, "SQS refused a message of a batch");
                entry.id.parse::<usize>().ok()
            })
            .collect();
        Ok(failed)
    }
}

#[derive(Clone)]
pub struct SqsRetryControl {
    client: Client,
    queue_url: String,
    dead_letter_queue_url: String,
}

impl SqsRetryControl {
    pub fn from_sdk_config(
        sdk: &super::SdkConfig,
        queue_url: impl Into<String>,
        dead_letter_queue_url: impl Into<String>,
    ) -> Self {
        Self::new(Client::new(sdk), queue_url, dead_letter_queue_url)
    }

    pub fn new(
        client: Client,
        queue_url: impl Into<String>,
        dead_letter_queue_url: impl Into<String>,
    ) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dead_letter_queue_url: dead_letter_queue_url.into(),
        }
    }
}

impl RetryControl for SqsRetryControl {
    async fn retry_later(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        // SQS counts whole seconds: round up, so a jittered 0.8 s is not an immediate retry.
        // The 12 h ceiling is SQS's own; RetrySchedule never asks for more.
        let whole = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        let seconds = i32::try_from(whole.min(43_200)).unwrap_or(43_200);
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        let body = QueueBody::encode(letter).map_err(|e| QueueError::Encoding(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.dead_letter_queue_url)
            .message_body(body.into_string())
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

fn long_poll_timeouts(wait_secs: i32) -> aws_sdk_sqs::config::timeout::TimeoutConfig {
    let wait = std::time::Duration::from_secs(u64::try_from(wait_secs).unwrap_or(0));
    aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(wait + std::time::Duration::from_secs(5))
        .operation_timeout(wait + std::time::Duration::from_secs(10))
        .build()
}

/// The consumer's own receive and delete, for a poller that stands in for the Lambda event
/// source mapping (the local runner with `--aws`).
impl SqsRetryControl {
    /// Long-polls for up to `max` messages, waiting at most `wait_secs` for the first.
    pub async fn receive(&self, max: i32, wait_secs: i32) -> Result<Vec<QueueRecord>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            // A long poll outlasts the short timeouts every other call has.
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default()
                    .timeout_config(long_poll_timeouts(wait_secs)),
            )
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| {
                let receive_count = message
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(1);
                Some(QueueRecord {
                    queue_message_id: message.message_id?,
                    receipt_handle: message.receipt_handle?,
                    receive_count,
                    body: message.body.unwrap_or_default(),
                })
            })
            .collect())
    }

    pub async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
