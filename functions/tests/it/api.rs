//! The management API handlers against DynamoDB and KMS in moto, as API Gateway invokes them.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::AttributeValue;
use common::adapters::aws::{DynamoStore, KmsCipher};
use common::api;
use common::config::ApiConfig;
use common::domain::id::EndpointId;
use common::domain::target::TargetPolicy;
use common::error::CipherError;
use common::ports::{SecretCipher, SecretContext};
use common::testing::{api_config, create_key, create_table, read_response, sdk_config, ApiEvent};
use serde_json::{json, Value};

use crate::contract_store::org;

pub struct Api {
    pub store: DynamoStore,
    pub cipher: KmsCipher,
    pub config: ApiConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub table: String,
}

impl Api {
    pub async fn new() -> Self {
        let sdk = sdk_config().await;
        let table = create_table(&sdk).await;
        Self {
            store: DynamoStore::from_sdk_config(&sdk, &table),
            cipher: KmsCipher::from_sdk_config(&sdk, create_key(&sdk).await),
            config: api_config(TargetPolicy::STRICT),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            table,
        }
    }

    pub async fn create(&self, org: &str, body: Value) -> (u16, Value) {
        let request = ApiEvent::new("POST", "/webhooks", "/webhooks")
            .org(org)
            .json(&body)
            .request();
        read_response(api::create_webhook(&self.store, &self.cipher, &self.config, request).await)
    }

