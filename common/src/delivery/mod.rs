//! The delivery worker: one attempt per received message, and what happens after it.
//!
//! The same [`Deliverer::process_batch`] serves the `deliver-webhooks` Lambda (records from an
//! SQS event) and the local runner (records from the embedded queue).

mod client;
mod secrets;

use std::time::Duration;

pub use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

pub use client::{
    resolve_vetted, AttemptOutcome, ClientBuildError, SignedRequest, WebhookClient,
    USER_AGENT_VALUE,
};
use secrets::SecretCache;

use crate::config::DeliveryConfig;
use crate::domain::endpoint::EndpointChanges;
use crate::domain::event::DeliveryMessage;
use crate::domain::retry::{human_duration, NextStep};
use crate::domain::signature::sign;
use crate::domain::OrgId;
use crate::ports::{EndpointStore, RetryControl, SecretCipher, SecretContext};
use crate::time::{now_rfc3339, unix_seconds_now};

/// One received queue message.
#[derive(Clone, Debug)]
pub struct QueueRecord {
    /// The queue's own id for the message (what `batchItemFailures` names).
    pub queue_message_id: String,
    pub receipt_handle: String,
    /// 1 on the first delivery attempt (`ApproximateReceiveCount`).
    pub receive_count: u32,
    pub body: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeadLetterReason {
    /// Every attempt of the schedule failed.
    RetriesExhausted,
    /// The queue message is not a delivery message, or names no valid org; it can never be
    /// delivered as it is.
    Unreadable,
    /// The endpoint's secret no longer decrypts; retrying will not help.
    SecretUnusable,
}

/// What the dead-letter queue holds: the message, to replay it, and why it stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub reason: DeadLetterReason,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub dead_lettered_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<DeliveryMessage>,
    /// The body as received, when it could not be read as a message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_body: Option<String>,
}

/// Whether the queue should forget the record (acknowledged) or hand it out again later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    Acknowledged,
    RetryLater,
}

pub struct Deliverer<S, C> {
    store: S,
    cipher: C,
    client: WebhookClient,
    config: DeliveryConfig,
    secrets: SecretCache,
}

impl<S: EndpointStore, C: SecretCipher> Deliverer<S, C> {
    pub fn new(store: S, cipher: C, config: DeliveryConfig) -> Result<Self, ClientBuildError> {
        Ok(Self {
            client: WebhookClient::new(&config)?,
            secrets: SecretCache::new(config.secret_cache_ttl),
            store,
            cipher,
            config,
        })
    }

    pub fn cipher(&self) -> &C {
        &self.cipher
    }

    /// Settles every record, at most `concurrency` at a time, and returns the queue ids of those
    /// to be handed out again.
    pub async fn process_batch(
        &self,
        control: &impl RetryControl,
        records: Vec<QueueRecord>,
    ) -> Vec<String> {
        // One deadline for the whole batch, whatever the concurrency: the function must answer
        // before its own timeout, or every record, delivered or not, would be handed out again.
        let budget = self.config.record_budget();
        let deadline = tokio::time::Instant::now() + budget;
        stream::iter(records)
            .map(|record| async move {
                let settlement = match tokio::time::timeout_at(deadline, self.settle(control, &record)).await {
                    Ok(settlement) => settlement,
                    Err(_) => {
                        tracing::error!(queue_message_id = %record.queue_message_id, "not settled within the batch's {budget:?}; retried after the queue's visibility timeout");
                        Settlement::RetryLater
                    }
                };
                (record.queue_message_id, settlement)
            })
            .buffer_unordered(self.config.concurrency)
            .filter_map(|(id, settlement)| async move {
                (settlement == Settlement::RetryLater).then_some(id)
            })
            .collect()
            .await
    }

