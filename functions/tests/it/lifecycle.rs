//! Issue 9 end to end, on moto and on the embedded adapters: secret rotation with both
//! signatures during the grace period, custom headers, `Idempotency-Key` on POST, and the
//! booking catalogue (read, update, cancel) reaching subscribers signed.

use std::time::Duration;

use common::api;
use common::config::ApiConfig;
use common::domain::endpoint::MAX_PREVIOUS_SECRETS;
use common::domain::event::EventType;
use common::domain::id::EndpointId;
use common::domain::idempotency::{
    fingerprint, IdempotencyCompletion, IdempotencyKey, IdempotencyRecord, KeyState, StoredResponse,
};
use common::domain::target::TargetPolicy;
use common::ports::{
    BookingStore, DeliveryLog, EndpointStore, EventOutbox, IdempotencyStore, SecretCipher,
    SecretContext,
};
use common::testing::{api_config, verify_with_standardwebhooks, ApiEvent, Received, Sink};
use lambda_http::{Body, Response};
use serde_json::{json, Value};

use crate::contract_queue::TestQueue;
use crate::contract_store::org;
use crate::engine::{config, Rig};

pub(crate) fn local_api() -> ApiConfig {
    api_config(TargetPolicy::LOCAL_DEVELOPMENT)
}

/// Status, JSON body, and whether the answer was a replay (`Idempotent-Replayed: true`).
pub(crate) fn answer(response: Response<Body>) -> (u16, Value, bool) {
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let (status, body) = common::testing::read_response(response);
    (status, body, replayed)
}

fn signatures(received: &Received) -> usize {
    received.headers["webhook-signature"].split(' ').count()
}

