//! The delivery engine's promises, on the embedded adapters and on moto alike: a crash burns no
//! attempt and loses no message, in-flight messages stay bounded, a black-holed endpoint holds
//! nobody else, circuits open and probe, failing endpoints are disabled, `Retry-After` is a
//! floor, refused targets are dead-lettered at once, and every attempt is recorded.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::adapters::aws::{DynamoStore, KmsCipher};
use common::adapters::embedded::{LocalCipher, LocalQueue, MemoryStore};
use common::config::DeliveryConfig;
use common::delivery::Deliverer;
use common::domain::delivery::{
    CircuitPolicy, DisabledReason, MessageState, Outcome, QueueRecord, MAX_RECEIVES,
};
use common::domain::event::{DeliveryMessage, Event, EventType};
use common::domain::id::{EndpointId, MessageId};
use common::domain::queue_body::QueueBody;
use common::domain::target::TargetPolicy;
use common::domain::OrgId;
use common::ports::{DeliveryLog, EndpointStore, SecretCipher};
use common::testing::{create_key, create_table, sdk_config, seed_endpoint, Reply, Sink};
use common::time::{parse_rfc3339, unix_seconds_now};
use serde_json::json;
use tokio::time::Instant;

use crate::contract_queue::{SqsPair, TestQueue};
use crate::contract_store::org;

