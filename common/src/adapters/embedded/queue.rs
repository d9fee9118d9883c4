//! A local queue with the SQS semantics the delivery pipeline relies on: a received message is
//! invisible until deleted or until its visibility runs out, every receive counts, a message can
//! be sent with a delay (at most 15 min, as SQS), one received too often is redriven to a
//! dead-letter list, and the in-flight count is what SQS calls
//! `ApproximateNumberOfMessagesNotVisible`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use std::collections::BTreeMap;

use crate::domain::delivery::{DeadLetter, QueueRecord};
use crate::domain::queue_body::{sqs_accepts, QueueBody};
use crate::error::QueueError;
use crate::ports::{DeliveryQueue, QueueConsumer, MAX_ENQUEUE_BATCH, MAX_QUEUE_DELAY};

struct Entry {
    message_id: String,
    body: String,
    receive_count: u32,
    visible_at: Instant,
    receipt_handle: Option<String>,
}

/// A message in the dead-letter list: its body, and the attributes that say why (none when
/// the queue redrove it after too many receives).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterEntry {
    pub body: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    dead_letters: Vec<DeadLetterEntry>,
    sequence: u64,
}

/// One received message, as SQS hands it to a consumer.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub receive_count: u32,
    pub body: String,
}

impl From<ReceivedMessage> for QueueRecord {
    fn from(message: ReceivedMessage) -> Self {
        QueueRecord {
            queue_message_id: message.message_id,
            receipt_handle: message.receipt_handle,
            receive_count: message.receive_count,
            body: message.body,
        }
    }
}

/// SQS's `InvalidMessageContents`: the local queue refuses what the real one refuses, so a
/// body that would fail on AWS fails here too.
fn refuse_what_sqs_refuses(body: &str) -> Result<(), QueueError> {
    match body.chars().find(|c| !sqs_accepts(*c)) {
        Some(c) => Err(QueueError::Encoding(format!(
            "InvalidMessageContents: the body holds U+{:04X}, which SQS refuses",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}

pub struct LocalQueue {
    state: Mutex<State>,
    changed: Notify,
    visibility_timeout: Duration,
    max_receive_count: u32,
}

fn poisoned<T>(_: T) -> QueueError {
    QueueError::Unavailable("a previous holder of the queue lock panicked".into())
}

impl LocalQueue {
    /// `max_receive_count` plays the redrive policy: a message received that often without being
    /// deleted goes to the dead-letter list on its next receive.
    pub fn new(visibility_timeout: Duration, max_receive_count: u32) -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            visibility_timeout,
            max_receive_count,
        }
    }

    /// Sends a body; refuses, as SQS does, one holding a character SQS does not accept.
    pub fn send(&self, body: String) -> Result<String, QueueError> {
        self.send_delayed(body, Duration::ZERO)
    }

    /// Sends a body hidden for `delay` (cut to SQS's 15 min).
    pub fn send_delayed(&self, body: String, delay: Duration) -> Result<String, QueueError> {
        refuse_what_sqs_refuses(&body)?;
        let mut state = self.state.lock().map_err(poisoned)?;
        state.sequence += 1;
        let message_id = format!("local-{:08}", state.sequence);
        state.entries.push(Entry {
            message_id: message_id.clone(),
            body,
            receive_count: 0,
            visible_at: Instant::now() + delay.min(MAX_QUEUE_DELAY),
            receipt_handle: None,
        });
        drop(state);
        self.changed.notify_one();
        Ok(message_id)
    }

    /// Up to `max` visible messages, now hidden for the visibility timeout.
    pub fn receive(&self, max: usize) -> Result<Vec<ReceivedMessage>, QueueError> {
        let now = Instant::now();
        let mut state = self.state.lock().map_err(poisoned)?;
        let State {
            entries,
            dead_letters,
            sequence,
        } = &mut *state;
        let mut received = Vec::new();
        let mut index = 0;
        while index < entries.len() && received.len() < max {
            let entry = &mut entries[index];
            if entry.visible_at > now {
                index += 1;
                continue;
            }
            if entry.receive_count >= self.max_receive_count {
                let entry = entries.remove(index);
                tracing::warn!(queue_message_id = %entry.message_id, receives = entry.receive_count, "redriven to the dead-letter list");
                dead_letters.push(DeadLetterEntry {
                    body: entry.body,
                    attributes: BTreeMap::new(),
                });
                continue;
            }
            *sequence += 1;
            entry.receive_count += 1;
            entry.visible_at = now + self.visibility_timeout;
            let handle = format!("{}#{}", entry.message_id, sequence);
            entry.receipt_handle = Some(handle.clone());
            received.push(ReceivedMessage {
                message_id: entry.message_id.clone(),
                receipt_handle: handle,
                receive_count: entry.receive_count,
                body: entry.body.clone(),
            });
            index += 1;
        }
        Ok(received)
    }

    /// Deletes a received message; a stale receipt handle is ignored, as SQS does.
    pub fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        let mut state = self.state.lock().map_err(poisoned)?;
        state
            .entries
            .retain(|e| e.receipt_handle.as_deref() != Some(receipt_handle));
        Ok(())
    }

    pub fn change_visibility(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let mut state = self.state.lock().map_err(poisoned)?;
        if let Some(entry) = state
            .entries
            .iter_mut()
            .find(|e| e.receipt_handle.as_deref() == Some(receipt_handle))
        {
            entry.visible_at = Instant::now() + delay;
        }
        drop(state);
        self.changed.notify_one();
        Ok(())
    }

    /// When the next hidden message becomes visible, if any is waiting.
    pub fn next_visible_at(&self) -> Result<Option<Instant>, QueueError> {
        let state = self.state.lock().map_err(poisoned)?;
        Ok(state.entries.iter().map(|e| e.visible_at).min())
    }

    /// Waits until a message is sent or a visibility changes.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Received messages neither deleted nor visible again (SQS:
    /// `ApproximateNumberOfMessagesNotVisible`); delayed ones are not counted.
    pub fn in_flight(&self) -> Result<usize, QueueError> {
        let now = Instant::now();
        let state = self.state.lock().map_err(poisoned)?;
        Ok(state
            .entries
            .iter()
            .filter(|e| e.receipt_handle.is_some() && e.visible_at > now)
            .count())
    }

    /// Messages still in the queue, visible or not.
    pub fn len(&self) -> Result<usize, QueueError> {
        Ok(self.state.lock().map_err(poisoned)?.entries.len())
    }

    pub fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len()? == 0)
    }

    /// Moves the dead letters whose body `select` picks back to the queue, as they are (SQS's
    /// DLQ redrive); how many moved.
    pub fn replay_dead_letters(&self, select: impl Fn(&str) -> bool) -> Result<usize, QueueError> {
        let picked: Vec<DeadLetterEntry> = {
            let mut state = self.state.lock().map_err(poisoned)?;
            let (picked, kept) = std::mem::take(&mut state.dead_letters)
                .into_iter()
                .partition(|letter| select(&letter.body));
            state.dead_letters = kept;
            picked
        };
        for letter in &picked {
            self.send(letter.body.clone())?;
        }
        Ok(picked.len())
    }

    /// The dead-letter list, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetterEntry>, QueueError> {
        Ok(self.state.lock().map_err(poisoned)?.dead_letters.clone())
    }
}

