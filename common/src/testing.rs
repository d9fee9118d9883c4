//! Test support (feature `test-support`): resources in the AWS emulator, a webhook sink on
//! loopback, API Gateway request fixtures, and the official Standard Webhooks verifier.
//! Test code: panics here are test failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::adapters::aws::PENDING_EVENTS_INDEX;
use crate::config::ApiConfig;
use crate::domain::endpoint::Endpoint;
use crate::domain::event::EventType;
use crate::domain::id::EndpointId;
use crate::domain::secret::WebhookSecret;
use crate::domain::target::TargetPolicy;
use crate::domain::OrgId;
use crate::ports::{EndpointStore, SecretCipher, SecretContext};

pub const ENDPOINT_VAR: &str = "WEBHOOKS_TEST_AWS_ENDPOINT";
pub const PYTHON_VAR: &str = "WEBHOOKS_TEST_PYTHON";

/// The moto server started by `./scripts/test`.
pub fn aws_endpoint() -> String {
    std::env::var(ENDPOINT_VAR)
        .unwrap_or_else(|_| panic!("{ENDPOINT_VAR} is not set: run the tests with ./scripts/test, which starts moto server"))
}

pub async fn sdk_config() -> SdkConfig {
    sdk_config_for(&aws_endpoint()).await
}

/// An SDK configuration for any endpoint, with test credentials.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    crate::adapters::aws::sdk_defaults()
        .unwrap()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

/// A name no other test (or earlier run against the same emulator) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).unwrap();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        u32::from_le_bytes(random)
    )
}

/// A fresh table with the project's key schema.
pub async fn create_table(sdk: &SdkConfig) -> String {
    let name = unique("webhooks");
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    let attribute = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .unwrap()
    };
    let outbox = GlobalSecondaryIndex::builder()
        .index_name(PENDING_EVENTS_INDEX)
        .key_schema(key("outbox", KeyType::Hash))
        .key_schema(key("pendingSince", KeyType::Range))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .unwrap();
    client
        .create_table()
        .table_name(&name)
        .key_schema(key("PK", KeyType::Hash))
        .key_schema(key("SK", KeyType::Range))
        .attribute_definitions(attribute("PK", ScalarAttributeType::S))
        .attribute_definitions(attribute("SK", ScalarAttributeType::S))
        .attribute_definitions(attribute("outbox", ScalarAttributeType::S))
        .attribute_definitions(attribute("pendingSince", ScalarAttributeType::N))
        .global_secondary_indexes(outbox)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    name
}

pub async fn create_key(sdk: &SdkConfig) -> String {
    let output = aws_sdk_kms::Client::new(sdk)
        .create_key()
        .send()
        .await
        .unwrap();
    output.key_metadata.unwrap().key_id
}

/// A fresh delivery queue and its dead-letter queue.
pub struct Queues {
    pub url: String,
    pub dead_letter_url: String,
}

pub async fn create_queues(sdk: &SdkConfig, max_receive_count: u32) -> Queues {
    let client = aws_sdk_sqs::Client::new(sdk);
    let dlq_name = unique("webhooks-dlq");
    let dead_letter_url = client
        .create_queue()
        .queue_name(&dlq_name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dead_letter_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap();
    let redrive =
        json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count }).to_string();
    let url = client
        .create_queue()
        .queue_name(unique("webhooks-delivery"))
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    Queues {
        url,
        dead_letter_url,
    }
}

/// Stores a `booking.created` endpoint under exactly this org, id and URL (bypassing the API's
/// URL rules), with a fresh secret, which it returns.
pub async fn seed_endpoint(
    store: &impl EndpointStore,
    cipher: &impl SecretCipher,
    org_id: &OrgId,
    id: &EndpointId,
    url: &str,
) -> WebhookSecret {
    let secret = WebhookSecret::generate().unwrap();
    let context = SecretContext {
        org_id,
        endpoint_id: id,
    };
    let endpoint = Endpoint {
        secret_ciphertext: cipher
            .encrypt(secret.expose().as_bytes(), context)
            .await
            .unwrap(),
        id: id.clone(),
        org_id: org_id.clone(),
        url: url.to_owned(),
        events: vec![EventType::BookingCreated],
        description: String::new(),
        disabled: false,
        disabled_reason: None,
        disabled_at: None,
        health: Default::default(),
        created_at: "2030-01-01T00:00:00.000Z".into(),
        updated_at: "2030-01-01T00:00:00.000Z".into(),
        headers: Default::default(),
        previous_secrets: Vec::new(),
        secret_rotated_at: None,
    };
    store.insert_endpoint(&endpoint, 100, None).await.unwrap();
    secret
}