impl<S, C, Q> Rig<S, C, Q>
where
    S: EndpointStore + DeliveryLog + IdempotencyStore + BookingStore + EventOutbox,
    C: SecretCipher,
    Q: TestQueue,
{
    pub(crate) async fn create_endpoint(
        &self,
        org_name: &str,
        key: Option<&str>,
        body: Value,
    ) -> (u16, Value, bool) {
        let mut event = ApiEvent::new("POST", "/webhooks", "/webhooks")
            .org(org_name)
            .json(&body);
        if let Some(key) = key {
            event = event.header("Idempotency-Key", key);
        }
        answer(api::create_webhook(&self.store, &self.cipher, &local_api(), event.request()).await)
    }

    async fn rotate(&self, org_name: &str, id: &str, body: Option<Value>) -> (u16, Value, bool) {
        self.rotate_with_key(org_name, id, body, None).await
    }

    async fn rotate_with_key(
        &self,
        org_name: &str,
        id: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value, bool) {
        let path = format!("/webhooks/{id}/secret/rotate");
        let mut event = ApiEvent::new("POST", "/webhooks/{id}/secret/rotate", &path)
            .org(org_name)
            .id(id);
        if let Some(key) = key {
            event = event.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            event = event.json(&body);
        }
        answer(
            api::rotate_webhook_secret(&self.store, &self.cipher, &local_api(), event.request())
                .await,
        )
    }

    /// The endpoint as stored (with its ciphertexts), for what no API answer shows.
    async fn stored(&self, org_name: &str, id: &EndpointId) -> common::domain::endpoint::Endpoint {
        self.store
            .get_endpoint(&org(org_name), id)
            .await
            .unwrap()
            .unwrap()
    }

    async fn get_endpoint_json(&self, org_name: &str, id: &str) -> (u16, Value) {
        let path = format!("/webhooks/{id}");
        let event = ApiEvent::new("GET", "/webhooks/{id}", &path)
            .org(org_name)
            .id(id);
        common::testing::read_response(
            api::get_webhook(&self.store, &local_api(), event.request()).await,
        )
    }

    pub(crate) async fn post_booking(
        &self,
        org_name: &str,
        key: Option<&str>,
        body: &Value,
    ) -> (u16, Value, bool) {
        let mut event = ApiEvent::new("POST", "/bookings", "/bookings")
            .org(org_name)
            .json(body);
        if let Some(key) = key {
            event = event.header("Idempotency-Key", key);
        }
        answer(api::create_booking(&self.store, &self.queue, &local_api(), event.request()).await)
    }

    async fn booking_route(
        &self,
        method: &str,
        org_name: &str,
        id: &str,
        body: Option<Value>,
    ) -> (u16, Value, bool) {
        let (route, path) = match method {
            "CANCEL" => ("/bookings/{id}/cancel", format!("/bookings/{id}/cancel")),
            _ => ("/bookings/{id}", format!("/bookings/{id}")),
        };
        let http_method = if method == "CANCEL" { "POST" } else { method };
        let mut event = ApiEvent::new(http_method, route, &path)
            .org(org_name)
            .id(id);
        if let Some(body) = body {
            event = event.json(&body);
        }
        let request = event.request();
        let (store, queue, config) = (&self.store, &self.queue, &local_api());
        answer(match method {
            "GET" => api::get_booking(store, config, request).await,
            "PATCH" => api::update_booking(store, queue, config, request).await,
            _ => api::cancel_booking(store, queue, config, request).await,
        })
    }

    async fn rotation_signs_with_both_secrets_until_the_grace_period_ends(&self) {
        let name = "org_rotate";
        let sink = Sink::always(204).await;
        let (status, created, _) = self
            .create_endpoint(
                name,
                None,
                json!({
                    "url": sink.url(), "events": ["booking.created"],
                    "headers": { "X-Tenant": "acme", "Authorization": "Bearer partner-token" }
                }),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let old = created["endpoint"]["secret"].as_str().unwrap().to_owned();
        let id = created["endpoint"]["id"].as_str().unwrap().to_owned();
        let endpoint = EndpointId::parse(&id).unwrap();
        assert_eq!(
            created["endpoint"]["headers"],
            json!({ "x-tenant": "acme", "authorization": "Bearer partner-token" })
        );
        assert_eq!(created["endpoint"]["secretRotatedAt"], Value::Null);

        self.publish(&org(name), &endpoint, 1).await;
        self.deliver_all().await;
        let before = sink.received();
        assert_eq!(before.len(), 1);
        assert!(verify_with_standardwebhooks(&old, &before[0]));
        assert_eq!(
            before[0].headers["x-tenant"], "acme",
            "custom headers on every delivery"
        );
        assert_eq!(before[0].headers["authorization"], "Bearer partner-token");

        // Another org cannot rotate it; a grace period out of range is a 400.
        assert_eq!(self.rotate("org_other", &id, None).await.0, 404);
        for grace in [json!(604_801), json!(-1), json!("1h")] {
            let (status, body, _) = self
                .rotate(name, &id, Some(json!({ "gracePeriodSeconds": grace })))
                .await;
            assert_eq!(status, 400, "{grace}: {body}");
        }

        let (status, rotated, _) = self
            .rotate(name, &id, Some(json!({ "gracePeriodSeconds": 2 })))
            .await;
        assert_eq!(status, 200, "{rotated}");
        let new = rotated["secret"].as_str().unwrap().to_owned();
        assert!(new.starts_with("whsec_") && new != old);
        let (_, shown) = self.get_endpoint_json(name, &id).await;
        assert!(shown["endpoint"]["secretRotatedAt"].is_string(), "{shown}");
        let text = shown.to_string();
        assert!(
            !text.contains(&new) && !text.contains(&old),
            "no read shows a secret"
        );

        // The replaced secret is kept encrypted under its own endpoint's context only.
        let stored = self.stored(name, &endpoint).await;
        assert_eq!(stored.previous_secrets.len(), 1);
        let previous = &stored.previous_secrets[0].ciphertext;
        let own = SecretContext {
            org_id: &org(name),
            endpoint_id: &endpoint,
        };
        assert_eq!(
            self.cipher.decrypt(previous, own).await.unwrap(),
            old.as_bytes()
        );
        let elsewhere = EndpointId::generate().unwrap();
        let foreign = SecretContext {
            org_id: &org(name),
            endpoint_id: &elsewhere,
        };
        assert!(self.cipher.decrypt(previous, foreign).await.is_err());
        let other_org = org("org_other");
        let foreign = SecretContext {
            org_id: &other_org,
            endpoint_id: &endpoint,
        };
        assert!(self.cipher.decrypt(previous, foreign).await.is_err());

        // During the grace period: both signatures, each verifies.
        self.publish(&org(name), &endpoint, 1).await;
        self.deliver_all().await;
        let during = sink.received()[1].clone();
        assert_eq!(
            signatures(&during),
            2,
            "{:?}",
            during.headers["webhook-signature"]
        );
        assert!(
            verify_with_standardwebhooks(&new, &during),
            "the new secret from the first delivery on"
        );
        assert!(
            verify_with_standardwebhooks(&old, &during),
            "the old secret during the grace period"
        );

        // After it: only the new one, and the old one is deleted from the endpoint.
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        self.publish(&org(name), &endpoint, 1).await;
        self.deliver_all().await;
        let after = sink.received()[2].clone();
        assert_eq!(signatures(&after), 1);
        assert!(verify_with_standardwebhooks(&new, &after));
        assert!(
            !verify_with_standardwebhooks(&old, &after),
            "the old secret fails after the grace period"
        );
        let stored = self.stored(name, &endpoint).await;
        assert!(
            stored.previous_secrets.is_empty(),
            "expired secrets are deleted, not just ignored"
        );

        // At most a few previous secrets are kept, however often it rotates.
        for _ in 0..MAX_PREVIOUS_SECRETS + 2 {
            assert_eq!(self.rotate(name, &id, None).await.0, 200);
        }
        let stored = self.stored(name, &endpoint).await;
        assert_eq!(stored.previous_secrets.len(), MAX_PREVIOUS_SECRETS);
        // A rotation retried with its key shows its own secret again, even after a later
        // rotation (while that secret is still in its grace period), never the later one.
        let (_, keyed, _) = self
            .rotate_with_key(name, &id, None, Some("rotate-1"))
            .await;
        let (status, again, replayed) = self
            .rotate_with_key(name, &id, None, Some("rotate-1"))
            .await;
        assert_eq!((status, replayed), (200, true));
        assert_eq!(again["secret"], keyed["secret"]);
        assert_eq!(self.rotate(name, &id, None).await.0, 200);
        let (_, after, _) = self
            .rotate_with_key(name, &id, None, Some("rotate-1"))
            .await;
        assert_eq!(
            after["secret"], keyed["secret"],
            "not the later rotation's secret"
        );
        // No grace: the replaced secret stops signing at once, and every older one with it.
        let (_, last, _) = self
            .rotate(name, &id, Some(json!({ "gracePeriodSeconds": 0 })))
            .await;
        let stored = self.stored(name, &endpoint).await;
        assert!(
            stored.previous_secrets.is_empty(),
            "no secret but the new one signs"
        );
        let (status, body, _) = self
            .rotate_with_key(name, &id, None, Some("rotate-1"))
            .await;
        assert_eq!(status, 409, "its secret was rotated away: {body}");
        self.publish(&org(name), &endpoint, 1).await;
        self.deliver_all().await;
        let latest = sink.received()[3].clone();
        assert!(verify_with_standardwebhooks(
            last["secret"].as_str().unwrap(),
            &latest
        ));
        assert!(!verify_with_standardwebhooks(&new, &latest));
    }

    async fn custom_headers_are_validated_and_replaced_whole(&self) {
        let name = "org_headers";
        let url = "https://hooks.example.com/in";
        let base = |headers: Value| json!({ "url": url, "events": ["booking.created"], "headers": headers });
        let many: serde_json::Map<String, Value> =
            (0..21).map(|n| (format!("x-h{n}"), json!("v"))).collect();
        for headers in [
            json!({ "Webhook-Signature": "v1,forged" }),
            json!({ "webhook-id": "msg_x" }),
            json!({ "Content-Type": "text/plain" }),
            json!({ "Content-Encoding": "gzip" }),
            json!({ "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" }),
            json!({ "Host": "internal" }),
            json!({ "Transfer-Encoding": "chunked" }),
            json!({ "Connection": "close" }),
            json!({ "Upgrade": "h2c" }),
            json!({ "User-Agent": "me" }),
            json!({ "X Bad": "space in name" }),
            json!({ "x-smuggle": "a\r\nx-injected: 1" }),
            json!({ "x-long": "v".repeat(1025) }),
            json!({ "x-number": 5 }),
            json!({ "X-Dup": "a", "x-dup": "b" }),
            Value::Object(many),
            json!(["x-list"]),
        ] {
            let (status, body, _) = self
                .create_endpoint(name, None, base(headers.clone()))
                .await;
            assert_eq!(status, 400, "{headers}: {body}");
            assert_eq!(body["errors"][0]["field"], "headers", "{body}");
        }
        let (status, created, _) = self
            .create_endpoint(
                name,
                None,
                base(json!({ "X-Api-Key": "k1", "x-empty": "" })),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["endpoint"]["id"].as_str().unwrap();
        let path = format!("/webhooks/{id}");
        let patch = |headers: Value| {
            ApiEvent::new("PATCH", "/webhooks/{id}", &path)
                .org(name)
                .id(id)
                .json(&json!({ "headers": headers }))
                .request()
        };
        let (status, body) = common::testing::read_response(
            api::update_webhook(&self.store, &local_api(), patch(json!({ "X-Other": "2" }))).await,
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["endpoint"]["headers"],
            json!({ "x-other": "2" }),
            "PATCH replaces the whole object"
        );
        let (status, body) = common::testing::read_response(
            api::update_webhook(
                &self.store,
                &local_api(),
                patch(json!({ "content-length": "1" })),
            )
            .await,
        );
        assert_eq!(status, 400, "{body}");
        let (_, body) = common::testing::read_response(
            api::update_webhook(&self.store, &local_api(), patch(json!({}))).await,
        );
        assert_eq!(
            body["endpoint"]["headers"],
            json!({}),
            "an empty object removes them all"
        );
    }

    async fn an_idempotency_key_makes_a_retry_a_replay(&self) {
        let sink = Sink::always(200).await;
        let name = "org_idem";
        let (_, created, _) = self
            .create_endpoint(
                name,
                None,
                json!({ "url": sink.url(), "events": ["booking.created"] }),
            )
            .await;
        assert!(created["endpoint"]["id"].is_string(), "{created}");
        let booking = json!({
            "customerName": "Ada", "customerEmail": "ada@example.com",
            "startTime": "2030-05-01T10:00:00Z", "endTime": "2030-05-01T11:00:00Z"
        });
        let first = self.post_booking(name, Some("retry-1"), &booking).await;
        assert_eq!((first.0, first.2), (201, false), "{}", first.1);
        // The same request again, its JSON written differently: the first answer, replayed.
        let reordered = json!({
            "endTime": "2030-05-01T11:00:00Z", "startTime": "2030-05-01T10:00:00Z",
            "customerEmail": "ada@example.com", "customerName": "Ada"
        });
        let second = self.post_booking(name, Some("retry-1"), &reordered).await;
        assert_eq!((second.0, second.2), (201, true));
        assert_eq!(second.1, first.1, "the first answer again");
        self.deliver_all().await;
        let received = sink.received();
        assert_eq!(
            received.len(),
            1,
            "one booking, one booking.created, one delivery"
        );

        // The same key with another body: 422, and nothing created.
        let mut other = booking.clone();
        other["customerName"] = json!("Bob");
        let (status, body, _) = self.post_booking(name, Some("retry-1"), &other).await;
        assert_eq!(status, 422, "{body}");
        // Another org's identical key is its own.
        let theirs = self
            .post_booking("org_idem_other", Some("retry-1"), &booking)
            .await;
        assert_eq!((theirs.0, theirs.2), (201, false));
        assert_ne!(theirs.1["booking"]["id"], first.1["booking"]["id"]);
        // A request that failed gives its key back.
        let (status, _, _) = self
            .post_booking(name, Some("retry-2"), &json!({ "customerName": "Ada" }))
            .await;
        assert_eq!(status, 400);
        let (status, _, replayed) = self.post_booking(name, Some("retry-2"), &booking).await;
        assert_eq!((status, replayed), (201, false));
        // Malformed keys.
        for key in ["", &"k".repeat(256), "naïve"] {
            let (status, body, _) = self.post_booking(name, Some(key), &booking).await;
            assert_eq!(status, 400, "{key:?}: {body}");
            assert_eq!(body["errors"][0]["field"], "Idempotency-Key");
        }

        // Two at once with one key: one booking.
        let (a, b) = tokio::join!(
            self.post_booking(name, Some("race-1"), &booking),
            self.post_booking(name, Some("race-1"), &booking),
        );
        let created: Vec<&Value> = [&a, &b]
            .into_iter()
            .filter(|r| r.0 == 201)
            .map(|r| &r.1["booking"]["id"])
            .collect();
        assert!(!created.is_empty(), "{a:?} {b:?}");
        assert!(
            created.iter().all(|id| *id == created[0]),
            "one booking: {a:?} {b:?}"
        );
        for other in [&a, &b].into_iter().filter(|r| r.0 != 201) {
            assert_eq!(other.0, 409, "the loser waits or gets 409: {other:?}");
        }

        // A key another request holds: this one waits for it, and answers 409 if it does not
        // finish; a holder that answers meanwhile is replayed.
        let hold = async |key: &str| {
            let now = common::time::unix_millis_now();
            let claim = IdempotencyRecord::claim(
                IdempotencyKey::parse(key).unwrap().storage_id(),
                fingerprint("POST", "/bookings", booking.to_string().as_bytes()),
                "another-request".into(),
                now,
            );
            assert_eq!(
                self.store
                    .claim_idempotency_key(&org(name), &claim, now)
                    .await
                    .unwrap(),
                None
            );
            claim
        };
        hold("held-1").await;
        let (status, body, _) = self.post_booking(name, Some("held-1"), &booking).await;
        assert_eq!(status, 409, "{body}");
        let claim = hold("held-2").await;
        let first_answer = StoredResponse {
            status: 201,
            body: json!({ "booking": { "id": "bk_theirs" } }).to_string(),
        };
        let finish = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let completion = IdempotencyCompletion {
                key_id: claim.key_id.clone(),
                token: "another-request".into(),
                response: first_answer.clone(),
            };
            self.store
                .complete_idempotency_key(&org(name), &completion)
                .await
                .unwrap();
        };
        let (waited, ()) = tokio::join!(self.post_booking(name, Some("held-2"), &booking), finish);
        assert_eq!((waited.0, waited.2), (201, true), "{}", waited.1);
        assert_eq!(waited.1["booking"]["id"], "bk_theirs");

        // POST /webhooks: the replay names the same endpoint and shows its secret again, from
        // the stored ciphertext; the idempotency record holds no secret.
        let body = json!({ "url": sink.url(), "events": ["booking.cancelled"] });
        let first = self
            .create_endpoint(name, Some("endpoint-1"), body.clone())
            .await;
        let again = self.create_endpoint(name, Some("endpoint-1"), body).await;
        assert_eq!((first.0, again.0, again.2), (201, 201, true));
        assert_eq!(again.1["endpoint"]["id"], first.1["endpoint"]["id"]);
        let secret = first.1["endpoint"]["secret"].as_str().unwrap();
        assert_eq!(again.1["endpoint"]["secret"], secret);
        let key_id = IdempotencyKey::parse("endpoint-1").unwrap().storage_id();
        let record = self
            .store
            .idempotency_record(&org(name), &key_id)
            .await
            .unwrap()
            .unwrap();
        match record.state {
            KeyState::Completed(stored) => {
                assert!(!stored.body.contains(secret) && stored.body.contains("\"id\""))
            }
            other => panic!("not completed: {other:?}"),
        }
    }

    async fn bookings_change_and_cancel_and_announce_it(&self) {
        let name = "org_bookings";
        let cancels = Sink::always(200).await;
        let everything = Sink::always(200).await;
        let (_, cancel_only, _) = self
            .create_endpoint(
                name,
                None,
                json!({ "url": cancels.url(), "events": ["booking.cancelled"] }),
            )
            .await;
        let (_, all, _) = self.create_endpoint(name, None, json!({ "url": everything.url(), "events": ["booking.created", "booking.updated", "booking.cancelled"] })).await;
        let booking = json!({
            "customerName": "Ada", "customerEmail": "ada@example.com", "notes": "window seat",
            "startTime": "2030-05-01T10:00:00Z", "endTime": "2030-05-01T11:00:00Z"
        });
        let (status, created, _) = self.post_booking(name, None, &booking).await;
        assert_eq!(status, 201);
        assert_eq!(created["booking"]["status"], "confirmed");
        assert_eq!(
            created["booking"]["updatedAt"],
            created["booking"]["createdAt"]
        );
        let id = created["booking"]["id"].as_str().unwrap();

        let (status, read, _) = self.booking_route("GET", name, id, None).await;
        assert_eq!((status, &read), (200, &created));
        for method in ["GET", "PATCH", "CANCEL"] {
            let body = (method != "GET").then(|| json!({ "notes": "x" }));
            let body = if method == "CANCEL" {
                Some(json!({}))
            } else {
                body
            };
            assert_eq!(
                self.booking_route(method, "org_someone_else", id, body)
                    .await
                    .0,
                404,
                "{method}"
            );
        }
        assert_eq!(
            self.booking_route("GET", name, "bk_nope", None).await.0,
            404
        );
        for bad in [
            json!({}),
            json!({ "endTime": "2030-05-01T09:00:00Z" }),
            json!({ "status": "cancelled" }),
            json!({ "customerEmail": "nope" }),
        ] {
            let (status, body, _) = self
                .booking_route("PATCH", name, id, Some(bad.clone()))
                .await;
            assert_eq!(status, 400, "{bad}: {body}");
        }
        // Nothing really changed: nothing written, nothing announced.
        let (status, same, _) = self
            .booking_route("PATCH", name, id, Some(json!({ "notes": "window seat" })))
            .await;
        assert_eq!((status, &same), (200, &created));

        let (status, updated, _) = self
            .booking_route(
                "PATCH",
                name,
                id,
                Some(json!({ "notes": "aisle seat", "endTime": "2030-05-01T12:00:00Z" })),
            )
            .await;
        assert_eq!(status, 200, "{updated}");
        assert_eq!(updated["booking"]["notes"], "aisle seat");
        assert_ne!(
            updated["booking"]["updatedAt"],
            created["booking"]["updatedAt"]
        );

        let (status, cancelled, _) = self
            .booking_route(
                "CANCEL",
                name,
                id,
                Some(json!({ "reason": "changed plans" })),
            )
            .await;
        assert_eq!(status, 200, "{cancelled}");
        assert_eq!(cancelled["booking"]["status"], "cancelled");
        assert_eq!(cancelled["booking"]["reason"], "changed plans");
        assert!(cancelled["booking"]["cancelledAt"].is_string());
        let (status, body, _) = self.booking_route("CANCEL", name, id, None).await;
        assert_eq!(status, 409, "cancelled twice: {body}");
        let (status, body, _) = self
            .booking_route("PATCH", name, id, Some(json!({ "notes": "too late" })))
            .await;
        assert_eq!(status, 409, "an update of a cancelled booking: {body}");

        self.deliver_all().await;
        let received = cancels.received();
        assert_eq!(received.len(), 1, "exactly the cancel");
        let secret = cancel_only["endpoint"]["secret"].as_str().unwrap();
        assert!(verify_with_standardwebhooks(secret, &received[0]));
        let payload: Value = serde_json::from_str(&received[0].body).unwrap();
        assert_eq!(payload["type"], "booking.cancelled");
        assert_eq!(payload["data"], json!({ "booking": cancelled["booking"] }));

        let secret = all["endpoint"]["secret"].as_str().unwrap();
        let mut types: Vec<String> = Vec::new();
        for received in everything.received() {
            assert!(verify_with_standardwebhooks(secret, &received));
            let payload: Value = serde_json::from_str(&received.body).unwrap();
            if payload["type"] == "booking.updated" {
                assert_eq!(payload["data"]["changes"], json!(["endTime", "notes"]));
            }
            types.push(payload["type"].as_str().unwrap().to_owned());
        }
        types.sort();
        let mut expected: Vec<String> = EventType::BOOKING_EVENTS
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect();
        expected.sort();
        assert_eq!(
            types, expected,
            "one of each, the unchanged PATCH announced nothing"
        );
    }
}

#[tokio::test]
async fn the_endpoint_lifecycle_and_bookings_keep_their_promises_embedded() {
    Rig::embedded(config("1s"))
        .rotation_signs_with_both_secrets_until_the_grace_period_ends()
        .await;
    Rig::embedded(config("1s"))
        .custom_headers_are_validated_and_replaced_whole()
        .await;
    Rig::embedded(config("1s"))
        .an_idempotency_key_makes_a_retry_a_replay()
        .await;
    Rig::embedded(config("1s"))
        .bookings_change_and_cancel_and_announce_it()
        .await;
}

#[tokio::test]
async fn the_endpoint_lifecycle_and_bookings_keep_their_promises_on_moto() {
    Rig::moto(config("1s"))
        .await
        .rotation_signs_with_both_secrets_until_the_grace_period_ends()
        .await;
    Rig::moto(config("1s"))
        .await
        .custom_headers_are_validated_and_replaced_whole()
        .await;
    Rig::moto(config("1s"))
        .await
        .an_idempotency_key_makes_a_retry_a_replay()
        .await;
    Rig::moto(config("1s"))
        .await
        .bookings_change_and_cancel_and_announce_it()
        .await;
}
