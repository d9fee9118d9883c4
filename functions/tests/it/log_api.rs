//! The delivery log and recovery routes, on the embedded adapters and on moto alike: messages
//! and attempts read back in order and only by their org, resend, recover (in pages, carried on
//! by the worker), test events, the event catalogue, and a dead letter's replay.

use std::collections::HashSet;
use std::time::Duration;

use common::api;
use common::domain::catalogue::catalogue;
use common::domain::delivery::{MessageRecord, MessageState, RecoverRange, RecoverTask};
use common::domain::endpoint::EndpointChanges;
use common::domain::event::{Event, EventType};
use common::domain::id::{EndpointId, MessageId};
use common::domain::OrgId;
use common::ports::{DeliveryLog, EndpointStore, IdempotencyStore, SecretCipher};
use common::testing::{
    read_response, seed_endpoint, validate_json_schema, verify_with_standardwebhooks, ApiEvent,
    Reply, Sink,
};
use serde_json::{json, Value};

use crate::contract_queue::TestQueue;
use crate::contract_store::org;
use crate::engine::{config, Rig};

use crate::lifecycle::local_api as api;

/// A request to one of the log routes, as API Gateway hands it over.
fn request(method: &str, route: &str, org_name: &str, endpoint: &EndpointId) -> ApiEvent {
    let path = route.replace("{id}", endpoint.as_str());
    ApiEvent::new(method, route, &path)
        .org(org_name)
        .id(endpoint.as_str())
}

