//! Issue 11 end to end, on moto and on the embedded adapters: EMF lines that parse as EMF and
//! count what happened, the producer's trace carried to the subscriber, and operational events
//! delivered as webhooks to the org's other endpoints only.

use std::collections::BTreeMap;
use std::time::Duration;

use common::api;
use common::domain::event::EventType;
use common::domain::trace::TraceContext;
use common::metrics::Metrics;
use common::ports::{
    BookingStore, DeliveryLog, EndpointStore, EventOutbox, IdempotencyStore, SecretCipher,
};
use common::testing::{validate_emf, verify_with_standardwebhooks, ApiEvent, Reply, Sink};
use serde_json::{json, Value};

use crate::contract_queue::TestQueue;
use crate::engine::{config, Rig};
use crate::lifecycle::{answer, local_api};

const NAMESPACE: &str = "WebhooksTest";
const PRODUCER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Every line validated as EMF, summed by metric (and by `Outcome` for `Attempts`); values of
/// distributions counted.
fn totals(metrics: &Metrics) -> BTreeMap<String, f64> {
    let mut totals = BTreeMap::new();
    for line in metrics.lines() {
        let root = validate_emf(&line, NAMESPACE).unwrap_or_else(|e| panic!("{e}: {line}"));
        for directive in root["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            for metric in directive["Metrics"].as_array().unwrap() {
                let name = metric["Name"].as_str().unwrap();
                let key = match root["Outcome"].as_str() {
                    Some(outcome) if name == "Attempts" => format!("Attempts.{outcome}"),
                    _ => name.to_owned(),
                };
                let value = match (&root[name], metric["Unit"].as_str()) {
                    (Value::Array(values), _) => values.len() as f64,
                    (number, Some("Count")) => number.as_f64().unwrap(),
                    _ => 1.0,
                };
                *totals.entry(key).or_insert(0.0) += value;
            }
        }
    }
    totals
}

fn parent_of(traceparent: &str) -> &str {
    &traceparent[36..52]
}

