//! One suite, two queues: the embedded queue must keep the SQS semantics delivery relies on.

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use common::adapters::aws::{SqsDeliveryQueue, SqsRetryControl};
use common::adapters::embedded::LocalQueue;
use common::delivery::{DeadLetter, DeadLetterReason, QueueRecord};
use common::domain::event::{DeliveryMessage, EventType};
use common::domain::id::{EndpointId, MessageId};
use common::domain::queue_body::{sqs_accepts, QueueBody};
use common::ports::{DeliveryQueue, RetryControl};
use common::testing::{create_queues, sdk_config};

/// What the tests need beyond the ports: the consumer's receive and delete, and a look at the
/// dead-letter queue.
pub trait TestQueue: DeliveryQueue + RetryControl {
    async fn receive(&self, wait: Duration) -> Vec<QueueRecord>;
    async fn delete(&self, record: &QueueRecord);
    async fn dead_letters(&self) -> Vec<String>;
}

impl TestQueue for LocalQueue {
    async fn receive(&self, wait: Duration) -> Vec<QueueRecord> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let received = LocalQueue::receive(self, 10).unwrap();
            if !received.is_empty() || tokio::time::Instant::now() >= deadline {
                return received.into_iter().map(QueueRecord::from).collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn delete(&self, record: &QueueRecord) {
        LocalQueue::delete(self, &record.receipt_handle).unwrap();
    }

    async fn dead_letters(&self) -> Vec<String> {
        LocalQueue::dead_letters(self).unwrap()
    }
}

/// The SQS queue pair, with a consumer as the Lambda event source mapping would be.
pub struct SqsPair {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
    pub dead_letter_url: String,
    pub producer: SqsDeliveryQueue,
    pub control: SqsRetryControl,
}

impl SqsPair {
    pub async fn new(max_receive_count: u32) -> Self {
        let sdk = sdk_config().await;
        let queues = create_queues(&sdk, max_receive_count).await;
        Self {
            client: aws_sdk_sqs::Client::new(&sdk),
            producer: SqsDeliveryQueue::from_sdk_config(&sdk, &queues.url),
            control: SqsRetryControl::from_sdk_config(&sdk, &queues.url, &queues.dead_letter_url),
            url: queues.url,
            dead_letter_url: queues.dead_letter_url,
        }
    }

