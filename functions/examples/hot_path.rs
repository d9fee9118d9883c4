//! Benchmark: the delivery hot path and the AWS calls of each operation (`scripts/bench hot-path`).
//!
//! Runs the handlers the Lambda binaries run, in-process, on moto:
//! - AWS calls per operation, counted by `scripts/bench_counter.py`, a forwarding proxy in front
//!   of moto that records every request's `X-Amz-Target` and body (so what went over the wire,
//!   not what the code meant to send): an endpoint create, a booking published to N = 1, 10 and
//!   100 endpoints, a batch of 10 deliveries (first with a cold secret cache, then warm), one
//!   retry;
//! - wall time of a batch of 10 records and of one record to a subscriber that answers after
//!   200 ms (median of `RUNS`, default 10), straight to moto;
//! - CPU per delivered webhook: `BATCHES` (default 100) batches of 10 to a subscriber that
//!   answers at once, process CPU during `process_batch` minus the subscriber's own thread.
//!
//! Prints JSON on stdout for `scripts/bench` to tabulate; figures are moto's (one Python process
//! on this machine), not DynamoDB's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::adapters::aws::{DynamoStore, KmsCipher, SqsConsumer, SqsDeliveryQueue};
use common::api;
use common::config::DeliveryConfig;
use common::delivery::Deliverer;
use common::domain::event::{Event, EventType};
use common::domain::id::EndpointId;
use common::domain::queue_body::QueueBody;
use common::domain::target::TargetPolicy;
use common::domain::OrgId;
use common::ports::DeliveryQueue;
use common::testing::{
    api_config, create_key, create_queues, create_table, read_response, sdk_config_for,
    seed_endpoint, unique, ApiEvent, Sink,
};
use serde_json::{json, Value};

/// Process CPU (user + system) so far, in seconds, every thread included.
fn process_cpu() -> f64 {
    cpu(libc::RUSAGE_SELF)
}

fn cpu(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes one plain struct that we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The counting proxy's tally since the last call (which it resets).
fn take_counts(counter: &str) -> Value {
    let address = counter.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /__bench/counts HTTP/1.0\r\nHost: {address}\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).unwrap()
}

/// A subscriber on a thread of its own, so that its CPU can be told apart from the worker's.
struct ThreadSink {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<std::thread::JoinHandle<f64>>,
}

impl ThreadSink {
    fn start(delay: Duration) -> Self {
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let sink =
                    Sink::start(Vec::new(), common::testing::Reply::status(200).after(delay)).await;
                url_tx.send(sink.url()).unwrap();
                let _ = stopped.await;
            });
            cpu(libc::RUSAGE_THREAD)
        });
        Self {
            url: url_rx.recv().unwrap(),
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Stops the sink; its thread's CPU in seconds.
    fn stop(mut self) -> f64 {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().join().unwrap()
    }
}

struct Rig {
    store: DynamoStore,
    cipher: KmsCipher,
    producer: SqsDeliveryQueue,
    consumer: SqsConsumer,
    deliverer: Deliverer<DynamoStore, KmsCipher>,
}

impl Rig {
    async fn new(endpoint: &str, table: &str, key: &str, queue: &str, dead_letters: &str) -> Self {
        let sdk = sdk_config_for(endpoint).await;
        let store = DynamoStore::from_sdk_config(&sdk, table);
        let cipher = KmsCipher::from_sdk_config(&sdk, key);
        let mut config = DeliveryConfig::from_source(&|_: &str| None).unwrap();
        config.targets = TargetPolicy::LOCAL_DEVELOPMENT;
        Self {
            deliverer: Deliverer::new(store.clone(), cipher.clone(), config).unwrap(),
            producer: SqsDeliveryQueue::from_sdk_config(&sdk, queue),
            consumer: SqsConsumer::from_sdk_config(&sdk, queue, dead_letters),
            store,
            cipher,
        }
    }