pub fn config(schedule: &str) -> DeliveryConfig {
    DeliveryConfig {
        targets: TargetPolicy::LOCAL_DEVELOPMENT,
        schedule: schedule.parse().unwrap(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        concurrency: 10,
        secret_cache_ttl: Duration::from_secs(300),
        circuit: CircuitPolicy {
            failures: 1000,
            open_for: Duration::from_secs(60),
        },
        disable_after: Duration::from_secs(5 * 86_400),
        retention: Duration::from_secs(30 * 86_400),
        metrics: common::metrics::Metrics::in_memory("WebhooksTest"),
    }
}

/// A store, a cipher, a queue pair and the deliverer over them.
pub struct Rig<S, C, Q> {
    pub store: S,
    pub cipher: C,
    pub queue: Q,
    pub deliverer: Deliverer<S, C>,
}

impl Rig<MemoryStore, LocalCipher, LocalQueue> {
    pub fn embedded(config: DeliveryConfig) -> Self {
        let (store, cipher) = (MemoryStore::new(), LocalCipher::generate().unwrap());
        Self {
            deliverer: Deliverer::new(store.clone(), cipher.clone(), config).unwrap(),
            queue: LocalQueue::new(Duration::from_secs(30), MAX_RECEIVES),
            store,
            cipher,
        }
    }
}

impl Rig<DynamoStore, KmsCipher, SqsPair> {
    pub async fn moto(config: DeliveryConfig) -> Self {
        let sdk = sdk_config().await;
        let (table, key) = (create_table(&sdk).await, create_key(&sdk).await);
        let store = DynamoStore::from_sdk_config(&sdk, &table);
        let cipher = KmsCipher::from_sdk_config(&sdk, &key);
        Self {
            deliverer: Deliverer::new(store.clone(), cipher.clone(), config).unwrap(),
            queue: SqsPair::new(MAX_RECEIVES).await,
            store,
            cipher,
        }
    }
}

impl<S, C, Q> Rig<S, C, Q>
where
    S: EndpointStore + DeliveryLog + common::ports::EventOutbox,
    C: SecretCipher,
    Q: TestQueue,
{
    pub async fn endpoint(&self, org_id: &OrgId, url: &str) -> EndpointId {
        let id = EndpointId::generate().unwrap();
        seed_endpoint(&self.store, &self.cipher, org_id, &id, url).await;
        id
    }

    /// Publishes `count` messages for `endpoint`, as the fan-out would.
    pub async fn publish(
        &self,
        org_id: &OrgId,
        endpoint: &EndpointId,
        count: usize,
    ) -> Vec<MessageId> {
        let messages: Vec<DeliveryMessage> = (0..count)
            .map(|n| {
                Event::new(EventType::BookingCreated, json!({ "n": n }))
                    .unwrap()
                    .message_for(org_id, endpoint.clone())
            })
            .collect();
        for chunk in messages.chunks(10) {
            let bodies: Vec<QueueBody> = chunk
                .iter()
                .map(|m| QueueBody::encode(m).unwrap())
                .collect();
            assert!(self.queue.enqueue(&bodies).await.unwrap().is_empty());
        }
        messages.into_iter().map(|m| m.id).collect()
    }

    /// One receive and its processing, as one consumer instance would; the records it got.
    pub async fn deliver_once(&self, wait: Duration) -> usize {
        let records = self.queue.receive(wait).await;
        let count = records.len();
        let deadline = Instant::now() + Duration::from_secs(20);
        self.deliverer
            .process_batch(&self.queue, records, deadline)
            .await;
        count
    }

    pub async fn state(
        &self,
        org_id: &OrgId,
        endpoint: &EndpointId,
        message: &MessageId,
    ) -> Option<MessageState> {
        self.store
            .message_record(org_id, endpoint, message)
            .await
            .unwrap()
            .map(|record| record.state)
    }

    /// Delivers until every message has ended (any state but pending) or `limit` passes.
    pub async fn drain(
        &self,
        org_id: &OrgId,
        endpoint: &EndpointId,
        messages: &[MessageId],
        limit: Duration,
    ) {
        let give_up = Instant::now() + limit;
        loop {
            let mut open = 0;
            for id in messages {
                if matches!(
                    self.state(org_id, endpoint, id).await,
                    None | Some(MessageState::Pending)
                ) {
                    open += 1;
                }
            }
            if open == 0 {
                return;
            }
            assert!(
                Instant::now() < give_up,
                "{open} messages still open after {limit:?}"
            );
            self.deliver_once(Duration::from_millis(300)).await;
        }
    }

    pub async fn dead_letter_reasons(&self) -> Vec<Option<String>> {
        self.queue
            .dead_letters()
            .await
            .into_iter()
            .map(|(_, attributes)| attributes.get("DeadLetterReason").cloned())
            .collect()
    }

    /// Cancels batches at random points (the future dropped, as a crash or timeout would), lets
    /// what they held come back, then drains: every message ends delivered, none is lost, a repeat
    /// carries the same `webhook-id`, and no attempt is counted for a crash.
    async fn a_crash_loses_nothing_and_burns_no_attempt(&self) {
        let org_id = org("org_crash");
        // The first ten POSTs fail; a message has six attempts, so only burned attempts kill one.
        let sink = Sink::start(
            vec![Reply::status(500); 10],
            Reply::status(200).after(Duration::from_millis(20)),
        )
        .await;
        let endpoint = self.endpoint(&org_id, &sink.url()).await;
        let messages = self.publish(&org_id, &endpoint, 20).await;
        let mut rounds = 0;
        // Four rounds at most: with the drain's receive, a message is received no more than the
        // redrive allows, so none is moved to the dead-letter queue for its crashes.
        while rounds < MAX_RECEIVES - 1 {
            let records = self.queue.receive(Duration::from_millis(500)).await;
            if records.is_empty() {
                break;
            }
            rounds += 1;
            let mut taken: Vec<QueueRecord> = records;
            while taken.len() < 20 {
                let more = self.queue.receive(Duration::from_millis(200)).await;
                if more.is_empty() {
                    break;
                }
                taken.extend(more);
            }
            let cut = Duration::from_millis(u64::from(random_byte()) % 120);
            let batch = self.deliverer.process_batch(
                &self.queue,
                taken.clone(),
                Instant::now() + Duration::from_secs(20),
            );
            let _ = tokio::time::timeout(cut, batch).await;
            for record in &taken {
                self.queue.release(record).await;
            }
        }
        self.drain(&org_id, &endpoint, &messages, Duration::from_secs(60))
            .await;

        let expected: HashSet<&str> = messages.iter().map(|m| m.as_str()).collect();
        let received = sink.received();
        let ids: HashSet<&str> = received
            .iter()
            .map(|r| r.headers["webhook-id"].as_str())
            .collect();
        assert_eq!(
            ids, expected,
            "every message reached the subscriber, under its own id"
        );
        for id in &messages {
            assert_eq!(
                self.state(&org_id, &endpoint, id).await,
                Some(MessageState::Delivered),
                "{id}"
            );
            let attempts = self
                .store
                .attempts_of(&org_id, &endpoint, id)
                .await
                .unwrap();
            let numbers: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
            let expected: Vec<u32> = (1..=numbers.len() as u32).collect();
            assert_eq!(numbers, expected, "{id}: attempts numbered without a gap");
            let failures = received
                .iter()
                .filter(|r| r.headers["webhook-id"] == id.as_str())
                .count();
            assert!(
                numbers.len() <= failures,
                "{id}: an attempt counted that no POST made"
            );
        }
        assert!(self.queue.dead_letters().await.is_empty());
    }

    /// 200 messages to an endpoint that always fails, worked by two consumers of batch 10: the
    /// in-flight count never passes 20, whatever the number of retries waiting.
    async fn in_flight_messages_stay_bounded_by_the_consumers(&self) -> usize {
        let org_id = org("org_bound");
        let sink = Sink::always(500).await;
        let endpoint = self.endpoint(&org_id, &sink.url()).await;
        let messages = self.publish(&org_id, &endpoint, 200).await;
        let done = std::sync::atomic::AtomicBool::new(false);
        let most = std::sync::atomic::AtomicUsize::new(0);
        let sample = async {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let now = self.queue.in_flight().await;
                most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let consume = async {
            let consumer = || async {
                let give_up = Instant::now() + Duration::from_secs(240);
                loop {
                    let dead = self.queue.dead_letters_count().await;
                    if dead >= messages.len() {
                        return;
                    }
                    assert!(Instant::now() < give_up, "only {dead} dead letters");
                    self.deliver_once(Duration::from_millis(300)).await;
                }
            };
            tokio::join!(consumer(), consumer());
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        tokio::join!(sample, consume);
        let most = most.into_inner();
        assert!(most > 0, "the sampler saw nothing in flight");
        assert!(
            most <= 20,
            "{most} messages in flight, more than 2 consumers x 10"
        );
        for id in messages.iter().take(5) {
            let attempts = self
                .store
                .attempts_of(&org_id, &endpoint, id)
                .await
                .unwrap();
            assert_eq!(attempts.len(), 3, "{id}: the whole schedule");
        }
        most
    }

    /// 30 messages to an endpoint that accepts and never answers, and one to another org's: that
    /// one arrives within 3 s through the Lambda handler, and is acknowledged while the handler
    /// still waits on the others.
    async fn a_black_hole_holds_only_its_own_messages_in_the_handler(&self) {
        let (dark, bright) = (org("org_dark"), org("org_bright"));
        let hole = Sink::start(
            Vec::new(),
            Reply::status(200).after(Duration::from_secs(3600)),
        )
        .await;
        let good = Sink::always(204).await;
        let hole_endpoint = self.endpoint(&dark, &hole.url()).await;
        let good_endpoint = self.endpoint(&bright, &good.url()).await;
        self.publish(&dark, &hole_endpoint, 30).await;
        self.publish(&bright, &good_endpoint, 1).await;
        let mut records = Vec::new();
        while records.len() < 31 {
            let more = self.queue.receive(Duration::from_secs(2)).await;
            assert!(!more.is_empty(), "messages went missing");
            records.extend(more);
        }
        let (bright_record, dark_records): (Vec<QueueRecord>, Vec<QueueRecord>) = records
            .into_iter()
            .partition(|r| r.body.contains(good_endpoint.as_str()));
        let mut batch: Vec<QueueRecord> = dark_records[..9].to_vec();
        batch.insert(4, bright_record[0].clone());
        let started = Instant::now();
        let handler = self.deliverer.process_batch(
            &self.queue,
            batch,
            Instant::now() + Duration::from_secs(25),
        );
        let watch = async {
            loop {
                let delivered = !good.received().is_empty();
                let in_flight = self.queue.in_flight().await;
                if delivered && in_flight == 30 {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "delivered: {delivered}, in flight: {in_flight}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            took = watch => assert!(took < Duration::from_secs(3)),
            _ = handler => panic!("the handler ended before the black hole's timeout"),
        }
    }

    /// After three failures no POST reaches the endpoint until its probe time; then one probe, and
    /// once it succeeds the waiting messages are delivered.
    async fn an_open_circuit_sends_nothing_until_a_probe_succeeds(&self) {
        let org_id = org("org_circuit");
        let sink = Sink::start(vec![Reply::status(503); 3], Reply::status(200)).await;
        let endpoint = self.endpoint(&org_id, &sink.url()).await;
        let messages = self.publish(&org_id, &endpoint, 5).await;
        let opened = Instant::now();
        while self.deliver_once(Duration::from_millis(500)).await > 0
            && opened.elapsed() < Duration::from_secs(1)
        {}
        assert_eq!(sink.received().len(), 3, "three failures, then nothing");
        let health = self
            .store
            .get_endpoint(&org_id, &endpoint)
            .await
            .unwrap()
            .unwrap()
            .health;
        assert!(health.circuit_open_until.is_some(), "{health:?}");
        // The retries come up while the circuit is still open: recorded, not sent.
        while opened.elapsed() < Duration::from_millis(1_800) {
            self.deliver_once(Duration::from_millis(200)).await;
        }
        assert_eq!(
            sink.received().len(),
            3,
            "no POST while the circuit is open"
        );
        self.drain(&org_id, &endpoint, &messages, Duration::from_secs(30))
            .await;
        let mut outcomes = Vec::new();
        for id in &messages {
            assert_eq!(
                self.state(&org_id, &endpoint, id).await,
                Some(MessageState::Delivered)
            );
            outcomes.extend(
                self.store
                    .attempts_of(&org_id, &endpoint, id)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|a| a.outcome),
            );
        }
        assert!(outcomes.contains(&Outcome::CircuitOpen), "{outcomes:?}");
        assert_eq!(
            sink.received().len(),
            3 + 5,
            "one POST per delivery after the probe"
        );
        let health = self
            .store
            .get_endpoint(&org_id, &endpoint)
            .await
            .unwrap()
            .unwrap()
            .health;
        assert_eq!(
            (health.failure_streak, health.circuit_open_until),
            (0, None)
        );
    }

    /// An endpoint that keeps failing is disabled with the reason `failing`; its messages are then
    /// dropped.
    async fn a_failing_endpoint_is_disabled(&self) {
        let org_id = org("org_failing");
        let sink = Sink::always(500).await;
        let endpoint = self.endpoint(&org_id, &sink.url()).await;
        let messages = self.publish(&org_id, &endpoint, 1).await;
        self.drain(&org_id, &endpoint, &messages, Duration::from_secs(30))
            .await;
        let stored = self
            .store
            .get_endpoint(&org_id, &endpoint)
            .await
            .unwrap()
            .unwrap();
        assert!(stored.disabled);
        assert_eq!(stored.disabled_reason, Some(DisabledReason::Failing));
        assert!(stored.disabled_at.is_some());
        assert_eq!(
            self.state(&org_id, &endpoint, &messages[0]).await,
            Some(MessageState::Dropped)
        );
        // Failed POSTs a jittered second apart until the streak is 1.5 s old, then dropped.
        let attempts = self
            .store
            .attempts_of(&org_id, &endpoint, &messages[0])
            .await
            .unwrap();
        let failed: Vec<_> = attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Failed)
            .collect();
        assert_eq!(failed.len(), sink.received().len());
        let (first, last) = (
            parse_rfc3339(&failed[0].at).unwrap(),
            parse_rfc3339(&failed[failed.len() - 1].at).unwrap(),
        );
        assert!(
            (last - first).whole_milliseconds() >= 1_500,
            "disabled before the streak was 1.5 s old: {attempts:?}"
        );
        assert_eq!(attempts.last().unwrap().outcome, Outcome::Dropped);
    }

    /// A 429 with `Retry-After: 20` on a schedule of 1 s: the next attempt is 20 s later.
    async fn retry_after_is_a_floor(&self) {
        let org_id = org("org_busy");
        let sink = Sink::start(
            vec![Reply::status(429).header("retry-after", "20")],
            Reply::status(200),
        )
        .await;
        let endpoint = self.endpoint(&org_id, &sink.url()).await;
        let messages = self.publish(&org_id, &endpoint, 1).await;
        assert_eq!(self.deliver_once(Duration::from_secs(2)).await, 1);
        let record = self
            .store
            .message_record(&org_id, &endpoint, &messages[0])
            .await
            .unwrap()
            .unwrap();
        let attempt = &self
            .store
            .attempts_of(&org_id, &endpoint, &messages[0])
            .await
            .unwrap()[0];
        assert_eq!(
            (record.state, attempt.status_code),
            (MessageState::Pending, Some(429))
        );
        let next = parse_rfc3339(record.next_attempt_at.as_deref().unwrap()).unwrap();
        let at = parse_rfc3339(&attempt.at).unwrap();
        assert!(
            (next - at).whole_seconds() >= 20,
            "next attempt {next} after {at}"
        );
        for _ in 0..3 {
            self.deliver_once(Duration::from_millis(500)).await;
        }
        assert_eq!(sink.received().len(), 1, "not sooner than asked");
    }

    /// A flaky endpoint's attempts, in order, each with its status, latency and response; they
    /// expire with the retention.
    async fn attempts_are_recorded_in_order(&self) {
        let org_id = org("org_flaky_log");
        let sink = Sink::start(
            vec![
                Reply::status(503).after(Duration::from_millis(50)),
                Reply::status(500),
            ],
            Reply::status(200),
        )
        .await;
        let endpoint = self.endpoint(&org_id, &sink.url()).await;
        let messages = self.publish(&org_id, &endpoint, 1).await;
        self.drain(&org_id, &endpoint, &messages, Duration::from_secs(20))
            .await;
        let attempts = self
            .store
            .attempts_of(&org_id, &endpoint, &messages[0])
            .await
            .unwrap();
        let summary: Vec<(u32, Outcome, Option<u16>)> = attempts
            .iter()
            .map(|a| (a.attempt, a.outcome, a.status_code))
            .collect();
        assert_eq!(
            summary,
            [
                (1, Outcome::Failed, Some(503)),
                (2, Outcome::Failed, Some(500)),
                (3, Outcome::Delivered, Some(200))
            ]
        );
        assert!(attempts[0].latency_ms >= 50, "{:?}", attempts[0]);
        assert!(attempts
            .iter()
            .all(|a| a.response_body.as_deref() == Some("ok")));
        assert!(
            attempts.windows(2).all(|w| w[0].at < w[1].at),
            "in time order"
        );
        let retention = 30 * 86_400;
        let now = unix_seconds_now();
        for attempt in &attempts {
            assert!(
                (attempt.expires_at - (now + retention)).abs() < 120,
                "{attempt:?}"
            );
        }
        let record = self
            .store
            .message_record(&org_id, &endpoint, &messages[0])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (record.state, record.attempts, record.last_status),
            (MessageState::Delivered, 3, Some(200))
        );
    }

    /// A target the URL rules refuse: one attempt, dead-lettered with `refusedTarget`.
    async fn a_refused_target_is_dead_lettered_at_once(&self) {
        let org_id = org("org_refused");
        let endpoint = self
            .endpoint(&org_id, "https://169.254.169.254/latest/meta-data")
            .await;
        let messages = self.publish(&org_id, &endpoint, 1).await;
        assert_eq!(self.deliver_once(Duration::from_secs(2)).await, 1);
        assert_eq!(
            self.deliver_once(Duration::from_millis(1_500)).await,
            0,
            "not retried"
        );
        assert_eq!(
            self.dead_letter_reasons().await,
            [Some("refusedTarget".to_owned())]
        );
        let attempts = self
            .store
            .attempts_of(&org_id, &endpoint, &messages[0])
            .await
            .unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, Outcome::Refused);
        assert_eq!(
            self.state(&org_id, &endpoint, &messages[0]).await,
            Some(MessageState::Dead)
        );
    }
}

fn random_byte() -> u8 {
    let mut byte = [0u8; 1];
    common::domain::id::fill_random(&mut byte).unwrap();
    byte[0]
}

fn strict(mut config: DeliveryConfig) -> DeliveryConfig {
    config.targets = TargetPolicy::STRICT;
    config
}

fn circuit(mut config: DeliveryConfig) -> DeliveryConfig {
    config.circuit = CircuitPolicy {
        failures: 3,
        open_for: Duration::from_secs(2),
    };
    config.concurrency = 1;
    config
}

fn disabling(mut config: DeliveryConfig) -> DeliveryConfig {
    config.disable_after = Duration::from_millis(1_500);
    config
}

#[tokio::test]
async fn the_engine_keeps_its_promises_on_the_embedded_adapters() {
    Rig::embedded(config("1s,1s,1s,1s,1s"))
        .a_crash_loses_nothing_and_burns_no_attempt()
        .await;
    let most = Rig::embedded(config("1s,1s"))
        .in_flight_messages_stay_bounded_by_the_consumers()
        .await;
    eprintln!("embedded: at most {most} messages in flight");
    Rig::embedded(config("1m"))
        .a_black_hole_holds_only_its_own_messages_in_the_handler()
        .await;
    Rig::embedded(circuit(config("1s,1s,1s,1s,1s,1s")))
        .an_open_circuit_sends_nothing_until_a_probe_succeeds()
        .await;
    Rig::embedded(disabling(config("1s,1s,1s,1s,1s")))
        .a_failing_endpoint_is_disabled()
        .await;
    Rig::embedded(config("1s")).retry_after_is_a_floor().await;
    Rig::embedded(config("1s,1s,1s"))
        .attempts_are_recorded_in_order()
        .await;
    Rig::embedded(strict(config("1s")))
        .a_refused_target_is_dead_lettered_at_once()
        .await;
}

#[tokio::test]
async fn the_engine_keeps_its_promises_on_moto() {
    Rig::moto(config("1s,1s,1s,1s,1s"))
        .await
        .a_crash_loses_nothing_and_burns_no_attempt()
        .await;
    let most = Rig::moto(config("1s,1s"))
        .await
        .in_flight_messages_stay_bounded_by_the_consumers()
        .await;
    eprintln!("moto: at most {most} messages in flight");
    Rig::moto(config("1m"))
        .await
        .a_black_hole_holds_only_its_own_messages_in_the_handler()
        .await;
    Rig::moto(circuit(config("1s,1s,1s,1s,1s,1s")))
        .await
        .an_open_circuit_sends_nothing_until_a_probe_succeeds()
        .await;
    Rig::moto(disabling(config("1s,1s,1s,1s,1s")))
        .await
        .a_failing_endpoint_is_disabled()
        .await;
    Rig::moto(config("1s")).await.retry_after_is_a_floor().await;
    Rig::moto(config("1s,1s,1s"))
        .await
        .attempts_are_recorded_in_order()
        .await;
    Rig::moto(strict(config("1s")))
        .await
        .a_refused_target_is_dead_lettered_at_once()
        .await;
}

/// The local runner's worker, with 30 messages to a black hole ahead of another org's: that
/// one arrives within 3 s, because the worker keeps receiving while deliveries are under way.
#[tokio::test]
async fn the_local_worker_keeps_receiving_past_a_black_hole() {
    let rig = Rig::embedded(config("1m"));
    let (dark, bright) = (org("org_dark_local"), org("org_bright_local"));
    let hole = Sink::start(
        Vec::new(),
        Reply::status(200).after(Duration::from_secs(3600)),
    )
    .await;
    let good = Sink::always(204).await;
    let hole_endpoint = rig.endpoint(&dark, &hole.url()).await;
    let good_endpoint = rig.endpoint(&bright, &good.url()).await;
    rig.publish(&dark, &hole_endpoint, 30).await;
    let Rig {
        deliverer, queue, ..
    } = rig;
    let (deliverer, queue) = (Arc::new(deliverer), Arc::new(queue));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(common::local::worker::run(
        deliverer,
        queue.clone(),
        stopped,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let message = Event::new(EventType::BookingCreated, json!({}))
        .unwrap()
        .message_for(&bright, good_endpoint);
    let sent = Instant::now();
    queue
        .send(QueueBody::encode(&message).unwrap().into_string())
        .unwrap();
    while good.received().is_empty() {
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "held behind the black hole"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        hole.received().len() >= 30,
        "the black hole holds its own messages meanwhile"
    );
    stop.send(true).unwrap();
    worker.abort();
}
