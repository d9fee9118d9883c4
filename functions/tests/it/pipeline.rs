//! The notification pipeline end to end against moto: POST /bookings publishes through SQS, the
//! delivery handler runs on the received messages as Lambda would, and loopback sinks receive
//! signed POSTs that the official standardwebhooks package verifies.

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use common::adapters::aws::{DynamoStore, KmsCipher, SqsDeliveryQueue};
use common::api;
use common::config::DeliveryConfig;
use common::delivery::Deliverer;
use common::domain::delivery::{CircuitPolicy, DeadLetter, DisabledReason, MAX_RECEIVES};
use common::domain::event::{DeliveryMessage, EventType};
use common::domain::id::EndpointId;
use common::domain::target::TargetPolicy;
use common::ports::{
    BookingStore, DeliveryQueue, EndpointStore, EventOutbox, SecretCipher, SecretContext,
};
use common::publish::{publish_event, relay_pending_events, RELAY_BATCH};
use common::testing::{
    api_config, create_key, create_table, read_response, sdk_config, seed_endpoint,
    verify_with_standardwebhooks, ApiEvent, Reply, Sink,
};
use serde_json::{json, Value};

use crate::contract_queue::{SqsPair, TestQueue};
use crate::contract_store::org;

const LOCAL: TargetPolicy = TargetPolicy::LOCAL_DEVELOPMENT;

fn delivery_config(targets: TargetPolicy, schedule: &str) -> DeliveryConfig {
    DeliveryConfig {
        targets,
        schedule: schedule.parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        concurrency: 4,
        secret_cache_ttl: Duration::from_secs(300),
        circuit: CircuitPolicy {
            failures: 100,
            open_for: Duration::from_secs(60),
        },
        disable_after: Duration::from_secs(5 * 86_400),
        retention: Duration::from_secs(30 * 86_400),
        metrics: common::metrics::Metrics::in_memory("WebhooksTest"),
    }
}

/// A dead letter as the DLQ holds it: the body, and why it stopped (message attributes).
pub struct Letter {
    pub body: String,
    pub message: Option<DeliveryMessage>,
    pub reason: Option<String>,
    pub attempts: Option<u32>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

impl Letter {
    pub fn new(body: String, attributes: &std::collections::BTreeMap<String, String>) -> Self {
        Self {
            message: serde_json::from_str(&body).ok(),
            body,
            reason: attributes.get(DeadLetter::REASON).cloned(),
            attempts: attributes
                .get(DeadLetter::ATTEMPTS)
                .map(|v| v.parse().unwrap()),
            last_status: attributes
                .get(DeadLetter::LAST_STATUS)
                .map(|v| v.parse().unwrap()),
            last_error: attributes.get(DeadLetter::LAST_ERROR).cloned(),
        }
    }
}

/// A table, a key, a queue pair, and the deliverer over them.
struct World {
    table: String,
    key: String,
    store: DynamoStore,
    cipher: KmsCipher,
    queue: SqsPair,
    deliverer: Deliverer<DynamoStore, KmsCipher>,
}

impl World {
    async fn new(targets: TargetPolicy, schedule: &str) -> Self {
        let sdk = sdk_config().await;
        let table = create_table(&sdk).await;
        let key = create_key(&sdk).await;
        Self {
            table: table.clone(),
            key: key.clone(),
            store: DynamoStore::from_sdk_config(&sdk, &table),
            cipher: KmsCipher::from_sdk_config(&sdk, &key),
            queue: SqsPair::new(MAX_RECEIVES).await,
            deliverer: Deliverer::new(
                DynamoStore::from_sdk_config(&sdk, &table),
                KmsCipher::from_sdk_config(&sdk, &key),
                delivery_config(targets, schedule),
            )
            .unwrap(),
        }
    }

