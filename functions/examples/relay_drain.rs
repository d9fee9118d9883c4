//! Benchmark: how fast the outbox relay drains a backlog on moto (`scripts/bench relay`).
//!
//! Seeds `EVENTS` pending `booking.created` events (default 10,000) over 100 orgs with one
//! subscribed endpoint each, as an outage of the queue would leave them, then runs the relay
//! as the schedule would, one 40 s run after another, and prints what each run published.
//! Figures are moto's (one Python process on this machine), not DynamoDB's or SQS's; `RUNS`
//! (default 100) caps the relay runs per adapter set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use common::adapters::aws::{DynamoStore, SqsDeliveryQueue};
use common::adapters::embedded::{LocalCipher, LocalQueue, MemoryStore};
use common::domain::booking::NewBooking;
use common::domain::event::{Event, EventType};
use common::domain::id::{BookingId, EndpointId};
use common::domain::OrgId;
use common::ports::{BookingStore, DeliveryQueue, EndpointStore, EventOutbox};
use common::publish::{relay_pending_events, RELAY_TIME_BUDGET};
use common::testing::{create_queues, create_table, sdk_config, seed_endpoint};

const ORGS: usize = 100;

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let orgs: Vec<OrgId> = (0..ORGS)
        .map(|i| OrgId::parse(&format!("org_bench_{i}")).unwrap())
        .collect();
    let booking = NewBooking::parse(
        br#"{"customerName":"Ada","customerEmail":"ada@example.com","startTime":"2030-01-01T10:00:00Z","endTime":"2030-01-01T11:00:00Z"}"#,
    )
    .unwrap();
    let backlog: Vec<(OrgId, Event)> = (0..events)
        .map(|i| {
            let booking = booking.clone().into_booking(
                BookingId::generate().unwrap(),
                "2030-01-01T00:00:00.000Z".into(),
            );
            let event = Event::new(
                EventType::BookingCreated,
                serde_json::json!({ "booking": &booking }),
            )
            .unwrap();
            (orgs[i % ORGS].clone(), event)
        })
        .collect();
    // The relay never decrypts a secret: a local cipher is enough to seed the endpoints.
    let cipher = LocalCipher::generate().unwrap();

    println!("## embedded adapters (in-memory store, local queue)");
    let memory = MemoryStore::new();
    for org in &orgs {
        let id = EndpointId::generate().unwrap();
        seed_endpoint(&memory, &cipher, org, &id, "https://hooks.example.com/in").await;
    }
    for (org, event) in &backlog {
        let booking = booking.clone().into_booking(
            BookingId::generate().unwrap(),
            "2030-01-01T00:00:00.000Z".into(),
        );
        memory
            .insert_booking(org, &booking, event, None)
            .await
            .unwrap();
    }
    let local_queue = LocalQueue::new(Duration::from_secs(30), 8);
    drain(&memory, &local_queue, events).await;

    println!("\n## DynamoDB and SQS on moto");
    // moto answers a query on an index by scanning the whole table: with 10,000 events one
    // outbox read takes longer than the production timeouts (3 s an attempt, 6 s in all).
    let sdk = sdk_config()
        .await
        .into_builder()
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(120))
                .operation_timeout(Duration::from_secs(300))
                .build(),
        )
        .build();
    let store = DynamoStore::from_sdk_config(&sdk, create_table(&sdk).await);
    let queue = SqsDeliveryQueue::from_sdk_config(&sdk, create_queues(&sdk, 8).await.url);
    for org in &orgs {
        let id = EndpointId::generate().unwrap();
        seed_endpoint(&store, &cipher, org, &id, "https://hooks.example.com/in").await;
    }
    let seeding = Instant::now();
    store.seed_pending_events(&backlog).await.unwrap();
    println!(
        "seeded {events} pending events over {ORGS} orgs in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    drain(&store, &queue, events).await;
}

fn max_runs() -> usize {
    std::env::var("RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100)
}

/// Runs the relay as its schedule would, one run after another, until the outbox is empty.
async fn drain(
    store: &(impl EndpointStore + EventOutbox),
    queue: &impl DeliveryQueue,
    events: usize,
) {
    let draining = Instant::now();
    let mut run = 0;
    let mut total = 0;
    println!("| run | published | failed | out of time | run time (s) |");
    println!("|---|---|---|---|---|");
    loop {
        run += 1;
        let started = Instant::now();
        let report = relay_pending_events(store, queue, Duration::ZERO)
            .await
            .unwrap();
        total += report.published;
        println!(
            "| {run} | {} | {} | {} | {:.1} |",
            report.published,
            report.failed,
            report.out_of_time,
            started.elapsed().as_secs_f64()
        );
        if store.pending_events(u64::MAX, 1).await.unwrap().is_empty() || run >= max_runs() {
            break;
        }
    }
    let elapsed = draining.elapsed().as_secs_f64();
    println!(
        "drained {total} of {events} events in {elapsed:.1} s over {run} relay runs of at most {} s: {:.0} events/s (a relay taking 100 events a minute: {} min)",
        RELAY_TIME_BUDGET.as_secs(),
        total as f64 / elapsed,
        events.div_ceil(100)
    );
}