    /// The `deliver-webhooks` handler: an SQS event in, the records to retry out.
    pub async fn handle_sqs_event(
        &self,
        control: &impl RetryControl,
        event: SqsEvent,
    ) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        let mut records = Vec::with_capacity(event.records.len());
        for message in event.records {
            let (Some(queue_message_id), Some(receipt_handle)) =
                (message.message_id, message.receipt_handle)
            else {
                tracing::error!("SQS record without a message id or receipt handle; skipped");
                continue;
            };
            let receive_count = message
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            records.push(QueueRecord {
                queue_message_id,
                receipt_handle,
                receive_count,
                body: message.body.unwrap_or_default(),
            });
        }
        for id in self.process_batch(control, records).await {
            response.add_failure(id);
        }
        response
    }

    /// Delivers one record and settles it with the queue.
    pub async fn settle(&self, control: &impl RetryControl, record: &QueueRecord) -> Settlement {
        let message = match serde_json::from_str::<DeliveryMessage>(&record.body) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(queue_message_id = %record.queue_message_id, %error, "unreadable queue message; dead-lettering it");
                let letter = DeadLetter {
                    reason: DeadLetterReason::Unreadable,
                    attempts: record.receive_count,
                    last_status: None,
                    last_error: Some(format!("unreadable message: {error}")),
                    dead_lettered_at: now_rfc3339(),
                    message: None,
                    raw_body: Some(record.body.clone()),
                };
                return self.park(control, record, letter).await;
            }
        };
        let attempt = record.receive_count;
        match self.attempt(&message).await {
            Attempt::Done(outcome) => {
                log_done(&message, attempt, &outcome);
                Settlement::Acknowledged
            }
            Attempt::Unusable(reason, error) => {
                tracing::error!(message_id = %message.id, endpoint_id = %message.endpoint_id, %error, "dead-lettered: {error}");
                let letter = DeadLetter {
                    reason,
                    attempts: attempt,
                    last_status: None,
                    last_error: Some(error),
                    dead_lettered_at: now_rfc3339(),
                    message: Some(message),
                    raw_body: None,
                };
                self.park(control, record, letter).await
            }
            Attempt::Failed {
                status,
                error,
                retry_after,
            } => {
                match self
                    .config
                    .schedule
                    .next_step_jittered(attempt, retry_after)
                {
                    NextStep::RetryIn(delay) => {
                        tracing::warn!(
                            message_id = %message.id, endpoint_id = %message.endpoint_id, attempt, status, %error,
                            next_attempt_in = %human_duration(delay),
                            "attempt {attempt} of {} for {} to {} failed: {error}; next attempt in {}",
                            self.config.schedule.max_attempts(), message.id, message.endpoint_id, human_duration(delay)
                        );
                        if let Err(e) = control.retry_later(&record.receipt_handle, delay).await {
                            tracing::error!(message_id = %message.id, error = %e, "could not delay the retry; the queue's visibility timeout applies");
                        }
                        Settlement::RetryLater
                    }
                    NextStep::GiveUp => {
                        tracing::error!(
                            message_id = %message.id, endpoint_id = %message.endpoint_id, attempt, status, %error,
                            "attempt {attempt} for {} to {} failed: {error}; no attempts left, dead-lettered",
                            message.id, message.endpoint_id
                        );
                        let letter = DeadLetter {
                            reason: DeadLetterReason::RetriesExhausted,
                            attempts: attempt,
                            last_status: status,
                            last_error: Some(error),
                            dead_lettered_at: now_rfc3339(),
                            message: Some(message),
                            raw_body: None,
                        };
                        self.park(control, record, letter).await
                    }
                }
            }
        }
    }

    /// Sends a letter to the dead-letter queue; if that fails, the record stays in the delivery
    /// queue, whose redrive policy is the safety net.
    async fn park(
        &self,
        control: &impl RetryControl,
        record: &QueueRecord,
        letter: DeadLetter,
    ) -> Settlement {
        match control.dead_letter(&letter).await {
            Ok(()) => Settlement::Acknowledged,
            Err(error) => {
                tracing::error!(queue_message_id = %record.queue_message_id, %error, "could not dead-letter; leaving the message to the queue's redrive");
                Settlement::RetryLater
            }
        }
    }

    async fn attempt(&self, message: &DeliveryMessage) -> Attempt {
        let Some(org) = OrgId::parse(&message.org_id) else {
            // Not dropped: a producer bug must leave a trace an operator can replay from.
            return Attempt::Unusable(
                DeadLetterReason::Unreadable,
                format!("the message names no valid org ({:?})", message.org_id),
            );
        };
        let endpoint = match self.store.get_endpoint(&org, &message.endpoint_id).await {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => return Attempt::Done(Done::Dropped("the endpoint was deleted")),
            Err(error) => {
                return Attempt::failed(None, format!("could not load the endpoint: {error}"))
            }
        };
        if endpoint.disabled {
            return Attempt::Done(Done::Dropped("the endpoint is disabled"));
        }
        let context = SecretContext {
            org_id: &org,
            endpoint_id: &endpoint.id,
        };
        let secret = match self
            .secrets
            .get_or_decrypt(&self.cipher, &endpoint.secret_ciphertext, context)
            .await
        {
            Ok(secret) => secret,
            Err(secrets::SecretError::Unusable(error)) => {
                return Attempt::Unusable(DeadLetterReason::SecretUnusable, error)
            }
            Err(secrets::SecretError::Unavailable(error)) => return Attempt::failed(None, error),
        };
        let body = match message.payload() {
            Ok(body) => body,
            Err(error) => {
                return Attempt::Unusable(
                    DeadLetterReason::Unreadable,
                    format!("could not encode the payload: {error}"),
                )
            }
        };
        let timestamp = unix_seconds_now();
        let signature = match sign(&secret, message.id.as_str(), timestamp, &body) {
            Ok(signature) => signature,
            Err(error) => {
                return Attempt::Unusable(
                    DeadLetterReason::SecretUnusable,
                    format!("the stored secret is malformed: {error}"),
                )
            }
        };
        let outcome = self
            .client
            .post(SignedRequest {
                url: &endpoint.url,
                message_id: message.id.as_str(),
                timestamp,
                signature: &signature,
                body,
            })
            .await;
        match outcome {
            AttemptOutcome::Delivered { status } => Attempt::Done(Done::Delivered(status)),
            AttemptOutcome::Gone => {
                let disable = EndpointChanges {
                    disabled: Some(true),
                    ..EndpointChanges::default()
                };
                if let Err(error) = self
                    .store
                    .update_endpoint(&org, &endpoint.id, &disable, &now_rfc3339())
                    .await
                {
                    tracing::error!(endpoint_id = %endpoint.id, %error, "could not disable an endpoint that answered 410");
                }
                Attempt::Done(Done::Gone)
            }
            AttemptOutcome::Failed {
                status,
                error,
                retry_after,
            } => Attempt::Failed {
                status,
                error,
                retry_after,
            },
        }
    }
}

