//! One suite, two queues: the embedded queue must keep the SQS semantics delivery relies on.

use std::time::Duration;

use std::collections::BTreeMap;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use common::adapters::aws::{SqsConsumer, SqsDeliveryQueue};
use common::adapters::embedded::LocalQueue;
use common::domain::delivery::{DeadLetter, DeadLetterReason, QueueRecord};
use common::domain::event::{DeliveryMessage, EventType};
use common::domain::id::{EndpointId, MessageId};
use common::domain::queue_body::{sqs_accepts, QueueBody};
use common::ports::{DeliveryQueue, QueueConsumer};
use common::testing::{create_queues, sdk_config};

/// A dead letter as the queue holds it: the body and its attributes.
pub type Parked = (String, BTreeMap<String, String>);

/// What the tests need beyond the ports: the consumer's receive, a look at the dead-letter
/// queue and at the in-flight count, and a way to hand a received message out again at once
/// (what a crashed consumer leaves behind, sped up).
pub trait TestQueue: DeliveryQueue + QueueConsumer {
    async fn receive(&self, wait: Duration) -> Vec<QueueRecord>;
    async fn release(&self, record: &QueueRecord);
    async fn dead_letters(&self) -> Vec<Parked>;
    /// SQS `ApproximateNumberOfMessagesNotVisible`.
    async fn in_flight(&self) -> usize;
    /// How many messages the dead-letter queue holds (without receiving them).
    async fn dead_letters_count(&self) -> usize;

    async fn delete(&self, record: &QueueRecord) {
        let failed = self.acknowledge(&[&record.receipt_handle]).await.unwrap();
        assert!(failed.is_empty());
    }
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

    async fn release(&self, record: &QueueRecord) {
        self.change_visibility(&record.receipt_handle, Duration::ZERO)
            .unwrap();
    }

    async fn dead_letters(&self) -> Vec<Parked> {
        LocalQueue::dead_letters(self)
            .unwrap()
            .into_iter()
            .map(|letter| (letter.body, letter.attributes))
            .collect()
    }

    async fn in_flight(&self) -> usize {
        LocalQueue::in_flight(self).unwrap()
    }

    async fn dead_letters_count(&self) -> usize {
        LocalQueue::dead_letters(self).unwrap().len()
    }
}

/// The SQS queue pair, with a consumer as the Lambda event source mapping would be.
pub struct SqsPair {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
    pub dead_letter_url: String,
    pub producer: SqsDeliveryQueue,
    pub control: SqsConsumer,
}