impl<S, C, Q> Rig<S, C, Q>
where
    S: EndpointStore + DeliveryLog + IdempotencyStore + BookingStore + EventOutbox,
    C: SecretCipher,
    Q: TestQueue,
{
    async fn metrics_count_what_happened_and_the_trace_reaches_the_subscriber(&self) {
        let name = "org_observed";
        let steady = Sink::always(200).await;
        let flaky = Sink::start(vec![Reply::status(500)], Reply::status(200)).await;
        for sink in [&steady, &flaky] {
            let (status, body, _) = self
                .create_endpoint(
                    name,
                    None,
                    json!({ "url": sink.url(), "events": ["booking.created"] }),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
        let api = local_api();
        let request = ApiEvent::new("POST", "/bookings", "/bookings")
            .org(name)
            .header("traceparent", PRODUCER)
            .header("tracestate", "congo=t61rcWkgMzE")
            .json(&json!({
                "customerName": "Ada", "customerEmail": "ada@example.com",
                "startTime": "2030-05-01T10:00:00Z", "endTime": "2030-05-01T11:00:00Z"
            }))
            .request();
        let (status, body, _) =
            answer(api::create_booking(&self.store, &self.queue, &api, request).await);
        assert_eq!(status, 201, "{body}");
        self.deliver_all().await;
        // The flaky one's retry, a second later.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        self.deliver_all().await;

        // The producer's trace, a new parent per attempt.
        let producer = TraceContext::parse(PRODUCER, None).unwrap();
        let steady = steady.received();
        let flaky = flaky.received();
        assert_eq!((steady.len(), flaky.len()), (1, 2));
        let mut parents = Vec::new();
        for received in steady.iter().chain(&flaky) {
            let traceparent = &received.headers["traceparent"];
            let context = TraceContext::parse(traceparent, None).unwrap();
            assert_eq!(context.trace_id(), producer.trace_id(), "{traceparent}");
            assert_ne!(parent_of(traceparent), parent_of(PRODUCER));
            assert_eq!(received.headers["tracestate"], "congo=t61rcWkgMzE");
            parents.push(parent_of(traceparent).to_owned());
        }
        assert_ne!(parents[1], parents[2], "two attempts, two span ids");

        // Delivery: three attempts (two delivered, one failed), one line per endpoint and
        // outcome, each valid EMF.
        let delivery = totals(&self.deliverer.config().metrics);
        assert_eq!(
            delivery.get("Attempts.delivered"),
            Some(&2.0),
            "{delivery:?}"
        );
        assert_eq!(delivery.get("Attempts.failed"), Some(&1.0), "{delivery:?}");
        assert_eq!(
            delivery.get("AttemptLatency"),
            Some(&3.0),
            "one latency per POST"
        );
        assert_eq!(
            delivery.get("EndToEndLatency"),
            Some(&2.0),
            "one per delivered message"
        );
        assert_eq!(delivery.get("DeadLetters"), Some(&0.0));
        let lines = self.deliverer.config().metrics.lines();
        assert_eq!(
            lines.len(),
            3,
            "one line per endpoint and outcome: {lines:#?}"
        );
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(
            first["orgId"], name,
            "the org is a property, not a dimension"
        );
        assert_eq!(
            first["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Outcome"]])
        );

        // Publishing: one event to two endpoints.
        let publishing = totals(&api.metrics);
        assert_eq!(
            publishing.get("EventsPublished"),
            Some(&1.0),
            "{publishing:?}"
        );
        assert_eq!(publishing.get("MessagesEnqueued"), Some(&2.0));
        assert_eq!(publishing.get("PublishFailures"), Some(&0.0));
        let line: Value = serde_json::from_str(&api.metrics.lines()[0]).unwrap();
        assert_eq!(line["traceId"], producer.trace_id());

        // The relay reports even when the outbox is empty.
        let relay = Metrics::in_memory(NAMESPACE);
        let report =
            common::publish::relay_pending_events(&self.store, &self.queue, Duration::ZERO)
                .await
                .unwrap();
        relay.emit(&report.metrics());
        let relayed = totals(&relay);
        assert_eq!(relayed.get("OutboxPending"), Some(&0.0), "{relayed:?}");
        assert_eq!(
            relayed.get("OutboxOldestAgeSeconds"),
            Some(&1.0),
            "reported once"
        );
        assert_eq!(
            validate_emf(&relay.lines()[0], NAMESPACE).unwrap()["OutboxOldestAgeSeconds"],
            0.0
        );
    }

    async fn operational_events_reach_the_orgs_other_endpoints_only(&self) {
        let name = "org_operated";
        let operational = json!([
            "endpoint.disabled",
            "endpoint.circuit.opened",
            "message.failed"
        ]);
        let everything = json!([
            "booking.created",
            "endpoint.disabled",
            "endpoint.circuit.opened",
            "message.failed"
        ]);
        let gone = Sink::always(410).await;
        let failing = Sink::always(500).await;
        let watcher = Sink::always(204).await;
        let outsider = Sink::always(204).await;
        let create = |org: &'static str, url: String, events: Value| async move {
            let (status, body, _) = self
                .create_endpoint(org, None, json!({ "url": url, "events": events }))
                .await;
            assert_eq!(status, 201, "{body}");
            body["endpoint"].clone()
        };
        let gone_endpoint = create(name, gone.url(), everything.clone()).await;
        // Subscribed to everything about itself, which it must never get.
        let about_itself = json!([
            "booking.created",
            "endpoint.circuit.opened",
            "message.failed"
        ]);
        let failing_endpoint = create(name, failing.url(), about_itself).await;
        let watching = create(name, watcher.url(), operational.clone()).await;
        create("org_elsewhere", outsider.url(), operational).await;

        let booking = json!({
            "customerName": "Ada", "customerEmail": "ada@example.com",
            "startTime": "2030-05-01T10:00:00Z", "endTime": "2030-05-01T11:00:00Z"
        });
        assert_eq!(self.post_booking(name, None, &booking).await.0, 201);
        self.deliver_all().await;
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        self.deliver_all().await;

        assert_eq!(
            gone.received().len(),
            1,
            "the booking only: nothing about itself"
        );
        assert_eq!(
            failing.received().len(),
            2,
            "the booking twice, nothing about itself"
        );
        assert!(outsider.received().is_empty(), "another org hears nothing");
        let secret = watching["secret"].as_str().unwrap();
        let mut seen: BTreeMap<String, Value> = BTreeMap::new();
        for received in watcher.received() {
            assert!(verify_with_standardwebhooks(secret, &received), "signed");
            let payload: Value = serde_json::from_str(&received.body).unwrap();
            let errors = common::testing::validate_json_schema(
                &payload["type"]
                    .as_str()
                    .unwrap()
                    .parse::<EventType>()
                    .unwrap()
                    .data_schema(),
                &payload["data"],
            );
            assert!(errors.is_empty(), "{payload}: {errors:?}");
            seen.insert(
                payload["type"].as_str().unwrap().to_owned(),
                payload["data"].clone(),
            );
        }
        assert_eq!(seen.len(), 3, "{seen:#?}");
        assert_eq!(seen["endpoint.disabled"]["endpointId"], gone_endpoint["id"]);
        assert_eq!(seen["endpoint.disabled"]["disabledReason"], "gone");
        assert_eq!(
            seen["endpoint.circuit.opened"]["endpointId"],
            failing_endpoint["id"]
        );
        assert_eq!(seen["message.failed"]["endpointId"], failing_endpoint["id"]);
        assert_eq!(seen["message.failed"]["attempts"], 2);
        assert_eq!(seen["message.failed"]["lastStatus"], 500);
        assert_eq!(watcher.received().len(), 3, "one of each");

        let delivery = totals(&self.deliverer.config().metrics);
        assert_eq!(
            delivery.get("EndpointsDisabled"),
            Some(&1.0),
            "{delivery:?}"
        );
        assert_eq!(delivery.get("CircuitsOpened"), Some(&1.0), "{delivery:?}");
        assert_eq!(delivery.get("DeadLetters"), Some(&1.0), "{delivery:?}");
        assert_eq!(delivery.get("Attempts.gone"), Some(&1.0), "{delivery:?}");
    }
}