    async fn endpoints(&self, org: &OrgId, url: &str, n: usize) -> Vec<EndpointId> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let id = EndpointId::generate().unwrap();
            seed_endpoint(&self.store, &self.cipher, org, &id, url).await;
            ids.push(id);
        }
        ids
    }

    /// Queues one message per entry of `to` and receives them as the Lambda poller would.
    async fn records(
        &self,
        org: &OrgId,
        to: &[EndpointId],
    ) -> Vec<common::domain::delivery::QueueRecord> {
        let bodies: Vec<QueueBody> = to
            .iter()
            .map(|endpoint| {
                let message = Event::new(EventType::BookingCreated, json!({ "n": 1 }))
                    .unwrap()
                    .message_for(org, endpoint.clone());
                QueueBody::encode(&message).unwrap()
            })
            .collect();
        self.producer.enqueue(&bodies).await.unwrap();
        let mut records = Vec::new();
        while records.len() < to.len() {
            records.extend(self.consumer.receive(10, 1).await.unwrap());
        }
        records
    }

    async fn process(&self, records: Vec<common::domain::delivery::QueueRecord>) -> Duration {
        let started = Instant::now();
        let left = self
            .deliverer
            .process_batch(
                &self.consumer,
                records,
                tokio::time::Instant::now() + Duration::from_secs(30),
            )
            .await;
        assert!(left.is_empty(), "records left to the queue: {left:?}");
        started.elapsed()
    }
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let runs = env_number("RUNS", 10);
    let batches = env_number("BATCHES", 100);
    let moto = common::testing::aws_endpoint();
    let counter = std::env::var("BENCH_COUNTER").expect("BENCH_COUNTER: the counting proxy");
    let setup = sdk_config_for(&moto).await;
    let (table, key) = (create_table(&setup).await, create_key(&setup).await);
    let queues = create_queues(&setup, 5).await;
    let counted = Rig::new(&counter, &table, &key, &queues.url, &queues.dead_letter_url).await;
    let direct = Rig::new(&moto, &table, &key, &queues.url, &queues.dead_letter_url).await;
    let config = api_config(TargetPolicy::LOCAL_DEVELOPMENT);
    let fast = ThreadSink::start(Duration::ZERO);
    let mut report = serde_json::Map::new();

    // An endpoint create, through the API handler.
    take_counts(&counter);
    let request = ApiEvent::new("POST", "/webhooks", "/webhooks")
        .org("org_bench_create")
        .json(&json!({ "url": fast.url, "events": ["booking.created"] }))
        .request();
    let (status, body) =
        read_response(api::create_webhook(&counted.store, &counted.cipher, &config, request).await);
    assert_eq!(status, 201, "{body}");
    report.insert("endpoint create".into(), take_counts(&counter));

    // A booking published to N endpoints, through the API handler.
    for n in [1usize, 10, 100] {
        let org = OrgId::parse(&unique("org_bench_fanout")).unwrap();
        direct.endpoints(&org, &fast.url, n).await;
        take_counts(&counter);
        let request = ApiEvent::new("POST", "/bookings", "/bookings")
            .org(&org.to_string())
            .json(&json!({
                "customerName": "Ada", "customerEmail": "ada@example.com",
                "startTime": "2030-05-01T10:00:00Z", "endTime": "2030-05-01T11:00:00Z",
                "serviceId": "svc_1"
            }))
            .request();
        let (status, body) = read_response(
            api::create_booking(&counted.store, &counted.producer, &config, request).await,
        );
        assert_eq!(status, 201, "{body}");
        report.insert(format!("booking to {n} endpoints"), take_counts(&counter));
        // Leave the queue empty for the batches below.
        let mut left = n;
        while left > 0 {
            let records = direct.consumer.receive(10, 1).await.unwrap();
            left = left.saturating_sub(records.len());
            let handles: Vec<&str> = records.iter().map(|r| r.receipt_handle.as_str()).collect();
            common::ports::QueueConsumer::acknowledge(&direct.consumer, &handles)
                .await
                .unwrap();
        }
    }

    // A batch of 10 deliveries, one message to each of 10 endpoints: cold, then warm cache.
    let org = OrgId::parse(&unique("org_bench_batch")).unwrap();
    let ten = direct.endpoints(&org, &fast.url, 10).await;
    for label in [
        "batch of 10 deliveries, 10 endpoints, cold secret cache",
        "batch of 10 deliveries, 10 endpoints, warm",
    ] {
        let records = counted.records(&org, &ten).await;
        take_counts(&counter);
        counted.process(records).await;
        report.insert(label.into(), take_counts(&counter));
    }
    // Ten messages to one endpoint with a cold cache: how many decryptions.
    let one = direct.endpoints(&org, &fast.url, 1).await;
    let records = counted.records(&org, &vec![one[0].clone(); 10]).await;
    take_counts(&counter);
    counted.process(records).await;
    report.insert(
        "batch of 10 deliveries, 1 endpoint, cold secret cache".into(),
        take_counts(&counter),
    );

    // Batch of 10 vs one delivery to a subscriber answering after 200 ms, warm, straight to moto.
    let slow = ThreadSink::start(Duration::from_millis(200));
    let slow_endpoint = direct.endpoints(&org, &slow.url, 1).await;
    let warm = direct.records(&org, &slow_endpoint).await;
    direct.process(warm).await;
    let (mut singles, mut tens) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let records = direct.records(&org, &slow_endpoint).await;
        singles.push(direct.process(records).await);
        let records = direct
            .records(&org, &vec![slow_endpoint[0].clone(); 10])
            .await;
        tens.push(direct.process(records).await);
    }
    slow.stop();
    let (single, ten_ms) = (median(singles), median(tens));
    report.insert(
        "200 ms subscriber".into(),
        json!({ "runs": runs, "one delivery ms": single, "batch of 10 ms": ten_ms, "ratio": ten_ms / single }),
    );

    // CPU per delivered webhook, warm, subscriber answering at once.
    fast.stop();
    let cpu_sink = ThreadSink::start(Duration::ZERO);
    let targets = direct.endpoints(&org, &cpu_sink.url, 10).await;
    let mut busy = 0.0;
    for _ in 0..batches {
        let records = direct.records(&org, &targets).await;
        let before = process_cpu();
        direct.process(records).await;
        busy += process_cpu() - before;
    }
    let sink_cpu = cpu_sink.stop();
    let deliveries = (batches * 10) as f64;
    report.insert(
        "cpu per delivery".into(),
        json!({ "deliveries": deliveries, "process cpu ms": busy * 1e3, "subscriber cpu ms": sink_cpu * 1e3,
                "us per delivery": (busy - sink_cpu).max(0.0) / deliveries * 1e6 }),
    );
    // One retry: a subscriber answering 500.
    let failing = Sink::always(500).await;
    let broken = direct.endpoints(&org, &failing.url(), 1).await;
    let records = counted.records(&org, &broken).await;
    take_counts(&counter);
    counted.process(records).await;
    report.insert(
        "one failed attempt (retry scheduled)".into(),
        take_counts(&counter),
    );

    println!("{}", Value::Object(report));
}