impl<S, C, Q> Rig<S, C, Q>
where
    S: EndpointStore + DeliveryLog + IdempotencyStore + common::ports::EventOutbox,
    C: SecretCipher,
    Q: TestQueue,
{
    async fn messages(
        &self,
        org_name: &str,
        endpoint: &EndpointId,
        query: &[(&str, &str)],
    ) -> (u16, Value) {
        let event = request("GET", "/webhooks/{id}/messages", org_name, endpoint).query(query);
        read_response(api::list_messages(&self.store, &api(), event.request()).await)
    }

    async fn message(&self, org_name: &str, endpoint: &EndpointId, id: &str) -> (u16, Value) {
        let event = request("GET", "/webhooks/{id}/messages/{msgId}", org_name, endpoint)
            .param("msgId", id);
        read_response(api::get_message(&self.store, &api(), event.request()).await)
    }

    async fn attempts(
        &self,
        org_name: &str,
        endpoint: &EndpointId,
        query: &[(&str, &str)],
    ) -> (u16, Value) {
        let event = request("GET", "/webhooks/{id}/attempts", org_name, endpoint).query(query);
        read_response(api::list_attempts(&self.store, &api(), event.request()).await)
    }

    async fn resend(&self, org_name: &str, endpoint: &EndpointId, id: &str) -> (u16, Value) {
        let event = request(
            "POST",
            "/webhooks/{id}/messages/{msgId}/resend",
            org_name,
            endpoint,
        )
        .param("msgId", id);
        read_response(api::resend_message(&self.store, &self.queue, &api(), event.request()).await)
    }

    async fn recover(&self, org_name: &str, endpoint: &EndpointId, body: Value) -> (u16, Value) {
        let event = request("POST", "/webhooks/{id}/recover", org_name, endpoint).json(&body);
        read_response(
            api::recover_messages(&self.store, &self.queue, &api(), event.request()).await,
        )
    }

    async fn test_event(&self, org_name: &str, endpoint: &EndpointId) -> (u16, Value) {
        let event = request("POST", "/webhooks/{id}/test", org_name, endpoint);
        read_response(api::send_test_event(&self.store, &self.queue, &api(), event.request()).await)
    }

    /// Delivers until the queue has stayed empty for a while.
    pub(crate) async fn deliver_all(&self) {
        let mut quiet = 0;
        while quiet < 3 {
            if self.deliver_once(Duration::from_millis(400)).await == 0 {
                quiet += 1;
            } else {
                quiet = 0;
            }
        }
    }

    /// The log routes show an endpoint's messages and attempts in order, to its org only.
    async fn the_log_reads_back_in_order_and_only_for_its_org(&self) {
        let (a, b) = ("org_log_reader", "org_log_other");
        let sink = Sink::start(
            vec![
                Reply::status(503).after(Duration::from_millis(30)),
                Reply::status(500),
            ],
            Reply::status(200),
        )
        .await;
        let endpoint = self.endpoint(&org(a), &sink.url()).await;
        let first = self.publish(&org(a), &endpoint, 1).await.remove(0);
        self.drain(
            &org(a),
            &endpoint,
            std::slice::from_ref(&first),
            Duration::from_secs(20),
        )
        .await;
        let second = self.publish(&org(a), &endpoint, 1).await.remove(0);
        self.drain(
            &org(a),
            &endpoint,
            std::slice::from_ref(&second),
            Duration::from_secs(20),
        )
        .await;

        // Messages, newest first, a page at a time.
        let (status, page) = self.messages(a, &endpoint, &[("limit", "1")]).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["messages"][0]["id"], second.as_str());
        assert_eq!(page["messages"][0]["state"], "delivered");
        assert_eq!(page["messages"][0]["attempts"], 1);
        assert_eq!(page["messages"][0]["nextAttemptAt"], Value::Null);
        let cursor = page["nextCursor"].as_str().unwrap().to_owned();
        let (_, next) = self
            .messages(a, &endpoint, &[("limit", "1"), ("cursor", &cursor)])
            .await;
        assert_eq!(next["messages"][0]["id"], first.as_str());
        assert_eq!(next["messages"][0]["attempts"], 3);
        assert_eq!(next["messages"][0]["lastStatus"], 200);
        assert_eq!(next["nextCursor"], Value::Null);
        let (_, delivered) = self.messages(a, &endpoint, &[("state", "delivered")]).await;
        assert_eq!(delivered["messages"].as_array().unwrap().len(), 2);
        let (_, dead) = self.messages(a, &endpoint, &[("state", "dead")]).await;
        assert_eq!(dead["messages"], json!([]));
        assert_eq!(
            self.messages(a, &endpoint, &[("state", "lost")]).await.0,
            400
        );

        // One message with exactly what its subscriber was sent.
        let (status, one) = self.message(a, &endpoint, first.as_str()).await;
        assert_eq!(status, 200, "{one}");
        let sent = sink
            .received()
            .into_iter()
            .find(|r| r.headers["webhook-id"] == first.as_str())
            .unwrap();
        assert_eq!(one["message"]["payload"].to_string(), sent.body);

        // Attempts, newest first, with their statuses and latencies.
        let (status, attempts) = self
            .attempts(a, &endpoint, &[("messageId", first.as_str())])
            .await;
        assert_eq!(status, 200, "{attempts}");
        let summary: Vec<(u64, u64)> = attempts["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["attempt"].as_u64().unwrap(),
                    a["statusCode"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(summary, [(3, 200), (2, 500), (1, 503)]);
        assert!(attempts["attempts"][2]["latencyMs"].as_u64().unwrap() >= 30);
        assert_eq!(attempts["attempts"][0]["trigger"], "scheduled");
        let (_, all) = self.attempts(a, &endpoint, &[]).await;
        assert_eq!(all["attempts"].as_array().unwrap().len(), 4);
        assert_eq!(
            all["attempts"][0]["messageId"],
            second.as_str(),
            "newest message first"
        );
        let (_, failed) = self.attempts(a, &endpoint, &[("outcome", "failed")]).await;
        assert_eq!(failed["attempts"].as_array().unwrap().len(), 2);
        let (_, paged) = self.attempts(a, &endpoint, &[("limit", "3")]).await;
        let cursor = paged["nextCursor"].as_str().unwrap().to_owned();
        let (status, _) = self
            .attempts(
                a,
                &endpoint,
                &[("cursor", &cursor), ("messageId", second.as_str())],
            )
            .await;
        assert_eq!(status, 400, "a cursor of another message's list");
        let (_, rest) = self.attempts(a, &endpoint, &[("cursor", &cursor)]).await;
        assert_eq!(rest["attempts"][0]["attempt"], 1);
        assert_eq!(rest["attempts"].as_array().unwrap().len(), 1);

        // Another org: every route is a 404 for this endpoint, and a foreign message id is
        // unknown under its own endpoint; a's cursors are refused.
        assert_eq!(self.messages(b, &endpoint, &[]).await.0, 404);
        assert_eq!(self.message(b, &endpoint, first.as_str()).await.0, 404);
        assert_eq!(self.attempts(b, &endpoint, &[]).await.0, 404);
        assert_eq!(self.resend(b, &endpoint, first.as_str()).await.0, 404);
        assert_eq!(
            self.recover(
                b,
                &endpoint,
                json!({ "since": common::time::now_rfc3339() })
            )
            .await
            .0,
            404
        );
        assert_eq!(self.test_event(b, &endpoint).await.0, 404);
        let own = self.endpoint(&org(b), &sink.url()).await;
        assert_eq!(self.message(b, &own, first.as_str()).await.0, 404);
        let (status, refused) = self.messages(b, &own, &[("cursor", &cursor)]).await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(self.attempts(b, &own, &[("cursor", &cursor)]).await.0, 400);

        // Resend: the same webhook-id, a fresh signature that verifies.
        let secret = self.secret(&org(a), &endpoint).await;
        // A second later, so the fresh signature's timestamp differs from the first one's.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let (status, resent) = self.resend(a, &endpoint, second.as_str()).await;
        assert_eq!(status, 202, "{resent}");
        self.deliver_all().await;
        let again: Vec<_> = sink
            .received()
            .into_iter()
            .filter(|r| r.headers["webhook-id"] == second.as_str())
            .collect();
        assert_eq!(again.len(), 2);
        assert_ne!(
            again[0].headers["webhook-signature"],
            again[1].headers["webhook-signature"]
        );
        assert!(verify_with_standardwebhooks(&secret, &again[1]));
        let (_, attempts) = self
            .attempts(a, &endpoint, &[("messageId", second.as_str())])
            .await;
        assert_eq!(attempts["attempts"][0]["trigger"], "manual");
        assert_eq!(attempts["attempts"].as_array().unwrap().len(), 2);

        // A disabled endpoint takes no resend and no test.
        let disable = EndpointChanges {
            disabled: Some(true),
            ..EndpointChanges::default()
        };
        self.store
            .update_endpoint(&org(a), &endpoint, &disable, "2030-01-01T00:00:00.000Z")
            .await
            .unwrap();
        assert_eq!(self.resend(a, &endpoint, second.as_str()).await.0, 409);
        assert_eq!(self.test_event(a, &endpoint).await.0, 409);
    }

    async fn secret(&self, org_id: &OrgId, endpoint: &EndpointId) -> String {
        let stored = self
            .store
            .get_endpoint(org_id, endpoint)
            .await
            .unwrap()
            .unwrap();
        let context = common::ports::SecretContext {
            org_id,
            endpoint_id: endpoint,
        };
        String::from_utf8(
            self.cipher
                .decrypt(&stored.secret_ciphertext, context)
                .await
                .unwrap(),
        )
        .unwrap()
    }

    /// An endpoint down for three events, then fixed: a recovery delivers each once.
    async fn a_recovery_delivers_what_failed_once(&self) {
        let name = "org_recover";
        let since = common::time::now_rfc3339();
        // Two attempts each ("1s"), six failures, then it is fixed.
        let sink = Sink::start(vec![Reply::status(500); 6], Reply::status(200)).await;
        let endpoint = self.endpoint(&org(name), &sink.url()).await;
        let messages = self.publish(&org(name), &endpoint, 3).await;
        self.drain(&org(name), &endpoint, &messages, Duration::from_secs(30))
            .await;
        for id in &messages {
            assert_eq!(
                self.state(&org(name), &endpoint, id).await,
                Some(MessageState::Dead)
            );
        }
        assert_eq!(
            self.recover(name, &endpoint, json!({ "since": "2020-01-01T00:00:00Z" }))
                .await
                .0,
            400,
            "past the retention"
        );
        for body in [
            json!({ "since": "2999-01-01T00:00:00Z" }),
            json!({ "since": "1900-01-01T00:00:00Z" }),
            json!({ "since": since, "until": since }),
            json!({ "since": "yesterday" }),
            json!({}),
        ] {
            let (status, refused) = self.recover(name, &endpoint, body.clone()).await;
            assert_eq!(status, 400, "{body}: {refused}");
        }
        // Two recoveries at once (a double click): each message is claimed, and queued, once.
        let ((first_status, first), (second_status, second)) = tokio::join!(
            self.recover(name, &endpoint, json!({ "since": since })),
            self.recover(name, &endpoint, json!({ "since": since })),
        );
        assert_eq!((first_status, second_status), (202, 202));
        let total = first["recovered"].as_u64().unwrap() + second["recovered"].as_u64().unwrap();
        assert_eq!(total, 3, "{first} {second}");
        assert_eq!(first["continuing"], false);
        let (_, again) = self
            .recover(name, &endpoint, json!({ "since": since }))
            .await;
        assert_eq!(again["recovered"], 0, "already on their way");
        self.deliver_all().await;
        let delivered: Vec<String> = sink
            .received()
            .into_iter()
            .skip(6)
            .map(|r| r.headers["webhook-id"].clone())
            .collect();
        let expected: HashSet<String> = messages.iter().map(|m| m.to_string()).collect();
        assert_eq!(delivered.len(), 3, "each once: {delivered:?}");
        assert_eq!(delivered.into_iter().collect::<HashSet<_>>(), expected);
        for id in &messages {
            assert_eq!(
                self.state(&org(name), &endpoint, id).await,
                Some(MessageState::Delivered)
            );
            let numbers: Vec<u32> = self
                .store
                .attempts_of(&org(name), &endpoint, id)
                .await
                .unwrap()
                .iter()
                .map(|a| a.attempt)
                .collect();
            assert_eq!(numbers, [1, 2, 3], "the fresh schedule numbers on");
        }
    }

    /// 500 dead messages: a run recovers a page, hands the rest on, and the worker carries it
    /// through; every one arrives.
    async fn a_large_recovery_runs_in_pages_and_loses_nothing(&self) {
        let name = "org_recover_many";
        let sink = Sink::always(200).await;
        let endpoint = self.endpoint(&org(name), &sink.url()).await;
        let since = common::time::unix_millis_now();
        let records: Vec<MessageRecord> = (0..500)
            .map(|n| {
                let event = Event::new(EventType::BookingCreated, json!({ "n": n })).unwrap();
                MessageRecord {
                    org: org(name),
                    endpoint_id: endpoint.clone(),
                    message_id: MessageId::for_delivery(&event.id, &endpoint),
                    event_id: Some(event.id.clone()),
                    event_type: "booking.created".into(),
                    timestamp: event.timestamp.clone(),
                    data: event.data.clone(),
                    state: MessageState::Dead,
                    attempts: 2,
                    next_attempt_at: None,
                    last_status: Some(500),
                    last_error: Some("HTTP 500".into()),
                    updated_at: event.timestamp,
                    expires_at: common::time::unix_seconds_now() + 3600,
                    trace: None,
                }
            })
            .collect();
        self.store.record_messages(&records).await.unwrap();
        let range = RecoverRange {
            org_id: name.into(),
            endpoint_id: endpoint.clone(),
            since_millis: since,
            until_millis: common::time::unix_millis_now() + 1,
            after: None,
        };
        // No time at all: one page, then the rest handed on as a task of its own.
        let progress = common::recover::recover(&self.store, &self.queue, range, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!((progress.recovered, progress.continued), (100, true));
        let mut tasks = 0;
        let give_up = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut seen = HashSet::new();
        while seen.len() < 500 {
            assert!(
                tokio::time::Instant::now() < give_up,
                "{} of 500 arrived",
                seen.len()
            );
            let records = self.queue.receive(Duration::from_millis(300)).await;
            tasks += records
                .iter()
                .filter(|r| serde_json::from_str::<RecoverTask>(&r.body).is_ok())
                .count();
            self.deliverer
                .process_batch(
                    &self.queue,
                    records,
                    tokio::time::Instant::now() + Duration::from_secs(20),
                )
                .await;
            seen.extend(
                sink.received()
                    .into_iter()
                    .map(|r| r.headers["webhook-id"].clone()),
            );
        }
        assert!(tasks >= 1, "the worker carried the recovery on");
        // A recovery whose endpoint was disabled meanwhile stops, queuing nothing more.
        let disable = EndpointChanges {
            disabled: Some(true),
            ..EndpointChanges::default()
        };
        self.store
            .update_endpoint(&org(name), &endpoint, &disable, "2030-01-01T00:00:00.000Z")
            .await
            .unwrap();
        let range = RecoverRange {
            org_id: name.into(),
            endpoint_id: endpoint.clone(),
            since_millis: since,
            until_millis: common::time::unix_millis_now() + 1,
            after: None,
        };
        let stopped = common::recover::recover(&self.store, &self.queue, range, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!((stopped.recovered, stopped.continued), (0, false));
        let expected: HashSet<String> = records.iter().map(|r| r.message_id.to_string()).collect();
        assert_eq!(seen, expected);
    }

    /// A test event reaches an endpoint subscribed to nothing but booking.created, signed, with
    /// data its catalogue schema accepts.
    async fn a_test_event_reaches_its_endpoint_signed(&self) {
        let name = "org_test_event";
        let sink = Sink::always(204).await;
        let endpoint = self.endpoint(&org(name), &sink.url()).await;
        let (status, answer) = self.test_event(name, &endpoint).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["message"]["type"], "webhook.test");
        self.deliver_all().await;
        let received = sink.received();
        assert_eq!(received.len(), 1);
        assert!(verify_with_standardwebhooks(
            &self.secret(&org(name), &endpoint).await,
            &received[0]
        ));
        let payload: Value = serde_json::from_str(&received[0].body).unwrap();
        assert_eq!(payload["type"], "webhook.test");
        assert_eq!(payload["data"]["endpointId"], endpoint.as_str());
        let errors = validate_json_schema(&EventType::WebhookTest.data_schema(), &payload["data"]);
        assert!(errors.is_empty(), "{errors:?}");
        let id = received[0].headers["webhook-id"].clone();
        assert_eq!(
            self.message(name, &endpoint, &id).await.1["message"]["state"],
            "delivered",
            "recorded like any message"
        );
    }

    /// A dead letter sent back to the delivery queue as it is (what SQS's DLQ redrive does) is
    /// delivered under its `webhook-id`, on a fresh schedule.
    async fn a_dead_letter_replayed_as_it_is_is_delivered(&self) {
        let name = "org_replay";
        let sink = Sink::start(vec![Reply::status(500); 2], Reply::status(200)).await;
        let endpoint = self.endpoint(&org(name), &sink.url()).await;
        let messages = self.publish(&org(name), &endpoint, 1).await;
        self.drain(&org(name), &endpoint, &messages, Duration::from_secs(20))
            .await;
        let letters = self.queue.dead_letters().await;
        assert_eq!(letters.len(), 1);
        let body = common::domain::queue_body::QueueBody::received(letters[0].0.clone());
        assert!(self.queue.enqueue(&[body]).await.unwrap().is_empty());
        self.deliver_all().await;
        let received = sink.received();
        assert_eq!(received.len(), 3);
        assert_eq!(received[2].headers["webhook-id"], messages[0].as_str());
        assert_eq!(
            self.state(&org(name), &endpoint, &messages[0]).await,
            Some(MessageState::Delivered)
        );
    }
}

/// The catalogue route lists every type, and each `booking.*` schema accepts the data a real
/// booking's event carries.
async fn the_catalogue_describes_what_is_sent() {
    let event = ApiEvent::new("GET", "/event-types", "/event-types").org("org_catalogue");
    let (status, body) = read_response(api::list_event_types(&api(), event.request()).await);
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["eventTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, EventType::ALL.map(EventType::as_str));
    assert_eq!(
        body["eventTypes"].as_array().unwrap().len(),
        catalogue().len()
    );

    // What POST /bookings actually publishes, caught on its way to a subscriber.
    let store = common::adapters::embedded::MemoryStore::new();
    let cipher = common::adapters::embedded::LocalCipher::generate().unwrap();
    let queue = common::adapters::embedded::LocalQueue::new(Duration::from_secs(30), 5);
    let endpoint = EndpointId::generate().unwrap();
    seed_endpoint(
        &store,
        &cipher,
        &org("org_catalogue"),
        &endpoint,
        "https://hooks.example.com/in",
    )
    .await;
    let request = ApiEvent::new("POST", "/bookings", "/bookings")
        .org("org_catalogue")
        .json(&json!({
            "customerName": "Ada", "customerEmail": "ada@example.com", "notes": "window seat",
            "startTime": "2030-05-01T10:00:00Z", "endTime": "2030-05-01T11:00:00Z", "serviceId": "svc_1"
        }))
        .request();
    assert_eq!(
        read_response(api::create_booking(&store, &queue, &api(), request).await).0,
        201
    );
    let created: common::domain::event::DeliveryMessage =
        serde_json::from_str(&queue.receive(1).unwrap()[0].body).unwrap();
    let booking_id = created.data["booking"]["id"].as_str().unwrap().to_owned();
    let path = format!("/bookings/{booking_id}");
    let every_booking_event = EndpointChanges {
        events: Some(EventType::BOOKING_EVENTS.to_vec()),
        ..Default::default()
    };
    store
        .update_endpoint(
            &org("org_catalogue"),
            &endpoint,
            &every_booking_event,
            "2030-01-01T00:00:00Z",
        )
        .await
        .unwrap();
    let request = ApiEvent::new("PATCH", "/bookings/{id}", &path)
        .param("id", &booking_id)
        .org("org_catalogue")
        .json(&json!({ "notes": "aisle seat", "customerName": "Ada" }))
        .request();
    assert_eq!(
        read_response(api::update_booking(&store, &queue, &api(), request).await).0,
        200
    );
    let cancel_path = format!("{path}/cancel");
    let request = ApiEvent::new("POST", "/bookings/{id}/cancel", &cancel_path)
        .param("id", &booking_id)
        .org("org_catalogue")
        .json(&json!({ "reason": "changed plans" }))
        .request();
    assert_eq!(
        read_response(api::cancel_booking(&store, &queue, &api(), request).await).0,
        200
    );
    let mut sent = vec![created];
    for message in queue.receive(10).unwrap() {
        sent.push(serde_json::from_str(&message.body).unwrap());
    }
    let types: Vec<EventType> = sent.iter().map(|m| m.event_type).collect();
    assert_eq!(types, EventType::BOOKING_EVENTS);
    assert_eq!(
        sent[1].data["changes"],
        json!(["notes"]),
        "only what changed"
    );
    for message in &sent {
        for t in EventType::BOOKING_EVENTS {
            let errors = validate_json_schema(&t.data_schema(), &message.data);
            assert_eq!(
                errors.is_empty(),
                t == message.event_type,
                "{} data against the {t} schema: {errors:?}",
                message.event_type
            );
        }
    }
    let wrong = json!({ "booking": { "id": "bk_1" } });
    assert!(
        !validate_json_schema(&EventType::BookingCreated.data_schema(), &wrong).is_empty(),
        "the schema can refuse"
    );
}

#[tokio::test]
async fn the_log_routes_keep_their_promises_on_the_embedded_adapters() {
    Rig::embedded(config("1s,1s,1s"))
        .the_log_reads_back_in_order_and_only_for_its_org()
        .await;
    Rig::embedded(config("1s"))
        .a_recovery_delivers_what_failed_once()
        .await;
    Rig::embedded(config("1s"))
        .a_large_recovery_runs_in_pages_and_loses_nothing()
        .await;
    Rig::embedded(config("1s"))
        .a_test_event_reaches_its_endpoint_signed()
        .await;
    Rig::embedded(config("1s"))
        .a_dead_letter_replayed_as_it_is_is_delivered()
        .await;
    the_catalogue_describes_what_is_sent().await;
}

#[tokio::test]
async fn the_log_routes_keep_their_promises_on_moto() {
    Rig::moto(config("1s,1s,1s"))
        .await
        .the_log_reads_back_in_order_and_only_for_its_org()
        .await;
    Rig::moto(config("1s"))
        .await
        .a_recovery_delivers_what_failed_once()
        .await;
    Rig::moto(config("1s"))
        .await
        .a_large_recovery_runs_in_pages_and_loses_nothing()
        .await;
    Rig::moto(config("1s"))
        .await
        .a_test_event_reaches_its_endpoint_signed()
        .await;
    Rig::moto(config("1s"))
        .await
        .a_dead_letter_replayed_as_it_is_is_delivered()
        .await;
}
