//! No log level prints a secret or a token: a Lambda binary run at TRACE against moto.

use std::process::Stdio;

use base64::Engine;
use std::time::Duration;
use tokio::io::AsyncReadExt;

use common::testing::{aws_endpoint, create_key, create_table, sdk_config, RuntimeApi};
use serde_json::{json, Value};

/// A bearer token as API Gateway passes it on (the authorizer has verified it already).
const BEARER: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJvcmdfaWQiOiJvcmdfZGVtbyJ9.c2lnbmF0dXJlLXRoYXQtbXVzdC1ub3QtbGVhaw";

#[tokio::test]
async fn create_webhook_at_trace_logs_neither_the_secret_nor_the_token() {
    let sdk = sdk_config().await;
    let (table, key) = (create_table(&sdk).await, create_key(&sdk).await);
    let mut event: Value =
        serde_json::from_str(include_str!("../../../events/create-webhook.json")).unwrap();
    event["headers"]["authorization"] = json!(format!("Bearer {BEARER}"));
    let runtime = RuntimeApi::serving(event).await;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_create-webhook"))
        .envs(runtime.lambda_environment())
        .env("AWS_LAMBDA_LOG_LEVEL", "TRACE")
        .env("RUST_LOG", "trace")
        .env("TABLE_NAME", &table)
        .env("KMS_KEY_ID", &key)
        .env("AWS_ENDPOINT_URL", aws_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read as it is written: a full pipe would block the function mid-log.
    let read_all = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text).await;
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let answer = runtime.answer(Duration::from_secs(30)).await;
    // Let the last log lines of the invocation out before stopping the process.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().await.unwrap();
    let logs = format!("{}{}", stdout.await.unwrap(), stderr.await.unwrap());

    let (path, body) = answer.split_once('\n').unwrap();
    assert!(path.ends_with("/response"), "{answer}");
    let response: Value = serde_json::from_str(body).unwrap();
    let created: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    let secret = created["endpoint"]["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{created}");

    assert!(
        logs.contains("endpoint created"),
        "the logs were captured: {logs}"
    );
    // The KMS Encrypt request carries the plaintext base64-encoded.
    let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
    for (what, needle) in [
        ("the secret", secret),
        (
            "the secret's key bytes",
            secret.trim_start_matches("whsec_"),
        ),
        (
            "the secret as KMS is sent it",
            encoded.trim_end_matches('='),
        ),
        ("the bearer token", BEARER),
    ] {
        assert!(
            !logs.contains(needle),
            "{what} is in the logs at TRACE:\n{}",
            logs.lines()
                .filter(|l| l.contains(needle))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Collects what a subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_relay_alarm_counts_what_the_relay_logs() {
    use common::ports::{BookingStore, EndpointStore};

    let store = common::adapters::embedded::MemoryStore::new();
    let org = crate::contract_store::org("org_alarm");
    store
        .insert_endpoint(
            &crate::contract_store::endpoint(
                &org,
                &[common::domain::event::EventType::BookingCreated],
            ),
            10,
            None,
        )
        .await
        .unwrap();
    let booking = crate::contract_store::booking();
    let event = common::domain::event::Event::new(
        common::domain::event::EventType::BookingCreated,
        json!({}),
    )
    .unwrap();
    store
        .insert_booking(&org, &booking, &event, None)
        .await
        .unwrap();

    // The JSON format Lambda's `LogFormat: JSON` selects (AWS_LAMBDA_LOG_FORMAT).
    let captured = Captured::default();
    let writer = captured.clone();
    let json = common::telemetry::subscriber(move || writer.clone(), true);
    let guard = lambda_http::tracing::dispatcher::set_default(&json.into());
    tokio::time::sleep(Duration::from_millis(2)).await;
    let local = common::adapters::embedded::LocalQueue::new(Duration::from_secs(30), 3);
    let refusing = common::testing::RefusingQueue {
        inner: &local,
        refused_org: None,
    };
    let report = common::publish::relay_pending_events(&store, &refusing, Duration::ZERO)
        .await
        .unwrap();
    drop(guard);
    assert_eq!(report.failed, 1);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let counted: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["relay_failures"].as_u64() == Some(1))
        .collect();
    assert_eq!(counted.len(), 1, "{logs}");
    let template = include_str!("../../../template.yaml");
    assert!(
        template.contains(r#"FilterPattern: "{ $.fields.relay_failures >= 3 }""#),
        "the relay's metric filter reads the field the relay logs"
    );
}