impl DeliveryQueue for LocalQueue {
    async fn enqueue(&self, bodies: &[QueueBody]) -> Result<Vec<usize>, QueueError> {
        if bodies.len() > MAX_ENQUEUE_BATCH {
            return Err(QueueError::Encoding(format!(
                "at most {MAX_ENQUEUE_BATCH} messages per batch"
            )));
        }
        for body in bodies {
            self.send(body.as_str().to_owned())?;
        }
        Ok(Vec::new())
    }
}

impl QueueConsumer for LocalQueue {
    async fn acknowledge(&self, receipt_handles: &[&str]) -> Result<Vec<usize>, QueueError> {
        for handle in receipt_handles {
            self.delete(handle)?;
        }
        Ok(Vec::new())
    }

    async fn reschedule(
        &self,
        messages: &[(QueueBody, Duration)],
    ) -> Result<Vec<usize>, QueueError> {
        if messages.len() > MAX_ENQUEUE_BATCH {
            return Err(QueueError::Encoding(format!(
                "at most {MAX_ENQUEUE_BATCH} messages per batch"
            )));
        }
        // Per entry, as SQS answers a batch: one refused body fails alone.
        Ok(messages
            .iter()
            .enumerate()
            .filter(|(_, (body, delay))| {
                self.send_delayed(body.as_str().to_owned(), *delay).is_err()
            })
            .map(|(index, _)| index)
            .collect())
    }

    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<Vec<usize>, QueueError> {
        let mut state = self.state.lock().map_err(poisoned)?;
        for letter in letters {
            state.dead_letters.push(DeadLetterEntry {
                body: letter.body.as_str().to_owned(),
                attributes: letter
                    .attributes()
                    .into_iter()
                    .map(|(name, value, _)| (name.to_owned(), value))
                    .collect(),
            });
        }
        Ok(Vec::new())
    }
}
