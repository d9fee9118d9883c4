//! Every sample event in events/ runs through its function's handler, so they stay valid for
//! `sam local invoke -e` and `cargo lambda invoke --data-file`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::adapters::embedded::{LocalCipher, LocalQueue, MemoryStore};
use common::api::{self, org_from_claims};
use common::delivery::{Deliverer, SqsEvent};
use common::domain::event::{DeliveryMessage, EventType};
use common::domain::id::EndpointId;
use common::domain::target::TargetPolicy;
use common::domain::OrgId;
use common::testing::{
    api_config, read_response, seed_endpoint, verify_with_standardwebhooks, Sink,
};
use lambda_http::RequestExt;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn api_event(name: &str) -> lambda_http::Request {
    let text = std::fs::read_to_string(repo_root().join("events").join(name)).unwrap();
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test]
async fn every_sample_event_runs_through_its_handler() {
    let config = api_config(TargetPolicy::STRICT);
    let cipher = LocalCipher::generate().unwrap();
    let mut seen = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("events"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in &names {
        let store = MemoryStore::new();
        let status = match name.as_str() {
            "create-webhook.json" => {
                read_response(api::create_webhook(&store, &cipher, &config, api_event(name)).await)
                    .0
            }
            "list-webhooks.json" => {
                read_response(api::list_webhooks(&store, &config, api_event(name)).await).0
            }
            "create-booking.json" => {
                let queue = LocalQueue::new(Duration::from_secs(30), 5);
                read_response(api::create_booking(&store, &queue, &config, api_event(name)).await).0
            }
            "get-webhook.json" | "update-webhook.json" | "delete-webhook.json" => {
                let request = api_event(name);
                let org = org_from_claims(&request, "org_id").unwrap();
                let id = EndpointId::parse(request.path_parameters().first("id").unwrap()).unwrap();
                seed_endpoint(&store, &cipher, &org, &id, "https://hooks.example.com/in").await;
                let response = match name.as_str() {
                    "get-webhook.json" => api::get_webhook(&store, &config, request).await,
                    "update-webhook.json" => api::update_webhook(&store, &config, request).await,
                    _ => api::delete_webhook(&store, &config, request).await,
                };
                read_response(response).0
            }
            "deliver-webhooks.json" => {
                let text = std::fs::read_to_string(repo_root().join("events").join(name)).unwrap();
                let event: SqsEvent = serde_json::from_str(&text).unwrap();
                let message: DeliveryMessage =
                    serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
                let sink = Sink::always(200).await;
                let org = OrgId::parse(&message.org_id).unwrap();
                let secret =
                    seed_endpoint(&store, &cipher, &org, &message.endpoint_id, &sink.url()).await;
                let local = TargetPolicy::LOCAL_DEVELOPMENT;
                let mut delivery =
                    common::config::DeliveryConfig::from_source(&|_: &str| None).unwrap();
                delivery.targets = local;
                let deliverer = Deliverer::new(store.clone(), cipher.clone(), delivery).unwrap();
                let control = Arc::new(LocalQueue::new(Duration::from_secs(30), 5));
                let deadline = common::time::unix_millis_now() + 30_000;
                let response = deliverer
                    .handle_sqs_event(control.as_ref(), event, deadline)
                    .await;
                assert!(response.batch_item_failures.is_empty());
                let received = sink.received();
                assert_eq!(received.len(), 1);
                assert_eq!(received[0].headers["webhook-id"], message.id.as_str());
                assert!(verify_with_standardwebhooks(secret.expose(), &received[0]));
                200
            }
            "relay-events.json" => {
                let text = std::fs::read_to_string(repo_root().join("events").join(name)).unwrap();
                let _scheduled: serde_json::Value = serde_json::from_str(&text).unwrap();
                // An event whose producer could not publish it waits in the outbox.
                let subscriber = EndpointId::generate().unwrap();
                let org = OrgId::parse("org_demo").unwrap();
                seed_endpoint(
                    &store,
                    &cipher,
                    &org,
                    &subscriber,
                    "https://hooks.example.com/in",
                )
                .await;
                let booking = crate::contract_store::booking();
                let event = common::domain::event::Event::new(
                    EventType::BookingCreated,
                    serde_json::json!({}),
                )
                .unwrap();
                common::ports::BookingStore::insert_booking(&store, &org, &booking, &event, None)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
                let queue = LocalQueue::new(Duration::from_secs(30), 5);
                let report = common::publish::relay_pending_events(&store, &queue, Duration::ZERO)
                    .await
                    .unwrap();
                assert_eq!((report.published, report.failed), (1, 0));
                assert_eq!(queue.len().unwrap(), 1);
                200
            }
            "list-messages.json"
            | "get-message.json"
            | "list-attempts.json"
            | "resend-message.json"
            | "recover-messages.json"
            | "send-test-event.json" => {
                let request = api_event(name);
                let org = org_from_claims(&request, "org_id").unwrap();
                let id = EndpointId::parse(request.path_parameters().first("id").unwrap()).unwrap();
                seed_endpoint(&store, &cipher, &org, &id, "https://hooks.example.com/in").await;
                if let Some(message) = request.path_parameters().first("msgId") {
                    let record = logged_message(&org, &id, message);
                    common::ports::DeliveryLog::record_messages(&store, &[record])
                        .await
                        .unwrap();
                }
                let queue = LocalQueue::new(Duration::from_secs(30), 5);
                let response = match name.as_str() {
                    "list-messages.json" => api::list_messages(&store, &config, request).await,
                    "get-message.json" => api::get_message(&store, &config, request).await,
                    "list-attempts.json" => api::list_attempts(&store, &config, request).await,
                    "resend-message.json" => {
                        api::resend_message(&store, &queue, &config, request).await
                    }
                    "recover-messages.json" => {
                        // Its `since` is a fixed date: within a retention long enough to reach it.
                        let mut config = config.clone();
                        config.retention = Duration::from_secs(3650 * 86_400);
                        api::recover_messages(&store, &queue, &config, request).await
                    }
                    _ => api::send_test_event(&store, &queue, &config, request).await,
                };
                let (status, body) = read_response(response);
                assert!(status < 300, "{name}: {body}");
                status
            }
            "list-event-types.json" => {
                read_response(api::list_event_types(&config, api_event(name)).await).0
            }
            "rotate-webhook-secret.json" => {
                let request = api_event(name);
                let org = org_from_claims(&request, "org_id").unwrap();
                let id = EndpointId::parse(request.path_parameters().first("id").unwrap()).unwrap();
                let old =
                    seed_endpoint(&store, &cipher, &org, &id, "https://hooks.example.com/in").await;
                let (status, body) = read_response(
                    api::rotate_webhook_secret(&store, &cipher, &config, request).await,
                );
                let new = body["secret"].as_str().unwrap();
                assert!(new.starts_with("whsec_") && new != old.expose(), "{body}");
                status
            }
            "get-booking.json" | "update-booking.json" | "cancel-booking.json" => {
                let request = api_event(name);
                let org = org_from_claims(&request, "org_id").unwrap();
                let id = common::domain::id::BookingId::parse(
                    request.path_parameters().first("id").unwrap(),
                )
                .unwrap();
                let booking = common::domain::booking::Booking {
                    id,
                    ..crate::contract_store::booking()
                };
                let event = common::domain::event::Event::new(
                    EventType::BookingCreated,
                    serde_json::json!({ "booking": &booking }),
                )
                .unwrap();
                common::ports::BookingStore::insert_booking(&store, &org, &booking, &event, None)
                    .await
                    .unwrap();
                let queue = LocalQueue::new(Duration::from_secs(30), 5);
                let response = match name.as_str() {
                    "get-booking.json" => api::get_booking(&store, &config, request).await,
                    "update-booking.json" => {
                        api::update_booking(&store, &queue, &config, request).await
                    }
                    _ => api::cancel_booking(&store, &queue, &config, request).await,
                };
                let (status, body) = read_response(response);
                let expected_status = match name.as_str() {
                    "cancel-booking.json" => "cancelled",
                    _ => "confirmed",
                };
                assert_eq!(body["booking"]["status"], expected_status, "{name}: {body}");
                status
            }
            other => panic!("events/{other} belongs to no function: add it to this test"),
        };
        let expected = match name.as_str() {
            "create-webhook.json" | "create-booking.json" => 201,
            "resend-message.json" | "recover-messages.json" | "send-test-event.json" => 202,
            "delete-webhook.json" => 204,
            _ => 200,
        };
        assert_eq!(status, expected, "{name}");
        seen.push(name.trim_end_matches(".json").to_owned());
    }
    let mut functions = crate::template::workspace_lambdas();
    functions.sort();
    assert_eq!(seen, functions, "one sample event per function");
}

/// A delivered message in the log, as the delivery worker would have recorded it.
fn logged_message(
    org: &OrgId,
    endpoint: &EndpointId,
    id: &str,
) -> common::domain::delivery::MessageRecord {
    common::domain::delivery::MessageRecord {
        org: org.clone(),
        endpoint_id: endpoint.clone(),
        message_id: common::domain::id::MessageId::parse(id).unwrap(),
        event_id: None,
        event_type: "booking.created".into(),
        timestamp: "2030-03-31T08:00:00.000Z".into(),
        data: serde_json::json!({ "booking": {} }),
        state: common::domain::delivery::MessageState::Delivered,
        attempts: 1,
        next_attempt_at: None,
        last_status: Some(200),
        last_error: None,
        updated_at: "2030-03-31T08:00:01.000Z".into(),
        expires_at: common::time::unix_seconds_now() + 3600,

        trace: None,
    }
}