pub fn api_config(targets: TargetPolicy) -> ApiConfig {
    ApiConfig {
        org_id_claim: "org_id".into(),
        targets,
        publish_timeout: Duration::from_secs(5),
        max_endpoints_per_org: 100,
        retention: Duration::from_secs(30 * 86_400),
        metrics: crate::metrics::Metrics::in_memory("WebhooksTest"),
    }
}

/// An API Gateway HTTP API (payload 2.0) event, parsed the way the Lambda runtime parses it.
pub struct ApiEvent {
    event: Value,
}

impl ApiEvent {
    pub fn new(method: &str, route: &str, path: &str) -> Self {
        Self {
            event: json!({
                "version": "2.0",
                "routeKey": format!("{method} {route}"),
                "rawPath": path,
                "rawQueryString": "",
                "headers": { "content-type": "application/json", "host": "api.example.com" },
                "requestContext": {
                    "accountId": "123456789012",
                    "apiId": "api",
                    "domainName": "api.example.com",
                    "domainPrefix": "api",
                    "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "tests" },
                    "requestId": "request",
                    "routeKey": format!("{method} {route}"),
                    "stage": "$default",
                    "time": "01/Jan/2030:00:00:00 +0000",
                    "timeEpoch": 1_893_456_000_000u64
                },
                "isBase64Encoded": false
            }),
        }
    }

    /// Claims as the JWT authorizer passes them.
    pub fn claims(mut self, claims: &[(&str, &str)]) -> Self {
        let claims: serde_json::Map<String, Value> = claims
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.event["requestContext"]["authorizer"] =
            json!({ "jwt": { "claims": claims, "scopes": null } });
        self
    }

    pub fn org(self, org: &str) -> Self {
        self.claims(&[("org_id", org), ("sub", "user-1")])
    }

    pub fn id(mut self, id: &str) -> Self {
        self.event["pathParameters"] = json!({ "id": id });
        self
    }

    /// Adds a path parameter (after [`ApiEvent::id`]).
    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.event["pathParameters"][name] = json!(value);
        self
    }

    pub fn query(mut self, pairs: &[(&str, &str)]) -> Self {
        let map: serde_json::Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.event["rawQueryString"] = json!(url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish());
        self.event["queryStringParameters"] = Value::Object(map);
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.event["body"] = json!(body.into());
        self
    }

    pub fn json(self, body: &Value) -> Self {
        self.body(body.to_string())
    }

    /// Adds a request header (API Gateway hands them over in lower case).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.event["headers"][name.to_ascii_lowercase()] = json!(value);
        self
    }

    pub fn request(self) -> lambda_http::Request {
        lambda_http::request::from_str(&self.event.to_string()).unwrap()
    }
}

/// A handler's answer: status and parsed JSON body (null when empty).
pub fn read_response(response: lambda_http::Response<lambda_http::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = match response.body() {
        lambda_http::Body::Text(text) => serde_json::from_str(text).unwrap(),
        lambda_http::Body::Binary(bytes) => serde_json::from_slice(bytes).unwrap(),
        _ => Value::Null,
    };
    (status, body)
}