    /// Creates an endpoint through the API handler; returns its id and secret.
    async fn create_endpoint(&self, org: &str, url: &str, events: &[&str]) -> (String, String) {
        let request = ApiEvent::new("POST", "/webhooks", "/webhooks")
            .org(org)
            .json(&json!({ "url": url, "events": events }))
            .request();
        let (status, body) = read_response(
            api::create_webhook(&self.store, &self.cipher, &api_config(LOCAL), request).await,
        );
        assert_eq!(status, 201, "{body}");
        let endpoint = &body["endpoint"];
        (
            endpoint["id"].as_str().unwrap().to_owned(),
            endpoint["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Stores an endpoint directly, bypassing the API's URL rules (a URL accepted under other
    /// settings, or a name whose DNS changed since).
    async fn insert_endpoint(&self, org_name: &str, url: &str) -> String {
        let id = EndpointId::generate().unwrap();
        seed_endpoint(&self.store, &self.cipher, &org(org_name), &id, url).await;
        id.to_string()
    }

    async fn post_booking(&self, org: &str, queue: &SqsDeliveryQueue) -> Value {
        let request = ApiEvent::new("POST", "/bookings", "/bookings")
            .org(org)
            .json(&json!({
                "customerName": "Ada", "customerEmail": "ada@example.com",
                "startTime": "2030-05-01T10:00:00Z", "endTime": "2030-05-01T11:00:00Z", "serviceId": "svc_1"
            }))
            .request();
        let (status, body) = read_response(
            api::create_booking(&self.store, queue, &api_config(LOCAL), request).await,
        );
        assert_eq!(status, 201, "{body}");
        body["booking"].clone()
    }

    /// Receives what is visible (waiting up to `wait` for the first) as an SQS event.
    async fn receive_event(&self, wait: Duration) -> SqsEvent {
        let messages = self.queue.receive_from(&self.queue.url, wait).await;
        let records = messages
            .into_iter()
            .map(|m| {
                let attributes: HashMap<String, String> = m
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect();
                serde_json::from_value::<SqsMessage>(json!({
                    "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                    "attributes": attributes, "messageAttributes": {}, "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:delivery", "awsRegion": "us-east-1"
                }))
                .unwrap()
            })
            .collect();
        let mut event = SqsEvent::default();
        event.records = records;
        event
    }

    /// Runs the delivery handler on one received batch, as Lambda would, and returns the ids it
    /// leaves to the queue.
    async fn deliver_once(&self, wait: Duration) -> (usize, Vec<String>) {
        let event = self.receive_event(wait).await;
        let count = event.records.len();
        let response = self.handle(event).await;
        let failed = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        (count, failed)
    }

    /// The handler on an event, with a Lambda deadline 30 s away.
    async fn handle(&self, event: SqsEvent) -> aws_lambda_events::event::sqs::SqsBatchResponse {
        let deadline = common::time::unix_millis_now() + 30_000;
        self.deliverer
            .handle_sqs_event(&self.queue.control, event, deadline)
            .await
    }

    /// Everything in the dead-letter queue.
    async fn dead_letters(&self) -> Vec<Letter> {
        self.queue
            .dead_letters()
            .await
            .into_iter()
            .map(|(body, attributes)| Letter::new(body, &attributes))
            .collect()
    }
}

#[tokio::test]
async fn a_booking_reaches_only_subscribed_enabled_endpoints_of_its_org_signed() {
    let world = World::new(LOCAL, "1s").await;
    let (subscribed, other_type, disabled, foreign) = (
        Sink::always(200).await,
        Sink::always(200).await,
        Sink::always(200).await,
        Sink::always(200).await,
    );
    let (_, secret) = world
        .create_endpoint(
            "org_shop",
            &subscribed.url(),
            &["booking.cancelled", "booking.created"],
        )
        .await;
    world
        .create_endpoint("org_shop", &other_type.url(), &["booking.cancelled"])
        .await;
    let (disabled_id, _) = world
        .create_endpoint("org_shop", &disabled.url(), &["booking.created"])
        .await;
    let patch = ApiEvent::new("PATCH", "/webhooks/{id}", "/webhooks/x")
        .org("org_shop")
        .id(&disabled_id)
        .body(r#"{"disabled":true}"#)
        .request();
    assert_eq!(
        read_response(api::update_webhook(&world.store, &api_config(LOCAL), patch).await).0,
        200
    );
    world
        .create_endpoint("org_other", &foreign.url(), &["booking.created"])
        .await;

    let booking = world.post_booking("org_shop", &world.queue.producer).await;
    assert!(booking["id"].as_str().unwrap().starts_with("bk_"));

    let (count, failed) = world.deliver_once(Duration::from_secs(3)).await;
    assert_eq!(
        (count, failed),
        (1, Vec::<String>::new()),
        "one message, for the one subscriber"
    );

    let received = subscribed.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert!(request.headers["webhook-id"].starts_with("msg_"));
    assert!(request.headers["webhook-signature"].starts_with("v1,"));
    assert_eq!(request.headers["content-type"], "application/json");
    assert!(request.headers["user-agent"].starts_with("serverless-webhooks/"));
    let payload: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(payload["type"], "booking.created");
    assert_eq!(payload["data"]["booking"], booking);
    assert!(common::time::parse_rfc3339(payload["timestamp"].as_str().unwrap()).is_some());
    assert_eq!(payload.as_object().unwrap().len(), 3);

    assert!(
        verify_with_standardwebhooks(&secret, request),
        "the official library accepts the signature"
    );
    let wrong = common::domain::secret::WebhookSecret::generate().unwrap();
    assert!(
        !verify_with_standardwebhooks(wrong.expose(), request),
        "and refuses it under another secret"
    );

    for sink in [&other_type, &disabled, &foreign] {
        assert!(sink.received().is_empty());
    }
}

#[tokio::test]
async fn a_flaky_subscriber_gets_the_same_message_id_on_a_later_attempt() {
    let world = World::new(LOCAL, "3s").await;
    let sink = Sink::start(vec![Reply::status(503)], Reply::status(204)).await;
    let (_, secret) = world
        .create_endpoint("org_flaky", &sink.url(), &["booking.created"])
        .await;
    world.post_booking("org_flaky", &world.queue.producer).await;

    let (count, failed) = world.deliver_once(Duration::from_secs(3)).await;
    assert_eq!(
        (count, failed.len()),
        (1, 0),
        "the failed record is settled at once: re-sent for its next attempt"
    );
    let (count, failed) = world.deliver_once(Duration::ZERO).await;
    assert_eq!(
        count, 0,
        "hidden for the retry delay, not handed out at once"
    );
    assert!(failed.is_empty());
    let (count, failed) = world.deliver_once(Duration::from_secs(5)).await;
    assert_eq!(
        (count, failed.len()),
        (1, 0),
        "delivered on the second attempt"
    );

    let received = sink.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].headers["webhook-id"],
        received[1].headers["webhook-id"]
    );
    assert_eq!(received[0].body, received[1].body);
    assert!(verify_with_standardwebhooks(&secret, &received[1]));
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn an_always_failing_subscriber_ends_in_the_dead_letter_queue() {
    let world = World::new(LOCAL, "1s,1s").await;
    let sink = Sink::always(500).await;
    let (endpoint_id, _) = world
        .create_endpoint("org_down", &sink.url(), &["booking.created"])
        .await;
    world.post_booking("org_down", &world.queue.producer).await;

    for attempt in 1..=3 {
        let (count, failed) = world.deliver_once(Duration::from_secs(6)).await;
        assert_eq!(count, 1, "attempt {attempt} was handed out");
        assert!(failed.is_empty(), "attempt {attempt} settled at once");
    }
    assert_eq!(sink.received().len(), 3, "exactly the configured attempts");
    assert_eq!(
        world.deliver_once(Duration::from_secs(2)).await.0,
        0,
        "nothing left in the delivery queue"
    );

    let letters = world.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.reason.as_deref(), Some("retriesExhausted"));
    assert_eq!(letter.attempts, Some(3));
    assert_eq!(letter.last_status, Some(500));
    assert!(letter.last_error.as_deref().unwrap().contains("HTTP 500"));
    let message = letter.message.as_ref().unwrap();
    assert_eq!(message.endpoint_id.as_str(), endpoint_id);
    assert_eq!(
        (
            message.attempt,
            message.schedule_position(),
            message.due_at.as_deref()
        ),
        (4, 1, None),
        "a replay starts a fresh schedule and numbers its attempts on"
    );
    assert_eq!(
        message.id.as_str(),
        sink.received()[0].headers["webhook-id"]
    );
}

#[tokio::test]
async fn a_mixed_batch_reports_only_the_failed_records() {
    let world = World::new(LOCAL, "30s").await;
    let (good, bad) = (Sink::always(200).await, Sink::always(500).await);
    world
        .create_endpoint("org_mixed", &good.url(), &["booking.created"])
        .await;
    let (bad_id, _) = world
        .create_endpoint("org_mixed", &bad.url(), &["booking.created"])
        .await;
    world.post_booking("org_mixed", &world.queue.producer).await;
    world
        .queue
        .client
        .send_message()
        .queue_url(&world.queue.url)
        .message_body("not a delivery message")
        .send()
        .await
        .unwrap();

    let mut event = world.receive_event(Duration::from_secs(3)).await;
    while event.records.len() < 3 {
        let more = world.receive_event(Duration::from_secs(3)).await;
        assert!(!more.records.is_empty(), "messages went missing");
        event.records.extend(more.records);
    }
    let bad_record = event
        .records
        .iter()
        .find(|r| r.body.as_deref().unwrap().contains(&bad_id))
        .unwrap()
        .message_id
        .clone()
        .unwrap();
    let response = world.handle(event).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "every record settled, the failed one re-sent for later"
    );
    assert_eq!((good.received().len(), bad.received().len()), (1, 1));
    let retry = world
        .queue
        .receive_from(&world.queue.url, Duration::ZERO)
        .await;
    assert!(retry.is_empty(), "the retry waits out of sight");
    let delayed = world
        .queue
        .queue_attribute(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .await;
    assert_eq!(
        delayed, 1,
        "only {bad_record}'s next attempt waits in the queue"
    );

    let letters = world.dead_letters().await;
    assert_eq!(
        letters.len(),
        1,
        "the unreadable message is parked, not retried"
    );
    assert_eq!(letters[0].reason.as_deref(), Some("unreadable"));
    assert_eq!(
        letters[0].body, "not a delivery message",
        "parked as it was"
    );
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_its_location_is_never_fetched() {
    let world = World::new(LOCAL, "30s").await;
    let elsewhere = Sink::always(200).await;
    let redirecting = Sink::start(
        Vec::new(),
        Reply::status(302).header("location", &elsewhere.url()),
    )
    .await;
    world
        .create_endpoint("org_redirect", &redirecting.url(), &["booking.created"])
        .await;
    world
        .post_booking("org_redirect", &world.queue.producer)
        .await;

    let (count, failed) = world.deliver_once(Duration::from_secs(3)).await;
    assert_eq!((count, failed.len()), (1, 0));
    assert_eq!(redirecting.received().len(), 1);
    assert!(elsewhere.received().is_empty());
}

#[tokio::test]
async fn a_410_disables_the_endpoint_without_retry() {
    let world = World::new(LOCAL, "30s").await;
    let sink = Sink::always(410).await;
    let (id, _) = world
        .create_endpoint("org_gone", &sink.url(), &["booking.created"])
        .await;
    world.post_booking("org_gone", &world.queue.producer).await;
    let (count, failed) = world.deliver_once(Duration::from_secs(3)).await;
    assert_eq!((count, failed.len()), (1, 0));
    let endpoint = world
        .store
        .get_endpoint(&org("org_gone"), &EndpointId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(endpoint.disabled);
    assert_eq!(endpoint.disabled_reason, Some(DisabledReason::Gone));
    assert!(endpoint.disabled_at.is_some());

    // Later messages for it are dropped, not sent.
    world.post_booking("org_gone", &world.queue.producer).await;
    assert_eq!(
        world.deliver_once(Duration::from_secs(2)).await.0,
        0,
        "a disabled endpoint is not published to"
    );
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test]
async fn a_booking_survives_an_unreachable_queue_and_its_event_is_relayed_later() {
    let world = World::new(LOCAL, "30s").await;
    let sink = Sink::always(200).await;
    let (_, secret) = world
        .create_endpoint("org_noqueue", &sink.url(), &["booking.created"])
        .await;
    let sdk = sdk_config().await;
    let nowhere = SqsDeliveryQueue::from_sdk_config(
        &sdk,
        format!(
            "{}/000000000000/no-such-queue",
            common::testing::aws_endpoint()
        ),
    );
    let booking = world.post_booking("org_noqueue", &nowhere).await;
    let id = common::domain::id::BookingId::parse(booking["id"].as_str().unwrap()).unwrap();
    assert!(
        world
            .store
            .get_booking(&org("org_noqueue"), &id)
            .await
            .unwrap()
            .is_some(),
        "the booking was stored"
    );
    assert_eq!(
        world.deliver_once(Duration::from_millis(500)).await.0,
        0,
        "nothing was enqueued"
    );

    // Nothing listening at all: the SDK's retries run into the publish timeout; still a 201.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = common::testing::sdk_config_for(&format!("http://{closed}")).await;
    let dead_end = SqsDeliveryQueue::from_sdk_config(
        &unreachable,
        format!("http://{closed}/000000000000/delivery"),
    );
    let second = world.post_booking("org_noqueue", &dead_end).await;

    // The relay finds both events in the outbox and publishes them once the queue is back.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = relay_pending_events(&world.store, &world.queue.producer, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((report.published, report.failed), (2, 0));
    let mut delivered = 0;
    while delivered < 2 {
        let (count, failed) = world.deliver_once(Duration::from_secs(3)).await;
        assert!(
            count > 0 && failed.is_empty(),
            "messages went missing or failed"
        );
        delivered += count;
    }
    let received = sink.received();
    assert_eq!(received.len(), 2);
    assert!(received
        .iter()
        .all(|r| verify_with_standardwebhooks(&secret, r)));
    let mut bookings: Vec<Value> = received
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["data"]["booking"].clone())
        .collect();
    bookings.sort_by_key(|b| b["id"].to_string());
    let mut expected = vec![booking, second];
    expected.sort_by_key(|b| b["id"].to_string());
    assert_eq!(bookings, expected);

    let again = relay_pending_events(&world.store, &world.queue.producer, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(again.published, 0, "cleared once published");
}

#[tokio::test]
async fn a_published_booking_leaves_nothing_in_the_outbox_and_replays_keep_message_ids() {
    let world = World::new(LOCAL, "30s").await;
    let sink = Sink::always(200).await;
    world
        .create_endpoint("org_clean", &sink.url(), &["booking.created"])
        .await;
    world.post_booking("org_clean", &world.queue.producer).await;
    let far_future = common::time::unix_millis_now() + 3_600_000;
    assert!(world
        .store
        .pending_events(far_future, 100)
        .await
        .unwrap()
        .iter()
        .all(|p| p.org.as_str() != "org_clean"));

    let event =
        common::domain::event::Event::new(EventType::BookingCreated, json!({"n": 1})).unwrap();
    let org_id = org("org_clean");
    publish_event(&world.store, &world.queue.producer, &org_id, &event)
        .await
        .unwrap();
    publish_event(&world.store, &world.queue.producer, &org_id, &event)
        .await
        .unwrap();
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let event = world.receive_event(Duration::from_secs(3)).await;
        assert!(!event.records.is_empty(), "messages went missing");
        ids.extend(event.records.iter().map(|r| {
            serde_json::from_str::<Value>(r.body.as_deref().unwrap()).unwrap()["id"].clone()
        }));
    }
    ids.sort_by_key(|v| v.to_string());
    assert_eq!(
        ids[1], ids[2],
        "the same event publishes the same message id: {ids:?}"
    );
}

/// Counts decryptions on the way to KMS.
struct CountingCipher {
    inner: KmsCipher,
    decryptions: std::sync::atomic::AtomicUsize,
}

impl SecretCipher for CountingCipher {
    async fn encrypt(
        &self,
        plaintext: &[u8],
        context: SecretContext<'_>,
    ) -> Result<Vec<u8>, common::error::CipherError> {
        self.inner.encrypt(plaintext, context).await
    }
    async fn decrypt(
        &self,
        ciphertext: &[u8],
        context: SecretContext<'_>,
    ) -> Result<Vec<u8>, common::error::CipherError> {
        self.decryptions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.decrypt(ciphertext, context).await
    }
}

#[tokio::test]
async fn a_warm_container_decrypts_each_secret_once() {
    let world = World::new(LOCAL, "30s").await;
    let sdk = sdk_config().await;
    let counting = CountingCipher {
        inner: KmsCipher::from_sdk_config(&sdk, &world.key),
        decryptions: Default::default(),
    };
    let deliverer = Deliverer::new(
        DynamoStore::from_sdk_config(&sdk, &world.table),
        counting,
        delivery_config(LOCAL, "30s"),
    )
    .unwrap();
    let sink = Sink::always(200).await;
    let (_, secret) = world
        .create_endpoint("org_cache", &sink.url(), &["booking.created"])
        .await;
    for _ in 0..3 {
        world.post_booking("org_cache", &world.queue.producer).await;
        let event = world.receive_event(Duration::from_secs(3)).await;
        assert_eq!(event.records.len(), 1);
        let deadline = common::time::unix_millis_now() + 30_000;
        let response = deliverer
            .handle_sqs_event(&world.queue.control, event, deadline)
            .await;
        assert!(response.batch_item_failures.is_empty());
    }
    let received = sink.received();
    assert_eq!(received.len(), 3);
    assert!(received
        .iter()
        .all(|r| verify_with_standardwebhooks(&secret, r)));
    // The cipher is reached through the deliverer only; one decryption for three deliveries.
    assert_eq!(deliverer_decryptions(&deliverer), 1);
}

fn deliverer_decryptions(deliverer: &Deliverer<DynamoStore, CountingCipher>) -> usize {
    deliverer
        .cipher()
        .decryptions
        .load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn a_batch_is_delivered_concurrently_so_a_slow_subscriber_holds_nobody() {
    // Each sink answers only once both hold a request: delivered one after the other, the first
    // would wait for a second request that never comes and time out.
    let world = World::new(LOCAL, "30s").await;
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let first = Sink::start(Vec::new(), Reply::status(200).gated(gate.clone())).await;
    let second = Sink::start(Vec::new(), Reply::status(200).gated(gate)).await;
    world
        .create_endpoint("org_slow", &first.url(), &["booking.created"])
        .await;
    world
        .create_endpoint("org_slow", &second.url(), &["booking.created"])
        .await;
    world.post_booking("org_slow", &world.queue.producer).await;

    let mut event = world.receive_event(Duration::from_secs(3)).await;
    while event.records.len() < 2 {
        let more = world.receive_event(Duration::from_secs(3)).await;
        assert!(!more.records.is_empty(), "messages went missing");
        event.records.extend(more.records);
    }
    let response = world.handle(event).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((first.received().len(), second.received().len()), (1, 1));
}

#[tokio::test]
async fn a_subscriber_that_does_not_answer_in_time_is_a_failed_attempt() {
    let mut config = delivery_config(LOCAL, "30s");
    config.request_timeout = Duration::from_secs(1);
    let client = common::delivery::WebhookClient::new(&config).unwrap();
    let silent = Sink::start(
        Vec::new(),
        Reply::status(200).after(Duration::from_secs(10)),
    )
    .await;
    let error = failed_post(&client, &silent.url()).await;
    assert!(error.starts_with("timed out"), "{error}");
}

#[tokio::test]
async fn private_targets_are_refused_at_delivery_end_to_end() {
    // Stored directly: URLs accepted under other settings, or names whose DNS changed since.
    let world = World::new(
        TargetPolicy {
            allow_private: false,
            allow_insecure: true,
        },
        "1s",
    )
    .await;
    let loopback = Sink::always(200).await;
    let port = loopback.address.port();
    let v6 = tokio::net::TcpListener::bind("[::1]:0").await.ok();
    let v6_port = v6.as_ref().map_or(port, |l| l.local_addr().unwrap().port());
    let urls: Vec<String> = [
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://127.0.0.1:{port}/hook"),
        "http://10.0.0.1/hook".to_owned(),
        format!("http://[::1]:{v6_port}/hook"),
        format!("http://localhost:{port}/hook"),
    ]
    .into_iter()
    .chain(
        name_resolving_to_loopback()
            .await
            .map(|name| format!("http://{name}:{port}/hook")),
    )
    .collect();
    for url in &urls {
        world.insert_endpoint("org_ssrf", url).await;
    }
    world.post_booking("org_ssrf", &world.queue.producer).await;

    // One attempt each, dead-lettered at once: a refused target is not retried.
    let mut handed_out = 0;
    while handed_out < urls.len() {
        let (count, _) = world.deliver_once(Duration::from_secs(5)).await;
        assert!(count > 0, "messages went missing");
        handed_out += count;
    }
    assert_eq!(
        world.deliver_once(Duration::from_secs(2)).await.0,
        0,
        "no retry"
    );
    let letters = world.dead_letters().await;
    assert_eq!(letters.len(), urls.len());
    for letter in &letters {
        let error = letter.last_error.as_deref().unwrap();
        assert!(error.starts_with("refused target"), "{error}");
        assert_eq!(letter.reason.as_deref(), Some("refusedTarget"));
        assert_eq!(letter.attempts, Some(1));
    }
    assert!(
        loopback.received().is_empty(),
        "no request reached the loopback listener"
    );
    if let Some(listener) = v6 {
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "no connection reached [::1]");
    }
}

#[tokio::test]
async fn private_targets_are_refused_before_any_connection_is_made() {
    let strict = delivery_config(
        TargetPolicy {
            allow_private: false,
            allow_insecure: true,
        },
        "30s",
    );
    let client = common::delivery::WebhookClient::new(&strict).unwrap();
    let loopback = Sink::always(200).await;
    let port = loopback.address.port();
    for url in [
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://127.0.0.1:{port}/hook"),
        "http://10.0.0.1/hook".to_owned(),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
    ]
    .into_iter()
    .chain(
        name_resolving_to_loopback()
            .await
            .map(|name| format!("http://{name}:{port}/hook")),
    ) {
        let error = failed_post(&client, &url).await;
        assert!(error.starts_with("refused target"), "{url}: {error}");
    }
    assert!(loopback.received().is_empty());
}

#[tokio::test]
async fn messages_for_an_endpoint_deleted_or_disabled_after_publishing_are_dropped() {
    let world = World::new(LOCAL, "30s").await;
    let (deleted, disabled) = (Sink::always(200).await, Sink::always(200).await);
    let (deleted_id, _) = world
        .create_endpoint("org_late", &deleted.url(), &["booking.created"])
        .await;
    let (disabled_id, _) = world
        .create_endpoint("org_late", &disabled.url(), &["booking.created"])
        .await;
    world.post_booking("org_late", &world.queue.producer).await;

    let org_id = org("org_late");
    assert!(world
        .store
        .delete_endpoint(&org_id, &EndpointId::parse(&deleted_id).unwrap())
        .await
        .unwrap());
    let disable = common::domain::endpoint::EndpointChanges {
        disabled: Some(true),
        ..Default::default()
    };
    world
        .store
        .update_endpoint(
            &org_id,
            &EndpointId::parse(&disabled_id).unwrap(),
            &disable,
            "2030-01-01T00:00:00.000Z",
        )
        .await
        .unwrap();

    let mut handed_out = 0;
    while handed_out < 2 {
        let (count, failed) = world.deliver_once(Duration::from_secs(3)).await;
        assert!(count > 0, "messages went missing");
        assert!(failed.is_empty(), "dropped, not retried");
        handed_out += count;
    }
    assert!(deleted.received().is_empty() && disabled.received().is_empty());
    assert!(
        world.dead_letters().await.is_empty(),
        "dropped, not dead-lettered"
    );
}

#[tokio::test]
async fn a_secret_that_no_longer_decrypts_is_dead_lettered_at_once() {
    let world = World::new(LOCAL, "30s").await;
    let sink = Sink::always(200).await;
    let (victim, _) = world
        .create_endpoint("org_tamper", &sink.url(), &["booking.created"])
        .await;
    // Another endpoint's ciphertext, moved onto this row: bound to the other id, it cannot decrypt.
    let other = EndpointId::generate().unwrap();
    seed_endpoint(
        &world.store,
        &world.cipher,
        &org("org_tamper"),
        &other,
        "https://unused.example.com/",
    )
    .await;
    let org_id = org("org_tamper");
    let donor = world
        .store
        .get_endpoint(&org_id, &other)
        .await
        .unwrap()
        .unwrap();
    world.store.delete_endpoint(&org_id, &other).await.unwrap();
    let mut tampered = world
        .store
        .get_endpoint(&org_id, &EndpointId::parse(&victim).unwrap())
        .await
        .unwrap()
        .unwrap();
    tampered.secret_ciphertext = donor.secret_ciphertext;
    world
        .store
        .delete_endpoint(&org_id, &tampered.id)
        .await
        .unwrap();
    world
        .store
        .insert_endpoint(&tampered, 100, None)
        .await
        .unwrap();

    world
        .post_booking("org_tamper", &world.queue.producer)
        .await;
    assert_eq!(
        world.deliver_once(Duration::from_secs(3)).await,
        (1, vec![]),
        "settled at once, no retry"
    );
    assert!(
        sink.received().is_empty(),
        "nothing is sent unsigned or wrongly signed"
    );
    let letters = world.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason.as_deref(), Some("secretUnusable"));
    assert_eq!(letters[0].attempts, Some(1));
}

/// This machine's host name when it resolves to loopback only (as /etc/hosts makes it here): a
/// name not spelled like a local one, so only the vetting resolver can refuse it.
async fn name_resolving_to_loopback() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()?
        .trim()
        .to_owned();
    let addresses: Vec<_> = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .ok()?
        .collect();
    let loopback_only = !addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback());
    loopback_only.then_some(name)
}

/// One POST through the delivery client; the error text of a failed or refused attempt
/// without a status.
async fn failed_post(client: &common::delivery::WebhookClient, url: &str) -> String {
    let result = client
        .post(common::delivery::SignedRequest {
            url,
            message_id: "msg_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            timestamp: 1,
            signature: "v1,x",
            headers: &Default::default(),
            traceparent: None,
            tracestate: None,
            body: "{}".into(),
        })
        .await;
    match result.outcome {
        common::delivery::PostOutcome::Failed {
            status: None,
            error,
            ..
        }
        | common::delivery::PostOutcome::Refused { error } => error,
        other => panic!("{url}: expected a failure without a status, got {other:?}"),
    }
}

#[tokio::test]
async fn a_booking_holding_characters_sqs_refuses_is_delivered_intact() {
    // U+FFFF, U+FFFE and a raw control character: SQS refuses a body that holds them raw (moto
    // does not), so the raw bodies on the queue are checked character by character.
    let world = World::new(LOCAL, "30s").await;
    let sink = Sink::always(200).await;
    let (_, secret) = world
        .create_endpoint("org_chars", &sink.url(), &["booking.created"])
        .await;
    let notes = "allergies: \u{FFFF}\u{FFFE}\u{7}\u{1F} ok";
    let request = ApiEvent::new("POST", "/bookings", "/bookings")
        .org("org_chars")
        .json(&json!({
            "customerName": "Ada \u{FFFE}", "customerEmail": "ada@example.com",
            "startTime": "2030-05-01T10:00:00Z", "endTime": "2030-05-01T11:00:00Z", "notes": notes
        }))
        .request();
    let (status, body) = read_response(
        api::create_booking(
            &world.store,
            &world.queue.producer,
            &api_config(LOCAL),
            request,
        )
        .await,
    );
    assert_eq!(status, 201, "{body}");

    let event = world.receive_event(Duration::from_secs(3)).await;
    assert_eq!(event.records.len(), 1);
    let raw = event.records[0].body.clone().unwrap();
    assert!(
        raw.chars().all(common::domain::queue_body::sqs_accepts),
        "{raw:?}"
    );
    let response = world.handle(event).await;
    assert!(response.batch_item_failures.is_empty());
    let received = sink.received();
    assert_eq!(received.len(), 1);
    assert!(verify_with_standardwebhooks(&secret, &received[0]));
    let payload: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(payload["data"]["booking"]["notes"], notes);
    assert_eq!(payload["data"]["booking"]["customerName"], "Ada \u{FFFE}");
}

#[tokio::test]
async fn events_that_keep_failing_are_set_aside_and_a_backlog_drains_in_one_run() {
    let world = World::new(LOCAL, "30s").await;
    let sink = Sink::always(200).await;
    world
        .create_endpoint("org_poison", &sink.url(), &["booking.created"])
        .await;
    world
        .create_endpoint("org_fine", &sink.url(), &["booking.created"])
        .await;
    // More poisonous events than one outbox read takes, all older than the good ones, and
    // more good ones than one read takes too.
    let poisonous = RELAY_BATCH + 20;
    let good = RELAY_BATCH + 30;
    let insert = |org_name: &'static str| {
        let store = &world.store;
        async move {
            let booking = crate::contract_store::booking();
            let event = common::domain::event::Event::new(
                EventType::BookingCreated,
                json!({ "booking": &booking }),
            )
            .unwrap();
            store
                .insert_booking(&org(org_name), &booking, &event, None)
                .await
                .unwrap();
        }
    };
    for _ in 0..poisonous {
        insert("org_poison").await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    for _ in 0..good {
        insert("org_fine").await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;

    let queue = common::testing::RefusingQueue {
        inner: &world.queue.producer,
        refused_org: Some("org_poison"),
    };
    let report = relay_pending_events(&world.store, &queue, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        (report.published, report.failed, report.out_of_time),
        (good, poisonous, false),
        "every good event is published in one run, past the failing ones"
    );
    let pending = world.store.pending_events(u64::MAX, 1000).await.unwrap();
    assert_eq!(pending.len(), poisonous);
    assert!(pending
        .iter()
        .all(|p| p.org.as_str() == "org_poison" && p.relay_failures == 1));

    // Set aside: the next run does not take them again before their backoff.
    let again = relay_pending_events(&world.store, &queue, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((again.published, again.failed), (0, 0));
}

#[tokio::test]
async fn a_message_naming_no_valid_org_is_dead_lettered_not_dropped() {
    let world = World::new(LOCAL, "30s").await;
    let mut message = common::domain::event::Event::new(EventType::BookingCreated, json!({}))
        .unwrap()
        .message_for(&org("org_x"), EndpointId::generate().unwrap());
    message.org_id = "org#with-a-separator".into();
    world
        .queue
        .producer
        .enqueue(&[common::domain::queue_body::QueueBody::encode(&message).unwrap()])
        .await
        .unwrap();
    assert_eq!(
        world.deliver_once(Duration::from_secs(3)).await,
        (1, vec![]),
        "settled at once"
    );
    let letters = world.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason.as_deref(), Some("unreadable"));
    assert_eq!(letters[0].message.as_ref(), Some(&message));
    assert!(letters[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("no valid org"));
}