impl SqsPair {
    pub async fn new(max_receive_count: u32) -> Self {
        let sdk = sdk_config().await;
        let queues = create_queues(&sdk, max_receive_count).await;
        Self {
            client: aws_sdk_sqs::Client::new(&sdk),
            producer: SqsDeliveryQueue::from_sdk_config(&sdk, &queues.url),
            control: SqsConsumer::from_sdk_config(&sdk, &queues.url, &queues.dead_letter_url),
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
                .message_attribute_names("All")
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

impl QueueConsumer for SqsPair {
    async fn acknowledge(&self, handles: &[&str]) -> Result<Vec<usize>, common::error::QueueError> {
        self.control.acknowledge(handles).await
    }
    async fn reschedule(
        &self,
        messages: &[(QueueBody, Duration)],
    ) -> Result<Vec<usize>, common::error::QueueError> {
        self.control.reschedule(messages).await
    }
    async fn dead_letter(
        &self,
        letters: &[DeadLetter],
    ) -> Result<Vec<usize>, common::error::QueueError> {
        self.control.dead_letter(letters).await
    }
}

impl SqsPair {
    pub async fn queue_attribute(&self, name: QueueAttributeName) -> usize {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(name.clone())
            .send()
            .await
            .unwrap();
        output.attributes.unwrap()[&name].parse().unwrap()
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

    async fn release(&self, record: &QueueRecord) {
        // A message already deleted has nothing to release (as the local queue ignores it).
        let _ = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&record.receipt_handle)
            .visibility_timeout(0)
            .send()
            .await;
    }

    async fn dead_letters(&self) -> Vec<Parked> {
        // Received batches stay hidden, so this drains the queue.
        let mut letters = Vec::new();
        loop {
            let batch = self
                .receive_from(&self.dead_letter_url, Duration::from_millis(500))
                .await;
            if batch.is_empty() {
                return letters;
            }
            letters.extend(batch.into_iter().map(|m| {
                let attributes = m
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(name, value)| Some((name, value.string_value?)))
                    .collect();
                (m.body.unwrap_or_default(), attributes)
            }));
        }
    }

    async fn in_flight(&self) -> usize {
        self.queue_attribute(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .await
    }

    async fn dead_letters_count(&self) -> usize {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.dead_letter_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        output.attributes.unwrap()[&QueueAttributeName::ApproximateNumberOfMessages]
            .parse()
            .unwrap()
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
        event_id: None,
        attempt: 1,
        schedule_start: 1,
        trigger: Default::default(),
        due_at: None,
        org_id: "org_queue".into(),
        endpoint_id: EndpointId::generate().unwrap(),
        event_type: EventType::BookingCreated,
        timestamp: "2030-01-01T00:00:00.000Z".into(),
        data: serde_json::json!({ "n": n }),

        trace: None,
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

async fn a_rescheduled_message_leaves_the_in_flight_pool_until_its_delay_is_over(
    queue: &impl TestQueue,
) {
    queue.enqueue(&encode(&[message(7)])).await.unwrap();
    let first = queue.receive(SOON).await.remove(0);
    assert_eq!(queue.in_flight().await, 1);
    let next = message(8);
    let failed = queue
        .reschedule(&[(QueueBody::encode(&next).unwrap(), Duration::from_secs(2))])
        .await
        .unwrap();
    assert!(failed.is_empty());
    queue.delete(&first).await;
    assert_eq!(
        queue.in_flight().await,
        0,
        "a delayed message is not in flight"
    );
    assert!(
        queue.receive(Duration::from_millis(500)).await.is_empty(),
        "hidden for the delay"
    );
    let second = queue.receive(Duration::from_secs(5)).await.remove(0);
    assert_eq!(
        serde_json::from_str::<DeliveryMessage>(&second.body).unwrap(),
        next
    );
    assert_eq!(second.receive_count, 1, "a new queue message");
    queue.delete(&second).await;
    // Longer than a queue delay can be: cut to SQS's 15 min, not refused.
    let failed = queue
        .reschedule(&[(
            QueueBody::encode(&next).unwrap(),
            Duration::from_secs(86_400),
        )])
        .await
        .unwrap();
    assert!(failed.is_empty());
    assert!(queue.receive(Duration::from_millis(300)).await.is_empty());
}

fn letter(message: &DeliveryMessage, last_error: &str) -> DeadLetter {
    DeadLetter {
        body: QueueBody::encode(message).unwrap(),
        reason: DeadLetterReason::RetriesExhausted,
        attempts: 3,
        last_status: Some(500),
        last_error: Some(last_error.into()),
        dead_lettered_at: "2030-01-01T00:00:00.000Z".into(),
    }
}

async fn dead_letters_and_redrive_land_in_the_dead_letter_queue(
    queue: &impl TestQueue,
    max_receive_count: u32,
) {
    let parked = message(1);
    let failed = queue
        .dead_letter(&[letter(&parked, "HTTP 500")])
        .await
        .unwrap();
    assert!(failed.is_empty());

    // Received max_receive_count times and never deleted: the next receive redrives it.
    let stuck = message(2);
    queue
        .enqueue(&encode(std::slice::from_ref(&stuck)))
        .await
        .unwrap();
    for attempt in 1..=max_receive_count {
        let record = queue.receive(SOON).await.remove(0);
        assert_eq!(record.receive_count, attempt);
        queue.release(&record).await;
    }
    assert!(
        queue.receive(Duration::from_millis(500)).await.is_empty(),
        "redriven, not handed out"
    );

    let mut dead = queue.dead_letters().await;
    dead.sort();
    let attributes = BTreeMap::from([
        ("Attempts".to_owned(), "3".to_owned()),
        ("DeadLetterReason".to_owned(), "retriesExhausted".to_owned()),
        (
            "DeadLetteredAt".to_owned(),
            "2030-01-01T00:00:00.000Z".to_owned(),
        ),
        ("LastError".to_owned(), "HTTP 500".to_owned()),
        ("LastStatus".to_owned(), "500".to_owned()),
    ]);
    let mut expected = vec![
        (serde_json::to_string(&parked).unwrap(), attributes),
        // As it was, without a reason: the queue's own redrive.
        (serde_json::to_string(&stuck).unwrap(), BTreeMap::new()),
    ];
    expected.sort();
    assert_eq!(dead, expected);
    // Both are delivery messages, replayable as they are.
    for (body, _) in &dead {
        serde_json::from_str::<DeliveryMessage>(body).unwrap();
    }
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
    let failed = queue
        .dead_letter(&[letter(&sent, REFUSED_BY_SQS)])
        .await
        .unwrap();
    assert!(failed.is_empty());

    let record = queue.receive(SOON).await.remove(0);
    let raw = record.body.clone();
    assert!(raw.chars().all(sqs_accepts), "raw body: {raw:?}");
    assert_eq!(serde_json::from_str::<DeliveryMessage>(&raw).unwrap(), sent);
    queue.delete(&record).await;
    let dead = queue.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let (body, attributes) = &dead[0];
    assert!(body.chars().all(sqs_accepts), "raw dead letter: {body:?}");
    assert_eq!(serde_json::from_str::<DeliveryMessage>(body).unwrap(), sent);
    assert!(
        attributes["LastError"].chars().all(sqs_accepts),
        "{attributes:?}"
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
    a_rescheduled_message_leaves_the_in_flight_pool_until_its_delay_is_over(&LocalQueue::new(
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
    a_rescheduled_message_leaves_the_in_flight_pool_until_its_delay_is_over(&SqsPair::new(3).await)
        .await;
    dead_letters_and_redrive_land_in_the_dead_letter_queue(&SqsPair::new(2).await, 2).await;
}