    pub async fn receive_from(
        &self,
        url: &str,
        wait: Duration,
    ) -> Vec<aws_sdk_sqs::types::Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let output = self
                .client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .unwrap();
            let messages = output.messages.unwrap_or_default();
            if !messages.is_empty() || tokio::time::Instant::now() >= deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl DeliveryQueue for SqsPair {
    async fn enqueue(&self, bodies: &[QueueBody]) -> Result<Vec<usize>, common::error::QueueError> {
        self.producer.enqueue(bodies).await
    }
}

impl RetryControl for SqsPair {
    async fn retry_later(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> Result<(), common::error::QueueError> {
        self.control.retry_later(receipt_handle, delay).await
    }
    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), common::error::QueueError> {
        self.control.dead_letter(letter).await
    }
}

impl TestQueue for SqsPair {
    async fn receive(&self, wait: Duration) -> Vec<QueueRecord> {
        // The consumer's own receive (what webhooks-local --aws polls with), without long-polling
        // so a test's wait stays its own.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let records = self.control.receive(10, 0).await.unwrap();
            if !records.is_empty() || tokio::time::Instant::now() >= deadline {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn delete(&self, record: &QueueRecord) {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&record.receipt_handle)
            .send()
            .await
            .unwrap();
    }

    async fn dead_letters(&self) -> Vec<String> {
        self.receive_from(&self.dead_letter_url, Duration::from_millis(500))
            .await
            .into_iter()
            .filter_map(|m| m.body)
            .collect()
    }
}

fn encode(messages: &[DeliveryMessage]) -> Vec<QueueBody> {
    messages
        .iter()
        .map(|m| QueueBody::encode(m).unwrap())
        .collect()
}

pub fn message(n: u32) -> DeliveryMessage {
    DeliveryMessage {
        id: MessageId::generate().unwrap(),
        org_id: "org_queue".into(),
        endpoint_id: EndpointId::generate().unwrap(),
        event_type: EventType::BookingCreated,
        timestamp: "2030-01-01T00:00:00.000Z".into(),
        data: serde_json::json!({ "n": n }),
    }
}

const SOON: Duration = Duration::from_secs(3);

async fn messages_arrive_once_with_a_receive_count(queue: &impl TestQueue) {
    let sent: Vec<_> = (0..3).map(message).collect();
    assert!(queue.enqueue(&encode(&sent)).await.unwrap().is_empty());
    let mut received = Vec::new();
    while received.len() < 3 {
        let batch = queue.receive(SOON).await;
        assert!(!batch.is_empty(), "messages went missing");
        received.extend(batch);
    }
    assert!(received.iter().all(|r| r.receive_count == 1));
    let mut bodies: Vec<DeliveryMessage> = received
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    bodies.sort_by_key(|m| m.data["n"].as_u64());
    assert_eq!(bodies, sent);
    assert!(
        queue.receive(Duration::ZERO).await.is_empty(),
        "received messages stay hidden"
    );
    for record in &received {
        queue.delete(record).await;
    }
}

async fn a_delayed_retry_comes_back_later_with_a_higher_count(queue: &impl TestQueue) {
    queue.enqueue(&encode(&[message(7)])).await.unwrap();
    let first = queue.receive(SOON).await.remove(0);
    queue
        .retry_later(&first.receipt_handle, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        queue.receive(Duration::from_millis(500)).await.is_empty(),
        "hidden for the delay"
    );
    let second = queue.receive(Duration::from_secs(5)).await.remove(0);
    assert_eq!(second.body, first.body);
    assert_eq!(second.receive_count, 2);
    queue.delete(&second).await;
}

async fn dead_letters_and_redrive_land_in_the_dead_letter_queue(
    queue: &impl TestQueue,
    max_receive_count: u32,
) {
    let letter = DeadLetter {
        reason: DeadLetterReason::RetriesExhausted,
        attempts: 3,
        last_status: Some(500),
        last_error: Some("HTTP 500".into()),
        dead_lettered_at: "2030-01-01T00:00:00.000Z".into(),
        message: Some(message(1)),
        raw_body: None,
    };
    queue.dead_letter(&letter).await.unwrap();

    // Received max_receive_count times and never deleted: the next receive redrives it.
    let stuck = message(2);
    queue
        .enqueue(&encode(std::slice::from_ref(&stuck)))
        .await
        .unwrap();
    for attempt in 1..=max_receive_count {
        let record = queue.receive(SOON).await.remove(0);
        assert_eq!(record.receive_count, attempt);
        queue
            .retry_later(&record.receipt_handle, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(
        queue.receive(Duration::from_millis(500)).await.is_empty(),
        "redriven, not handed out"
    );

    let mut dead = queue.dead_letters().await;
    dead.sort();
    let mut expected = vec![
        serde_json::to_string(&letter).unwrap(),
        serde_json::to_string(&stuck).unwrap(),
    ];
    expected.sort();
    assert_eq!(dead, expected);
}

/// Characters SQS refuses in a body (U+FFFF, U+FFFE, C0 controls): moto and a naive local
/// queue take them, SQS does not. What was sent must be SQS-safe as it lies in the queue, and
/// read back as the same data.
async fn bodies_hold_only_what_sqs_accepts(queue: &impl TestQueue) {
    const REFUSED_BY_SQS: &str = "notes \u{FFFF} \u{FFFE} \u{1} \u{1F} end";
    let mut sent = message(9);
    sent.data = serde_json::json!({ "notes": REFUSED_BY_SQS, "k\u{FFFF}": "v\u{0}" });
    queue
        .enqueue(&encode(std::slice::from_ref(&sent)))
        .await
        .unwrap();
    let letter = DeadLetter {
        reason: DeadLetterReason::RetriesExhausted,
        attempts: 1,
        last_status: None,
        last_error: Some(REFUSED_BY_SQS.into()),
        dead_lettered_at: "2030-01-01T00:00:00.000Z".into(),
        message: Some(sent.clone()),
        raw_body: None,
    };
    queue.dead_letter(&letter).await.unwrap();

    let record = queue.receive(SOON).await.remove(0);
    let raw = record.body.clone();
    assert!(raw.chars().all(sqs_accepts), "raw body: {raw:?}");
    assert_eq!(serde_json::from_str::<DeliveryMessage>(&raw).unwrap(), sent);
    queue.delete(&record).await;
    let dead = queue.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].chars().all(sqs_accepts),
        "raw dead letter: {:?}",
        dead[0]
    );
    assert_eq!(
        serde_json::from_str::<DeadLetter>(&dead[0]).unwrap(),
        letter
    );
}

#[tokio::test]
async fn the_local_queue_refuses_what_sqs_refuses() {
    let queue = LocalQueue::new(Duration::from_secs(30), 3);
    for refused in ["\u{FFFF}", "\u{FFFE}", "\u{0}", "\u{B}"] {
        let error = queue.send(format!("{{\"n\":\"{refused}\"}}")).unwrap_err();
        assert!(
            error.to_string().contains("InvalidMessageContents"),
            "{error}"
        );
    }
    assert!(queue.is_empty().unwrap());
    queue
        .send("{\"n\":\"tab\tnewline\n\u{FFFD}\"}".into())
        .unwrap();
}

#[tokio::test]
async fn local_queue_passes_the_queue_contract() {
    bodies_hold_only_what_sqs_accepts(&LocalQueue::new(Duration::from_secs(30), 3)).await;
    messages_arrive_once_with_a_receive_count(&LocalQueue::new(Duration::from_secs(30), 3)).await;
    a_delayed_retry_comes_back_later_with_a_higher_count(&LocalQueue::new(
        Duration::from_secs(30),
        3,
    ))
    .await;
    dead_letters_and_redrive_land_in_the_dead_letter_queue(
        &LocalQueue::new(Duration::from_secs(30), 2),
        2,
    )
    .await;
}

#[tokio::test]
async fn sqs_queue_passes_the_queue_contract() {
    bodies_hold_only_what_sqs_accepts(&SqsPair::new(3).await).await;
    messages_arrive_once_with_a_receive_count(&SqsPair::new(3).await).await;
    a_delayed_retry_comes_back_later_with_a_higher_count(&SqsPair::new(3).await).await;
    dead_letters_and_redrive_land_in_the_dead_letter_queue(&SqsPair::new(2).await, 2).await;
}