    pub async fn create_ok(&self, org: &str) -> Value {
        let (status, body) = self
            .create(
                org,
                json!({"url": "https://hooks.example.com/in", "events": ["booking.created"]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["endpoint"].clone()
    }

    pub async fn list(&self, org: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let request = ApiEvent::new("GET", "/webhooks", "/webhooks")
            .org(org)
            .query(query)
            .request();
        read_response(api::list_webhooks(&self.store, &self.config, request).await)
    }

    pub async fn get(&self, org: &str, id: &str) -> (u16, Value) {
        let request = ApiEvent::new("GET", "/webhooks/{id}", &format!("/webhooks/{id}"))
            .org(org)
            .id(id)
            .request();
        read_response(api::get_webhook(&self.store, &self.config, request).await)
    }

    pub async fn patch(&self, org: &str, id: &str, body: &str) -> (u16, Value) {
        let request = ApiEvent::new("PATCH", "/webhooks/{id}", &format!("/webhooks/{id}"))
            .org(org)
            .id(id)
            .body(body)
            .request();
        read_response(api::update_webhook(&self.store, &self.config, request).await)
    }

    pub async fn delete(&self, org: &str, id: &str) -> (u16, Value) {
        let request = ApiEvent::new("DELETE", "/webhooks/{id}", &format!("/webhooks/{id}"))
            .org(org)
            .id(id)
            .request();
        read_response(api::delete_webhook(&self.store, &self.config, request).await)
    }
}

#[tokio::test]
async fn every_route_refuses_another_orgs_endpoint_with_404() {
    let api = Api::new().await;
    let theirs = api.create_ok("org_victim").await;
    let id = theirs["id"].as_str().unwrap();

    let (status, body) = api.get("org_attacker", id).await;
    assert_eq!((status, body["message"].as_str()), (404, Some("Not found")));
    let (status, _) = api
        .patch(
            "org_attacker",
            id,
            r#"{"url":"https://evil.example.com/","disabled":true}"#,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = api.delete("org_attacker", id).await;
    assert_eq!(status, 404);
    let (status, list) = api.list("org_attacker", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(list["endpoints"], json!([]));

    // A missing endpoint answers exactly the same, so existence never leaks.
    let missing = EndpointId::generate().unwrap();
    assert_eq!(
        api.get("org_attacker", missing.as_str()).await,
        api.get("org_attacker", id).await
    );

    let (status, body) = api.get("org_victim", id).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["endpoint"],
        theirs
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.remove("secret");
                Value::Object(o)
            })
            .unwrap(),
        "untouched by the other org"
    );
}

#[tokio::test]
async fn the_secret_appears_only_in_the_creation_response() {
    let api = Api::new().await;
    let created = api.create_ok("org_secret").await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("ep_"));

    let responses = [
        api.get("org_secret", id).await,
        api.list("org_secret", &[]).await,
        api.patch("org_secret", id, r#"{"description":"renamed"}"#)
            .await,
    ];
    for (status, body) in &responses {
        assert_eq!(*status, 200);
        let text = body.to_string();
        assert!(
            !text.contains(&secret) && !text.contains("\"secret\""),
            "{text}"
        );
    }

    // The row holds only ciphertext, which decrypts under this endpoint's context alone.
    let item = api
        .dynamodb
        .get_item()
        .table_name(&api.table)
        .key("PK", AttributeValue::S("ORG#org_secret".into()))
        .key("SK", AttributeValue::S(format!("EP#{id}")))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(
        !format!("{item:?}").contains(&secret[6..]),
        "plaintext stored"
    );
    let ciphertext = item["secret"].as_b().unwrap().as_ref().to_vec();
    let (org_id, endpoint_id) = (org("org_secret"), EndpointId::parse(id).unwrap());
    let context = SecretContext {
        org_id: &org_id,
        endpoint_id: &endpoint_id,
    };
    assert_eq!(
        api.cipher.decrypt(&ciphertext, context).await.unwrap(),
        secret.as_bytes()
    );
}

#[tokio::test]
async fn a_ciphertext_copied_onto_another_endpoints_row_does_not_decrypt() {
    let api = Api::new().await;
    let first = api.create_ok("org_copy").await;
    let second = api.create_ok("org_copy").await;
    let key = |id: &str| {
        [
            ("PK".to_owned(), AttributeValue::S("ORG#org_copy".into())),
            ("SK".to_owned(), AttributeValue::S(format!("EP#{id}"))),
        ]
    };
    let stolen = api
        .dynamodb
        .get_item()
        .table_name(&api.table)
        .set_key(Some(key(first["id"].as_str().unwrap()).into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap()
        .remove("secret")
        .unwrap();
    let second_id = second["id"].as_str().unwrap();
    api.dynamodb
        .update_item()
        .table_name(&api.table)
        .set_key(Some(key(second_id).into()))
        .update_expression("SET secret = :s")
        .expression_attribute_values(":s", stolen)
        .send()
        .await
        .unwrap();

    let org_id = org("org_copy");
    let endpoint = common::ports::EndpointStore::get_endpoint(
        &api.store,
        &org_id,
        &EndpointId::parse(second_id).unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    let context = SecretContext {
        org_id: &org_id,
        endpoint_id: &endpoint.id,
    };
    let result = api
        .cipher
        .decrypt(&endpoint.secret_ciphertext, context)
        .await;
    assert!(
        matches!(result, Err(CipherError::Undecryptable)),
        "{result:?}"
    );
}

#[tokio::test]
async fn pagination_over_25_endpoints_returns_each_exactly_once() {
    let api = Api::new().await;
    let mut created = HashSet::new();
    for _ in 0..25 {
        created.insert(
            api.create_ok("org_list").await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    api.create_ok("org_list_other").await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = vec![("limit", "10")];
        if let Some(c) = cursor.as_deref() {
            query.push(("cursor", c));
        }
        let (status, body) = api.list("org_list", &query).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        seen.extend(
            body["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(body["nextCursor"].is_null());
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), created);

    let (_, first_page) = api.list("org_list", &[("limit", "10")]).await;
    let cursor = first_page["nextCursor"].as_str().unwrap();
    let (status, body) = api.list("org_list_other", &[("cursor", cursor)]).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("cursor")),
        "another org's cursor"
    );
    let (_, default_page) = api.list("org_list", &[]).await;
    assert_eq!(
        default_page["endpoints"].as_array().unwrap().len(),
        20,
        "default limit"
    );
}

fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn invalid_input_gets_a_4xx_listing_every_error() {
    let api = Api::new().await;
    let long_url = format!("https://hooks.example.com/{}", "a".repeat(2048));
    let long_description = "d".repeat(513);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"url": "/relative", "events": ["booking.created"]}),
            "url",
        ),
        (
            json!({"url": "http://hooks.example.com", "events": ["booking.created"]}),
            "url",
        ),
        (
            json!({"url": "https://user:pw@hooks.example.com", "events": ["booking.created"]}),
            "url",
        ),
        (
            json!({"url": long_url, "events": ["booking.created"]}),
            "url",
        ),
        (
            json!({"url": "https://169.254.169.254/latest/meta-data", "events": ["booking.created"]}),
            "url",
        ),
        (
            json!({"url": "https://127.0.0.1/", "events": ["booking.created"]}),
            "url",
        ),
        (
            json!({"url": "https://0x7f000001/", "events": ["booking.created"]}),
            "url",
        ),
        (
            json!({"url": "https://10.0.0.1/", "events": ["booking.created"]}),
            "url",
        ),
        (
            json!({"url": "https://[::1]/", "events": ["booking.created"]}),
            "url",
        ),
        (
            json!({"url": "https://[fe80::1]/", "events": ["booking.created"]}),
            "url",
        ),
        (
            json!({"url": "https://100.64.0.1/", "events": ["booking.created"]}),
            "url",
        ),
        (
            json!({"url": "https://localhost/", "events": ["booking.created"]}),
            "url",
        ),
        (json!({"url": 7, "events": ["booking.created"]}), "url"),
        (json!({"events": ["booking.created"]}), "url"),
        (
            json!({"url": "https://hooks.example.com", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com", "events": ["booking.deleted"]}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com", "events": ["booking.created", "booking.created"]}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com", "events": "booking.created"}),
            "events",
        ),
        (json!({"url": "https://hooks.example.com"}), "events"),
        (
            json!({"url": "https://hooks.example.com", "events": ["booking.created"], "description": long_description}),
            "description",
        ),
        (
            json!({"url": "https://hooks.example.com", "events": ["booking.created"], "org_id": "org_other"}),
            "org_id",
        ),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (body, field) in cases {
        let (status, answer) = api.create("org_bad", body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(answer["message"], "Invalid input");
        assert_eq!(error_fields(&answer), vec![field.to_owned()], "{body}");
        assert!(answer["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    let both = api
        .create(
            "org_bad",
            json!({"url": "ftp://x", "events": [], "extra": 1}),
        )
        .await;
    assert_eq!(
        error_fields(&both.1),
        vec!["extra", "url", "events"],
        "every error is listed"
    );

    let malformed = ApiEvent::new("POST", "/webhooks", "/webhooks")
        .org("org_bad")
        .body("{\"url\":")
        .request();
    let (status, answer) =
        read_response(api::create_webhook(&api.store, &api.cipher, &api.config, malformed).await);
    assert_eq!(
        (status, error_fields(&answer)),
        (400, vec!["body".to_owned()])
    );

    let huge = ApiEvent::new("POST", "/webhooks", "/webhooks")
        .org("org_bad")
        .body("x".repeat(64 * 1024 + 1))
        .request();
    let (status, answer) =
        read_response(api::create_webhook(&api.store, &api.cipher, &api.config, huge).await);
    assert_eq!(
        (status, answer["message"].as_str()),
        (413, Some("Request body too large"))
    );

    let anonymous = ApiEvent::new("POST", "/webhooks", "/webhooks")
        .json(&json!({}))
        .request();
    let (status, answer) =
        read_response(api::create_webhook(&api.store, &api.cipher, &api.config, anonymous).await);
    assert_eq!(status, 401);
    assert!(answer["message"].is_string());
    let wrong_claim = ApiEvent::new("GET", "/webhooks", "/webhooks")
        .claims(&[("sub", "someone")])
        .request();
    assert_eq!(
        read_response(api::list_webhooks(&api.store, &api.config, wrong_claim).await).0,
        401
    );

    for limit in ["0", "101", "ten", "-1"] {
        let (status, answer) = api.list("org_bad", &[("limit", limit)]).await;
        assert_eq!(
            (status, error_fields(&answer)),
            (400, vec!["limit".to_owned()]),
            "limit={limit}"
        );
    }
    let (status, _) = api.list("org_bad", &[("cursor", "bm90IGEgY3Vyc29y")]).await;
    assert_eq!(status, 400);

    let id = api.create_ok("org_bad").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (body, fields) in [
        ("{}", vec!["body"]),
        (r#"{"disabled":"yes"}"#, vec!["disabled"]),
        (r#"{"events":[]}"#, vec!["events"]),
        (r#"{"url":"https://192.168.1.1/"}"#, vec!["url"]),
        (r#"{"secret":"whsec_x"}"#, vec!["secret", "body"]),
        ("nope", vec!["body"]),
    ] {
        let (status, answer) = api.patch("org_bad", &id, body).await;
        assert_eq!(
            (status, error_fields(&answer)),
            (
                400,
                fields.iter().map(|f| f.to_string()).collect::<Vec<_>>()
            ),
            "{body}"
        );
    }
    let (status, _) = api.get("org_bad", "not-an-id").await;
    assert_eq!(status, 404);

    // Nothing that was stored is lost or changed by the rejected requests.
    let (status, body) = api.get("org_bad", &id).await;
    assert_eq!(status, 200);
    assert_eq!(body["endpoint"]["events"], json!(["booking.created"]));
    assert_eq!(body["endpoint"]["disabled"], json!(false));
}

#[tokio::test]
async fn update_and_delete_change_what_they_say() {
    let api = Api::new().await;
    let id = api.create_ok("org_rw").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await; // so updatedAt can differ
    let (status, body) = api
        .patch("org_rw", &id, r#"{"url":"https://new.example.com/hook","events":["booking.cancelled"],"disabled":true,"description":"paused"}"#)
        .await;
    assert_eq!(status, 200);
    let endpoint = &body["endpoint"];
    assert_eq!(endpoint["url"], "https://new.example.com/hook");
    assert_eq!(endpoint["events"], json!(["booking.cancelled"]));
    assert_eq!(endpoint["disabled"], true);
    assert_eq!(endpoint["description"], "paused");
    assert_ne!(endpoint["updatedAt"], endpoint["createdAt"]);
    assert_eq!(api.get("org_rw", &id).await.1, body);

    let (status, body) = api.delete("org_rw", &id).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(api.get("org_rw", &id).await.0, 404);
    assert_eq!(api.delete("org_rw", &id).await.0, 404);
}

#[tokio::test]
async fn an_org_at_its_endpoint_cap_gets_409_and_a_delete_makes_room() {
    let mut api = Api::new().await;
    api.config.max_endpoints_per_org = 2;
    let first = api.create_ok("org_cap").await;
    api.create_ok("org_cap").await;
    let (status, body) = api
        .create(
            "org_cap",
            json!({"url": "https://hooks.example.com/in", "events": ["booking.created"]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("maximum of 2"),
        "{body}"
    );
    // Another org is not affected.
    api.create_ok("org_cap_other").await;

    let request = ApiEvent::new("DELETE", "/webhooks/{id}", "/webhooks/x")
        .org("org_cap")
        .id(first["id"].as_str().unwrap())
        .request();
    let (status, _) = read_response(api::delete_webhook(&api.store, &api.config, request).await);
    assert_eq!(status, 204);
    api.create_ok("org_cap").await;
}

#[tokio::test]
async fn a_503_says_when_to_retry() {
    // A table that does not exist: the store is unavailable, which is not the client's fault.
    let sdk = sdk_config().await;
    let store = DynamoStore::from_sdk_config(&sdk, "no-such-table");
    let request = ApiEvent::new("GET", "/webhooks", "/webhooks")
        .org("org_503")
        .request();
    let response = api::list_webhooks(&store, &api_config(TargetPolicy::STRICT), request).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers().get("retry-after").unwrap(),
        &api::RETRY_AFTER_SECS.to_string()
    );
    let (_, body) = read_response(response);
    assert_eq!(body["message"], "Service unavailable, try again");
}