/// The end of one message's road, short of the dead-letter queue.
enum Done {
    Delivered(u16),
    Gone,
    Dropped(&'static str),
}

enum Attempt {
    Done(Done),
    Failed {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: dead-lettered at once, for this reason.
    Unusable(DeadLetterReason, String),
}

impl Attempt {
    fn failed(status: Option<u16>, error: String) -> Self {
        Attempt::Failed {
            status,
            error,
            retry_after: None,
        }
    }
}

fn log_done(message: &DeliveryMessage, attempt: u32, done: &Done) {
    let (id, endpoint) = (&message.id, &message.endpoint_id);
    match done {
        Done::Delivered(status) => tracing::info!(
            message_id = %id, endpoint_id = %endpoint, attempt, status,
            "delivered {id} ({}) to {endpoint} on attempt {attempt}: HTTP {status}", message.event_type
        ),
        Done::Gone => tracing::warn!(
            message_id = %id, endpoint_id = %endpoint, attempt, status = 410,
            "{endpoint} answered 410 Gone to {id}: endpoint disabled, no retry"
        ),
        Done::Dropped(why) => tracing::warn!(
            message_id = %id, endpoint_id = %endpoint, attempt,
            "dropped {id} for {endpoint}: {why}; not retried"
        ),
    }
}
