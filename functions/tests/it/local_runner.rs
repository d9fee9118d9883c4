//! The local runner as a black box: start the binary, use the API over HTTP, receive and verify
//! a signed delivery, watch a failing one get dead-lettered, stop it with a signal.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::testing::{verify_with_standardwebhooks, Sink};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The project's TLS set-up, as every reqwest client of it (reqwest has no provider of its own).
fn http_client() -> reqwest::Client {
    common::tls::reqwest_builder().unwrap().build().unwrap()
}

const BINARY: &str = env!("CARGO_BIN_EXE_webhooks-local");
const JWT_SECRET: &str = "local-runner-test-secret";

struct Runner {
    child: Child,
    base: String,
    output: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Runner {
    async fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[]).await
    }

    async fn start_with(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = Command::new(BINARY)
            .args(["--port", "0"])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("WEBHOOKS_LOCAL_JWT_SECRET", JWT_SECRET)
            .env("WEBHOOKS_RETRY_SCHEDULE", "1s,1s")
            .env("RUST_LOG", "info")
            .env_remove("AWS_LAMBDA_LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = tokio::sync::oneshot::channel();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let reader = tokio::spawn({
            let output = output.clone();
            async move {
                let mut address_tx = Some(address_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(address) = line.trim().strip_prefix("webhooks-local listening on ")
                    {
                        if let Some(tx) = address_tx.take() {
                            let _ = tx.send(address.to_owned());
                        }
                    }
                    output.lock().unwrap().push(line);
                }
            }
        });
        let base = tokio::time::timeout(Duration::from_secs(30), address_rx)
            .await
            .unwrap()
            .unwrap();
        Self {
            child,
            base,
            output,
            reader,
        }
    }

    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        let status = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(exit.success(), "{exit:?}");
        // The reader ends at the end of the output, so every line is in.
        self.reader.await.unwrap();
        self.output.lock().unwrap().join("\n")
    }
}

async fn token(org: &str) -> String {
    let output = Command::new(BINARY)
        .args(["token", "--org", org])
        .env("WEBHOOKS_LOCAL_JWT_SECRET", JWT_SECRET)
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn call(
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http_client().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        },
    )
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..150 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn booking() -> Value {
    json!({"customerName": "Ada", "customerEmail": "ada@example.com", "startTime": "2030-01-01T10:00:00Z", "endTime": "2030-01-01T11:00:00Z"})
}