impl<S, C, Q> Rig<S, C, Q>
where
    S: EndpointStore + DeliveryLog + IdempotencyStore + BookingStore + EventOutbox,
    C: SecretCipher,
    Q: TestQueue,
{
    /// A test message of any type carries data its catalogue schema accepts.
    async fn test_messages_of_every_type_match_the_catalogue(&self) {
        let name = "org_samples";
        let (status, body, _) = self
            .create_endpoint(
                name,
                None,
                json!({ "url": "https://hooks.example.com/in", "events": ["booking.created"] }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["endpoint"]["id"].as_str().unwrap().to_owned();
        let path = format!("/webhooks/{id}/test");
        for event_type in EventType::ALL {
            let request = ApiEvent::new("POST", "/webhooks/{id}/test", &path)
                .org(name)
                .id(&id)
                .json(&json!({ "type": event_type.as_str() }))
                .request();
            let (status, answer, _) = crate::lifecycle::answer(
                api::send_test_event(&self.store, &self.queue, &local_api(), request).await,
            );
            assert_eq!(status, 202, "{event_type}: {answer}");
        }
        let mut seen = Vec::new();
        while seen.len() < EventType::ALL.len() {
            let records = self.queue.receive(Duration::from_secs(2)).await;
            assert!(!records.is_empty(), "only {seen:?} queued");
            for record in records {
                let message: common::domain::event::DeliveryMessage =
                    serde_json::from_str(&record.body).unwrap();
                let errors = common::testing::validate_json_schema(
                    &message.event_type.data_schema(),
                    &message.data,
                );
                assert!(errors.is_empty(), "{}: {errors:?}", message.event_type);
                assert!(message.trace.is_some(), "a test message has a trace too");
                seen.push(message.event_type);
                self.queue.delete(&record).await;
            }
        }
    }

    /// The relay's path (an operational event left in the outbox) keeps it from its subject
    /// too.
    async fn the_relay_never_sends_an_operational_event_to_its_subject(&self) {
        let name = "org_relayed";
        let (subject_sink, other_sink) = (Sink::always(204).await, Sink::always(204).await);
        let mut endpoints = Vec::new();
        for sink in [&subject_sink, &other_sink] {
            let (status, body, _) = self
                .create_endpoint(
                    name,
                    None,
                    json!({ "url": sink.url(), "events": ["endpoint.disabled"] }),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            endpoints.push(body["endpoint"].clone());
        }
        let event = common::domain::event::Event::new(
            EventType::EndpointDisabled,
            json!({
                "endpointId": endpoints[0]["id"], "url": subject_sink.url(),
                "disabledReason": "gone", "disabledAt": "2030-01-01T00:00:00Z"
            }),
        )
        .unwrap();
        self.store
            .add_event(&crate::contract_store::org(name), &event)
            .await
            .unwrap();
        // Due from the millisecond after its creation.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let report =
            common::publish::relay_pending_events(&self.store, &self.queue, Duration::ZERO)
                .await
                .unwrap();
        assert_eq!((report.published, report.messages), (1, 1));
        self.deliver_all().await;
        assert!(
            subject_sink.received().is_empty(),
            "never to the endpoint it is about"
        );
        assert_eq!(other_sink.received().len(), 1);
    }
}

/// Circuits open after two failures, so the failing endpoint's second attempt opens it.
fn observed_config() -> common::config::DeliveryConfig {
    let mut config = config("1s");
    config.circuit.failures = 2;
    config
}

#[tokio::test]
async fn metrics_traces_and_operational_events_embedded() {
    Rig::embedded(config("1s"))
        .metrics_count_what_happened_and_the_trace_reaches_the_subscriber()
        .await;
    Rig::embedded(observed_config())
        .operational_events_reach_the_orgs_other_endpoints_only()
        .await;
    Rig::embedded(config("1s"))
        .the_relay_never_sends_an_operational_event_to_its_subject()
        .await;
    Rig::embedded(config("1s"))
        .test_messages_of_every_type_match_the_catalogue()
        .await;
}

#[tokio::test]
async fn metrics_traces_and_operational_events_on_moto() {
    Rig::moto(config("1s"))
        .await
        .metrics_count_what_happened_and_the_trace_reaches_the_subscriber()
        .await;
    Rig::moto(observed_config())
        .await
        .operational_events_reach_the_orgs_other_endpoints_only()
        .await;
    Rig::moto(config("1s"))
        .await
        .the_relay_never_sends_an_operational_event_to_its_subject()
        .await;
}

#[test]
fn the_emf_validator_refuses_what_cloudwatch_would_not_extract() {
    let good = json!({
        "_aws": { "Timestamp": 1_900_000_000_000u64, "CloudWatchMetrics": [
            { "Namespace": NAMESPACE, "Dimensions": [["Outcome"]], "Metrics": [{ "Name": "Attempts", "Unit": "Count" }] }
        ] },
        "Outcome": "delivered", "Attempts": 1
    });
    assert!(validate_emf(&good.to_string(), NAMESPACE).is_ok());
    let broken = |path: &str, value: Value| {
        let mut line = good.clone();
        *line.pointer_mut(path).unwrap() = value;
        validate_emf(&line.to_string(), NAMESPACE)
    };
    assert!(
        broken("/_aws/Timestamp", json!(1_900_000_000)).is_err(),
        "seconds"
    );
    assert!(broken("/_aws/CloudWatchMetrics/0/Namespace", json!("Other")).is_err());
    assert!(broken("/_aws/CloudWatchMetrics/0/Metrics/0/Unit", json!("Things")).is_err());
    assert!(
        broken("/Outcome", json!(5)).is_err(),
        "a dimension value must be a string"
    );
    assert!(broken("/Attempts", json!("one")).is_err());
    assert!(broken("/Attempts", json!(vec![1; 101])).is_err());
    assert!(broken("/_aws/CloudWatchMetrics", json!([])).is_err());
    assert!(validate_emf("not json", NAMESPACE).is_err());
}