/// What a sink answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
    /// Answer only once every party of the barrier has a request in hand.
    pub gate: Option<Arc<tokio::sync::Barrier>>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            gate: None,
        }
    }

    pub fn gated(mut self, gate: Arc<tokio::sync::Barrier>) -> Self {
        self.gate = Some(gate);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request a sink received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// A webhook receiver on loopback that records what it gets and answers from a script.
pub struct Sink {
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Sink {
    /// Answers `replies` in order, then `then` to everything after.
    pub async fn start(replies: Vec<Reply>, then: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(replies)));
        let task = tokio::spawn({
            let received = received.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (received, script, then) = (received.clone(), script.clone(), then.clone());
                    tokio::spawn(async move {
                        let service =
                            service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                                let (received, script, then) =
                                    (received.clone(), script.clone(), then.clone());
                                async move {
                                    let (parts, body) = request.into_parts();
                                    let body = body
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    received.lock().unwrap().push(Received {
                                        method: parts.method.to_string(),
                                        path: parts.uri.path().to_owned(),
                                        headers: parts
                                            .headers
                                            .iter()
                                            .map(|(k, v)| {
                                                (
                                                    k.as_str().to_owned(),
                                                    v.to_str().unwrap_or("").to_owned(),
                                                )
                                            })
                                            .collect(),
                                        body: String::from_utf8_lossy(&body).into_owned(),
                                    });
                                    let reply = script.lock().unwrap().pop_front().unwrap_or(then);
                                    if let Some(gate) = &reply.gate {
                                        gate.wait().await;
                                    }
                                    tokio::time::sleep(reply.delay).await;
                                    let mut response =
                                        hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                                    *response.status_mut() =
                                        hyper::StatusCode::from_u16(reply.status).unwrap();
                                    for (name, value) in &reply.headers {
                                        response.headers_mut().insert(
                                            hyper::header::HeaderName::from_bytes(name.as_bytes())
                                                .unwrap(),
                                            hyper::header::HeaderValue::from_str(value).unwrap(),
                                        );
                                    }
                                    Ok::<_, Infallible>(response)
                                }
                            });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Self {
            address,
            received,
            task,
        }
    }

    pub async fn always(status: u16) -> Self {
        Self::start(Vec::new(), Reply::status(status)).await
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Verifies a received webhook with the official `standardwebhooks` Python package.
pub fn verify_with_standardwebhooks(secret: &str, received: &Received) -> bool {
    let python = std::env::var(PYTHON_VAR)
        .unwrap_or_else(|_| panic!("{PYTHON_VAR} is not set: run the tests with ./scripts/test, which installs standardwebhooks"));
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
request = json.load(sys.stdin)
try:
    Webhook(request["secret"]).verify(request["body"], request["headers"])
    print("valid")
except Exception as error:
    print("invalid:", error)
"#;
    let input =
        json!({ "secret": secret, "body": received.body, "headers": received.headers }).to_string();
    let output = run_python(&python, script, &input);
    let verdict = output.trim().to_owned();
    assert!(
        verdict.starts_with("valid") || verdict.starts_with("invalid"),
        "verifier failed: {verdict}"
    );
    verdict == "valid"
}

/// CloudWatch's metric units (`StandardUnit`), the only ones an EMF metric may name.
const EMF_UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one log line as CloudWatch would extract metrics from it, by the EMF specification
/// (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>):
/// a JSON object whose `_aws` holds a millisecond `Timestamp` and `CloudWatchMetrics`
/// directives in `namespace`, each with dimension sets (at most 30 keys, each a string member
/// of the root) and metric definitions (a name and a standard unit, each name a root member
/// holding a number or an array of at most 100 numbers). The parsed line, or what is wrong.
pub fn validate_emf(line: &str, namespace: &str) -> Result<Value, String> {
    let root: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let aws = root.get("_aws").ok_or("no _aws member")?;
    let timestamp = aws["Timestamp"]
        .as_u64()
        .ok_or("_aws.Timestamp is not a whole number")?;
    if timestamp < 1_000_000_000_000 {
        return Err(format!("_aws.Timestamp {timestamp} is not in milliseconds"));
    }
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .filter(|d| !d.is_empty())
        .ok_or("_aws.CloudWatchMetrics is not a non-empty array")?;
    for directive in directives {
        if directive["Namespace"] != namespace {
            return Err(format!(
                "namespace {} is not {namespace}",
                directive["Namespace"]
            ));
        }
        let sets = directive["Dimensions"]
            .as_array()
            .ok_or("Dimensions is not an array")?;
        for set in sets {
            let keys = set.as_array().ok_or("a dimension set is not an array")?;
            if keys.len() > 30 {
                return Err("a dimension set has more than 30 keys".into());
            }
            for key in keys {
                let key = key.as_str().ok_or("a dimension key is not a string")?;
                if !root[key].is_string() {
                    return Err(format!("dimension {key} has no string value at the root"));
                }
            }
        }
        let metrics = directive["Metrics"]
            .as_array()
            .ok_or("Metrics is not an array")?;
        for metric in metrics {
            let name = metric["Name"].as_str().ok_or("a metric has no Name")?;
            let unit = metric["Unit"].as_str().unwrap_or("None");
            if !EMF_UNITS.contains(&unit) {
                return Err(format!("{name} has the unit {unit}, not a CloudWatch unit"));
            }
            let ok = match &root[name] {
                Value::Number(_) => true,
                Value::Array(values) => values.len() <= 100 && values.iter().all(Value::is_number),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "{name} has no number (or array of at most 100) at the root"
                ));
            }
        }
    }
    Ok(root)
}

/// Validates `instance` against a JSON Schema with the `jsonschema` Python package (the
/// validator the schema's dialect names, formats checked); the errors it reports.
pub fn validate_json_schema(schema: &Value, instance: &Value) -> Vec<String> {
    let python = std::env::var(PYTHON_VAR).unwrap_or_else(|_| {
        panic!(
            "{PYTHON_VAR} is not set: run the tests with ./scripts/test, which installs jsonschema"
        )
    });
    let script = r#"
import json, sys
from jsonschema import validators
request = json.load(sys.stdin)
cls = validators.validator_for(request["schema"])
cls.check_schema(request["schema"])
validator = cls(request["schema"], format_checker=cls.FORMAT_CHECKER)
print(json.dumps([e.message for e in validator.iter_errors(request["instance"])]))
"#;
    let input = json!({ "schema": schema, "instance": instance }).to_string();
    let output = run_python(&python, script, &input);
    serde_json::from_str(&output).unwrap_or_else(|_| panic!("validator failed: {output}"))
}

/// Runs `script` with the test venv's Python, `input` on its standard input; its standard output.
fn run_python(python: &str, script: &str, input: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A Lambda Runtime API (2018-06-01) on loopback that hands one event to the function process
/// pointed at it (`AWS_LAMBDA_RUNTIME_API`) and keeps what it answers. Further `/next` calls
/// wait forever, as they do in a frozen Lambda sandbox.
pub struct RuntimeApi {
    pub address: SocketAddr,
    response: Arc<tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<String>>>>,
    task: JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn serving(event: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (sender, receiver) = tokio::sync::oneshot::channel::<String>();
        let sender = Arc::new(Mutex::new(Some(sender)));
        let event = Arc::new(Mutex::new(Some(event.to_string())));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (sender, event) = (sender.clone(), event.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (sender, event) = (sender.clone(), event.clone());
                            async move {
                                let path = request.uri().path().to_owned();
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                if path.ends_with("/invocation/next") {
                                    let next = event.lock().unwrap().take();
                                    let Some(next) = next else {
                                        std::future::pending::<()>().await;
                                        unreachable!()
                                    };
                                    let deadline = crate::time::unix_millis_now() + 30_000;
                                    let response = hyper::Response::builder()
                                        .header("lambda-runtime-aws-request-id", "req-1")
                                        .header("lambda-runtime-deadline-ms", deadline.to_string())
                                        .header(
                                            "lambda-runtime-invoked-function-arn",
                                            "arn:aws:lambda:us-east-1:123456789012:function:test",
                                        )
                                        .header(
                                            "lambda-runtime-trace-id",
                                            "Root=1-00000000-000000000000000000000000",
                                        )
                                        .body(Full::new(Bytes::from(next)))
                                        .unwrap();
                                    return Ok::<_, Infallible>(response);
                                }
                                if let Some(sender) = sender.lock().unwrap().take() {
                                    let _ = sender.send(format!(
                                        "{path}\n{}",
                                        String::from_utf8_lossy(&body)
                                    ));
                                }
                                let mut response = hyper::Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = hyper::StatusCode::ACCEPTED;
                                Ok(response)
                            }
                        });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            address,
            response: Arc::new(tokio::sync::Mutex::new(Some(receiver))),
            task,
        }
    }

    /// What the function posted for the invocation: the path it posted to (`.../response` or
    /// `.../error`), a newline, and the body.
    pub async fn answer(&self, wait: Duration) -> String {
        let receiver = self.response.lock().await.take().unwrap();
        tokio::time::timeout(wait, receiver).await.unwrap().unwrap()
    }

    /// The environment a Lambda sandbox gives a function, pointed at this API.
    pub fn lambda_environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.address.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", "test".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "stream".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "group".into()),
        ]
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A delivery queue that refuses every message of `refused_org` (of every org when `None`), as
/// SQS refuses a poisonous body, and hands the others to `inner`.
pub struct RefusingQueue<'a, Q> {
    pub inner: &'a Q,
    pub refused_org: Option<&'static str>,
}

impl<Q: crate::ports::DeliveryQueue> crate::ports::DeliveryQueue for RefusingQueue<'_, Q> {
    async fn enqueue(
        &self,
        bodies: &[crate::domain::queue_body::QueueBody],
    ) -> Result<Vec<usize>, crate::error::QueueError> {
        let refused = |body: &crate::domain::queue_body::QueueBody| match self.refused_org {
            None => true,
            Some(org) => body.as_str().contains(&format!("\"orgId\":\"{org}\"")),
        };
        if bodies.iter().any(refused) {
            return Err(crate::error::QueueError::Unavailable(
                "InvalidMessageContents".into(),
            ));
        }
        self.inner.enqueue(bodies).await
    }
}
