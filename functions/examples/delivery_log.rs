//! Benchmark: what the attempt records cost a batch of 10 (`scripts/bench log`).
//!
//! On moto, `RUNS` times (default 30): a batch of 10 messages to a loopback subscriber that
//! answers 200 at once goes through `Deliverer::process_batch`, and, separately, the same
//! batch's 10 log entries (10 attempt records and 10 message states: one `BatchWriteItem`) are
//! written on their own. Prints the median and 90th percentile of each. Figures are moto's (one
//! Python process on this machine), not DynamoDB's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use common::adapters::aws::{DynamoStore, KmsCipher, SqsConsumer};
use common::config::DeliveryConfig;
use common::delivery::Deliverer;
use common::domain::delivery::{
    AttemptRecord, LogEntry, MessageRecord, MessageState, Outcome, QueueRecord,
};
use common::domain::event::{Event, EventType};
use common::domain::id::EndpointId;
use common::domain::queue_body::QueueBody;
use common::domain::target::TargetPolicy;
use common::domain::OrgId;
use common::ports::{DeliveryLog, DeliveryQueue};
use common::testing::{create_key, create_queues, create_table, sdk_config, seed_endpoint, Sink};

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    let sdk = sdk_config().await;
    let (table, key) = (create_table(&sdk).await, create_key(&sdk).await);
    let queues = create_queues(&sdk, 5).await;
    let store = DynamoStore::from_sdk_config(&sdk, &table);
    let cipher = KmsCipher::from_sdk_config(&sdk, &key);
    let consumer = SqsConsumer::from_sdk_config(&sdk, &queues.url, &queues.dead_letter_url);
    let producer = common::adapters::aws::SqsDeliveryQueue::from_sdk_config(&sdk, &queues.url);
    let mut config = DeliveryConfig::from_source(&|_: &str| None).unwrap();
    config.targets = TargetPolicy::LOCAL_DEVELOPMENT;
    let deliverer = Deliverer::new(store.clone(), cipher.clone(), config).unwrap();
    let org = OrgId::parse("org_bench_log").unwrap();
    let sink = Sink::always(200).await;
    let endpoint = EndpointId::generate().unwrap();
    seed_endpoint(&store, &cipher, &org, &endpoint, &sink.url()).await;

    let (mut batches, mut logs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let messages: Vec<_> = (0..10)
            .map(|_| {
                Event::new(EventType::BookingCreated, serde_json::json!({ "n": 1 }))
                    .unwrap()
                    .message_for(&org, endpoint.clone())
            })
            .collect();
        let bodies: Vec<QueueBody> = messages
            .iter()
            .map(|m| QueueBody::encode(m).unwrap())
            .collect();
        producer.enqueue(&bodies).await.unwrap();
        let mut records: Vec<QueueRecord> = Vec::new();
        while records.len() < 10 {
            records.extend(consumer.receive(10, 1).await.unwrap());
        }
        let started = Instant::now();
        let left = deliverer
            .process_batch(
                &consumer,
                records,
                tokio::time::Instant::now() + Duration::from_secs(20),
            )
            .await;
        batches.push(started.elapsed());
        assert!(left.is_empty());

        let entries: Vec<LogEntry> = messages
            .iter()
            .map(|m| LogEntry {
                attempt: AttemptRecord {
                    org: org.clone(),
                    endpoint_id: endpoint.clone(),
                    message_id: m.id.clone(),
                    attempt: 2,
                    at: common::time::now_rfc3339(),
                    outcome: Outcome::Delivered,
                    status_code: Some(200),
                    error_class: None,
                    error: None,
                    latency_ms: 3,
                    response_body: Some("ok".into()),
                    trigger: common::domain::delivery::Trigger::Scheduled,
                    expires_at: common::time::unix_seconds_now() + 86_400,
                },
                message: Some(MessageRecord {
                    org: org.clone(),
                    endpoint_id: endpoint.clone(),
                    message_id: m.id.clone(),
                    event_id: m.event_id.clone(),
                    event_type: m.event_type.as_str().into(),
                    timestamp: m.timestamp.clone(),
                    data: m.data.clone(),
                    state: MessageState::Delivered,
                    attempts: 2,
                    next_attempt_at: None,
                    last_status: Some(200),
                    last_error: None,
                    updated_at: common::time::now_rfc3339(),
                    expires_at: common::time::unix_seconds_now() + 86_400,
                    trace: None,
                }),
            })
            .collect();
        let started = Instant::now();
        store.record(&entries).await.unwrap();
        logs.push(started.elapsed());
    }
    println!("moto, {runs} runs of a batch of 10 to a loopback subscriber answering 200 at once");
    println!("| what | median | p90 |");
    println!("|---|---|---|");
    for (name, samples) in [
        (
            "whole batch (process_batch: store, KMS, POSTs, records, settle)",
            &mut batches,
        ),
        (
            "attempt records of the batch (one BatchWriteItem, 20 items)",
            &mut logs,
        ),
    ] {
        let (median, p90) = (percentile(samples, 0.5), percentile(samples, 0.9));
        println!(
            "| {name} | {:.1} ms | {:.1} ms |",
            median.as_secs_f64() * 1e3,
            p90.as_secs_f64() * 1e3
        );
    }
}