#[tokio::test]
async fn the_local_runner_delivers_signed_webhooks_and_dead_letters_failures() {
    let runner = Runner::start(&[]).await;
    let base = runner.base.clone();
    let acme = token("acme").await;

    let (status, body) = call(reqwest::Method::GET, format!("{base}/webhooks"), None, None).await;
    assert_eq!((status, body["message"].is_string()), (401, true));
    let (status, _) = call(
        reqwest::Method::GET,
        format!("{base}/webhooks"),
        Some("not.a.token"),
        None,
    )
    .await;
    assert_eq!(status, 401);

    let receiver = Sink::always(200).await;
    let failing = Sink::always(500).await;
    let (status, created) = call(
        reqwest::Method::POST,
        format!("{base}/webhooks"),
        Some(&acme),
        Some(json!({"url": receiver.url(), "events": ["booking.created"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["endpoint"]["secret"].as_str().unwrap().to_owned();
    let id = created["endpoint"]["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{base}/webhooks"),
        Some(&acme),
        Some(json!({"url": failing.url(), "events": ["booking.created"]})),
    )
    .await;
    assert_eq!(status, 201);

    let other = token("other").await;
    let (status, _) = call(
        reqwest::Method::GET,
        format!("{base}/webhooks/{id}"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(status, 404, "another org cannot see it");

    let (status, booked) = call(
        reqwest::Method::POST,
        format!("{base}/bookings"),
        Some(&acme),
        Some(booking()),
    )
    .await;
    assert_eq!(status, 201, "{booked}");

    let delivered = eventually("the delivery", async || {
        receiver.received().first().cloned()
    })
    .await;
    assert!(verify_with_standardwebhooks(&secret, &delivered));
    let payload: Value = serde_json::from_str(&delivered.body).unwrap();
    assert_eq!(payload["data"]["booking"]["id"], booked["booking"]["id"]);

    let letters = eventually("the dead letter", async || {
        let (_, body) = call(
            reqwest::Method::GET,
            format!("{base}/local/dead-letters"),
            Some(&acme),
            None,
        )
        .await;
        let letters = body["deadLetters"].as_array().cloned().unwrap_or_default();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["reason"], "retriesExhausted");
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(letters[0]["lastStatus"], 500);
    assert_eq!(failing.received().len(), 3);
    let (_, others) = call(
        reqwest::Method::GET,
        format!("{base}/local/dead-letters"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(others["deadLetters"], json!([]), "dead letters are per org");

    // Replayed as SQS's DLQ redrive would: the message is tried again, a fresh schedule.
    let (status, replayed) = call(
        reqwest::Method::POST,
        format!("{base}/local/dead-letters/replay"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(
        (status, replayed),
        (202, json!({ "replayed": 0 })),
        "another org's stay"
    );
    let (status, replayed) = call(
        reqwest::Method::POST,
        format!("{base}/local/dead-letters/replay"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!((status, replayed), (202, json!({ "replayed": 1 })));
    eventually("the replayed attempt", async || {
        (failing.received().len() > 3).then_some(())
    })
    .await;
    let replayed_id = &failing.received()[3].headers["webhook-id"];
    assert_eq!(replayed_id, &failing.received()[0].headers["webhook-id"]);

    let log = runner.stop().await;
    assert!(
        log.contains("on attempt 1: HTTP 200"),
        "a readable delivery line:\n{log}"
    );
    assert!(
        log.contains("next attempt in"),
        "a readable retry line:\n{log}"
    );
    assert!(
        log.contains("dead-lettered"),
        "a readable dead-letter line:\n{log}"
    );
    assert!(log.contains("webhooks-local stopped"), "{log}");
    assert!(
        log.contains("private/loopback targets ALLOWED"),
        "the banner says targets are relaxed"
    );
    assert!(
        !log.contains(&secret) && !log.contains(&secret["whsec_".len()..]),
        "a secret reached the log"
    );
}

#[tokio::test]
async fn strict_mode_applies_the_production_url_rules() {
    let runner = Runner::start(&["--strict"]).await;
    let acme = token("acme").await;
    for url in [
        "http://127.0.0.1:9000/hook",
        "https://127.0.0.1:9000/hook",
        "http://hooks.example.com/",
    ] {
        let (status, body) = call(
            reqwest::Method::POST,
            format!("{}/webhooks", runner.base),
            Some(&acme),
            Some(json!({"url": url, "events": ["booking.created"]})),
        )
        .await;
        assert_eq!(
            (status, body["errors"][0]["field"].as_str()),
            (400, Some("url")),
            "{url}"
        );
    }
    runner.stop().await;
}

#[tokio::test]
async fn with_aws_the_local_runner_uses_dynamodb_kms_and_sqs() {
    use common::testing::{aws_endpoint, create_key, create_queues, create_table, sdk_config};
    let sdk = sdk_config().await;
    let table = create_table(&sdk).await;
    let queues = create_queues(&sdk, 3).await;
    let env = [
        ("AWS_ENDPOINT_URL", aws_endpoint()),
        ("TABLE_NAME", table.clone()),
        ("KMS_KEY_ID", create_key(&sdk).await),
        ("DELIVERY_QUEUE_URL", queues.url),
        ("DEAD_LETTER_QUEUE_URL", queues.dead_letter_url),
        // With --aws the production URL rules apply unless relaxed explicitly; the receiver
        // here is on loopback.
        ("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "1".to_owned()),
        ("WEBHOOKS_ALLOW_INSECURE_URLS", "1".to_owned()),
    ];
    let runner = Runner::start_with(&["--aws"], &env).await;
    let acme = token("acme").await;
    let receiver = Sink::always(200).await;
    let (status, created) = call(
        reqwest::Method::POST,
        format!("{}/webhooks", runner.base),
        Some(&acme),
        Some(json!({"url": receiver.url(), "events": ["booking.created"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["endpoint"]["secret"].as_str().unwrap().to_owned();
    let id = created["endpoint"]["id"].as_str().unwrap();

    // The endpoint is in the DynamoDB table, not in memory.
    let store = common::adapters::aws::DynamoStore::from_sdk_config(&sdk, &table);
    let org = common::domain::OrgId::parse("acme").unwrap();
    let stored = common::ports::EndpointStore::get_endpoint(
        &store,
        &org,
        &common::domain::id::EndpointId::parse(id).unwrap(),
    )
    .await
    .unwrap();
    assert!(stored.is_some());

    let (status, _) = call(
        reqwest::Method::POST,
        format!("{}/bookings", runner.base),
        Some(&acme),
        Some(booking()),
    )
    .await;
    assert_eq!(status, 201);
    let delivered = eventually("the delivery through SQS", async || {
        receiver.received().first().cloned()
    })
    .await;
    assert!(verify_with_standardwebhooks(&secret, &delivered));
    let (status, _) = call(
        reqwest::Method::GET,
        format!("{}/local/dead-letters", runner.base),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(
        status, 404,
        "dead letters live in the SQS dead-letter queue"
    );
    let log = runner.stop().await;
    assert!(log.contains("adapters:        aws"), "{log}");
}

#[tokio::test]
async fn the_demo_receiver_refuses_what_does_not_verify() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut child = Command::new(BINARY)
        .args(["receive", "--port", "0", "--secret", secret])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap()
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let key = common::domain::secret::WebhookSecret::parse(secret).unwrap();
    let body = r#"{"type":"booking.created"}"#;
    let post = |timestamp: i64, signature: String| {
        let url = url.clone();
        async move {
            http_client()
                .post(url)
                .header("webhook-id", "msg_1")
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let now = common::time::unix_seconds_now();
    let sign = |ts| common::domain::signature::sign(&key, "msg_1", ts, body).unwrap();
    assert_eq!(post(now, sign(now)).await, 204, "a valid delivery");
    assert_eq!(post(now, format!("v1,{}", "A".repeat(44))).await, 401);
    let old = now - 600;
    assert_eq!(
        post(old, sign(old)).await,
        401,
        "outside the 5 min tolerance"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_router_answers_like_api_gateway_would() {
    let runner = Runner::start(&[]).await;
    let token = token("org_router").await;
    let client = http_client();
    let send = |method: reqwest::Method, path: &str, auth: String| {
        client
            .request(method, format!("{}{path}", runner.base))
            .header("authorization", auth)
            .send()
    };
    // A 405 says which methods the resource has (RFC 9110 section 15.5.6).
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/webhooks", "GET, POST"),
        (
            reqwest::Method::POST,
            "/webhooks/ep_x",
            "GET, PATCH, DELETE",
        ),
        (reqwest::Method::GET, "/bookings", "POST"),
        (reqwest::Method::DELETE, "/local/dead-letters", "GET"),
    ] {
        let response = send(method.clone(), path, format!("Bearer {token}"))
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
    }
    // Paths are taken as sent: extra slashes name no route.
    for path in ["/webhooks/", "//webhooks", "/webhooks//"] {
        let response = send(reqwest::Method::POST, path, format!("Bearer {token}"))
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    // The auth scheme's name is case-insensitive.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = send(
            reqwest::Method::GET,
            "/webhooks",
            format!("{scheme} {token}"),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    runner.stop().await;
}

#[tokio::test]
async fn every_401_names_its_cause_and_carries_a_bearer_challenge() {
    let runner = Runner::start(&[]).await;
    let url = format!("{}/webhooks", runner.base);
    let issue = |claim: &str, org: &str, ttl: i64| {
        common::local::jwt::issue(JWT_SECRET.as_bytes(), claim, org, ttl).unwrap()
    };
    let other_secret =
        common::local::jwt::issue(b"another-secret", "org_id", "org_401", 600).unwrap();
    let cases: Vec<(Option<String>, &str, &str)> = vec![
        (None, "No Authorization header", ""),
        (
            Some("Basic dXNlcjpwdw==".into()),
            "not a bearer token",
            "invalid_token",
        ),
        (
            Some("Bearer ".into()),
            "The bearer token is empty",
            "invalid_token",
        ),
        (
            Some(format!("Bearer {other_secret}")),
            "signed with another secret",
            "invalid_token",
        ),
        (
            Some(format!("Bearer {}", issue("org_id", "org_401", -10))),
            "The token expired at 20",
            "invalid_token",
        ),
        (
            Some(format!("Bearer {}", issue("tenant", "org_401", 600))),
            "no `org_id` claim",
            "invalid_token",
        ),
        (
            Some(format!("Bearer {}", issue("org_id", "a#b", 600))),
            "not a valid organization id",
            "invalid_token",
        ),
    ];
    for (authorization, cause, error) in cases {
        let mut request = http_client().get(&url);
        if let Some(value) = &authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer realm=\"webhooks\""),
            "{challenge}"
        );
        if error.is_empty() {
            assert!(
                !challenge.contains("error="),
                "no error code without a token: {challenge}"
            );
        } else {
            assert!(
                challenge.contains(&format!("error=\"{error}\"")),
                "{challenge}"
            );
            assert!(challenge.contains("error_description="), "{challenge}");
        }
        let text = response.text().await.unwrap();
        // Nothing of the token comes back, in the challenge or the body.
        if let Some(token) = authorization.as_deref().and_then(|a| a.split(' ').nth(1)) {
            if !token.is_empty() {
                assert!(
                    !challenge.contains(token) && !text.contains(token),
                    "{text}"
                );
            }
        }
        let body: Value = serde_json::from_str(&text).unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(cause), "{authorization:?}: {message}");
        if authorization.is_some() && !cause.contains("org") {
            assert!(message.contains("webhooks-local token --org"), "{message}");
        }
    }
    // An unknown route is a 404 whatever the token, as on API Gateway.
    let response = http_client()
        .get(format!("{}/nothing-here", runner.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    runner.stop().await;
}

#[tokio::test]
async fn a_busy_port_names_itself_and_how_to_choose_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    for args in [vec!["--port", &port], vec!["receive", "--port", &port]] {
        let output = Command::new(BINARY)
            .args(&args)
            .env("WEBHOOKS_LOCAL_JWT_SECRET", JWT_SECRET)
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("port {port}")) && stderr.contains("--port"),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn every_command_has_help_and_a_version() {
    for command in [
        None,
        Some("serve"),
        Some("token"),
        Some("receive"),
        Some("trigger"),
        Some("listen"),
    ] {
        let mut args: Vec<&str> = command.into_iter().collect();
        args.push("--help");
        let output = Command::new(BINARY).args(&args).output().await.unwrap();
        assert!(output.status.success(), "{args:?}");
        let usage = format!(
            "Usage: webhooks-local{}",
            command.map(|c| format!(" {c}")).unwrap_or_default()
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains(&usage),
            "{args:?}"
        );
    }
    let output = Command::new(BINARY)
        .arg("--version")
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("webhooks-local {}", env!("CARGO_PKG_VERSION"))
    );
    let output = Command::new(BINARY)
        .args(["receive", "--status", "999"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn listen_forwards_verified_deliveries_that_trigger_sets_off() {
    let runner = Runner::start(&[]).await;
    let app = Sink::always(200).await;
    let mut listen = Command::new(BINARY)
        .args(["listen", "--api", &runner.base, "--org", "org_listen"])
        .args(["--forward-to", &app.url()])
        .env("WEBHOOKS_LOCAL_JWT_SECRET", JWT_SECRET)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(listen.stdout.take().unwrap()).lines();
    let output = Arc::new(Mutex::new(Vec::new()));
    let reader = tokio::spawn({
        let output = output.clone();
        async move {
            while let Ok(Some(line)) = lines.next_line().await {
                output.lock().unwrap().push(line);
            }
        }
    });
    let secret = eventually("listen's secret", async || {
        output.lock().unwrap().iter().find_map(|line| {
            line.strip_prefix("Its signing secret (shown this once): ")
                .map(str::to_owned)
        })
    })
    .await;

    let trigger = Command::new(BINARY)
        .args(["trigger", "--api", &runner.base, "--org", "org_listen"])
        .env("WEBHOOKS_LOCAL_JWT_SECRET", JWT_SECRET)
        .output()
        .await
        .unwrap();
    assert!(trigger.status.success(), "{trigger:?}");
    let received = eventually("the forwarded delivery", async || app.received().pop()).await;
    assert!(verify_with_standardwebhooks(&secret, &received));
    assert_eq!(
        serde_json::from_str::<Value>(&received.body).unwrap()["type"],
        "booking.created"
    );

    // Ctrl-C removes the endpoint it registered.
    let pid = listen.id().unwrap().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), listen.wait())
        .await
        .unwrap()
        .unwrap();
    reader.await.unwrap();
    assert!(output
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("removed endpoint ep_")));
    let (status, body) = call(
        reqwest::Method::GET,
        format!("{}/webhooks", runner.base),
        Some(&token("org_listen").await),
        None,
    )
    .await;
    assert_eq!(
        (status, body["endpoints"].as_array().unwrap().len()),
        (200, 0)
    );
    runner.stop().await;
}
