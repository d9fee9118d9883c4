//! The delivery queue on SQS: batched sends on the producer side; on the consumer side, batched
//! deletes, delayed re-sends for the next attempt, and dead letters with their reason as
//! message attributes.

use std::time::Duration;

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

use super::describe;
use crate::domain::delivery::{DeadLetter, QueueRecord};
use crate::domain::queue_body::QueueBody;
use crate::error::QueueError;
use crate::ports::{DeliveryQueue, QueueConsumer, MAX_ENQUEUE_BATCH, MAX_QUEUE_DELAY};

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
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(index, body)| entry(index, body).build());
        send_batch(&self.client, &self.queue_url, entries).await
    }
}

fn entry(
    index: usize,
    body: &QueueBody,
) -> aws_sdk_sqs::types::builders::SendMessageBatchRequestEntryBuilder {
    SendMessageBatchRequestEntry::builder()
        .id(index.to_string())
        .message_body(body.as_str())
}

/// Sends up to [`MAX_ENQUEUE_BATCH`] entries (ids: their indexes); returns the indexes SQS
/// refused.
async fn send_batch(
    client: &Client,
    queue_url: &str,
    entries: impl ExactSizeIterator<
        Item = Result<SendMessageBatchRequestEntry, aws_sdk_sqs::error::BuildError>,
    >,
) -> Result<Vec<usize>, QueueError> {
    if entries.len() == 0 {
        return Ok(Vec::new());
    }
    if entries.len() > MAX_ENQUEUE_BATCH {
        return Err(QueueError::Encoding(format!(
            "at most {MAX_ENQUEUE_BATCH} messages per batch"
        )));
    }
    let entries = entries
        .map(|entry| entry.map_err(|e| QueueError::Encoding(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let output = client
        .send_message_batch()
        .queue_url(queue_url)
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

#[derive(Clone)]
pub struct SqsConsumer {
    client: Client,
    queue_url: String,
    dead_letter_queue_url: String,
}

impl SqsConsumer {
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

impl QueueConsumer for SqsConsumer {
    async fn acknowledge(&self, receipt_handles: &[&str]) -> Result<Vec<usize>, QueueError> {
        if receipt_handles.is_empty() {
            return Ok(Vec::new());
        }
        let entries = receipt_handles
            .iter()
            .enumerate()
            .map(|(index, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(*handle)
                    .build()
                    .map_err(|e| QueueError::Encoding(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output
            .failed
            .iter()
            .filter_map(|entry| {
                tracing::warn!(entry = %entry.id, code = %entry.code, "SQS did not delete a settled message");
                entry.id.parse::<usize>().ok()
            })
            .collect())
    }

    async fn reschedule(
        &self,
        messages: &[(QueueBody, Duration)],
    ) -> Result<Vec<usize>, QueueError> {
        let entries = messages.iter().enumerate().map(|(index, (body, delay))| {
            entry(index, body)
                .delay_seconds(delay_seconds(*delay))
                .build()
        });
        send_batch(&self.client, &self.queue_url, entries).await
    }

    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<Vec<usize>, QueueError> {
        let entries = letters.iter().enumerate().map(|(index, letter)| {
            let mut entry = entry(index, &letter.body);
            for (name, value, numeric) in letter.attributes() {
                let attribute = MessageAttributeValue::builder()
                    .data_type(if numeric { "Number" } else { "String" })
                    .string_value(value)
                    .build();
                match attribute {
                    Ok(attribute) => entry = entry.message_attributes(name, attribute),
                    Err(error) => {
                        tracing::warn!(%error, attribute = name, "dead-letter attribute left out")
                    }
                }
            }
            entry.build()
        });
        send_batch(&self.client, &self.dead_letter_queue_url, entries).await
    }
}

/// The consumer sends to its own queue too: a recovery that runs out of time hands the rest on
/// as a queue message.
impl DeliveryQueue for SqsConsumer {
    async fn enqueue(&self, bodies: &[QueueBody]) -> Result<Vec<usize>, QueueError> {
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(index, body)| entry(index, body).build());
        send_batch(&self.client, &self.queue_url, entries).await
    }
}

/// SQS's `DelaySeconds`: whole seconds, at most 900. Rounded up, so a jittered 0.8 s is not an
/// immediate retry; a longer wait is reached hop by hop.
fn delay_seconds(delay: Duration) -> i32 {
    let whole = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    i32::try_from(whole.min(MAX_QUEUE_DELAY.as_secs())).unwrap_or(0)
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
impl SqsConsumer {
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
}
