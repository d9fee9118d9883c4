//! `webhooks-local trigger` and `webhooks-local listen`: the two commands that drive a running
//! webhooks-local over its API, like `stripe trigger` and `stripe listen`.

use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::receiver::{parse_secret, serve};
use super::{shutdown_signal, LocalError};
use crate::domain::event::EventType;
use crate::domain::OrgId;

/// Calls a running webhooks-local's API as one org.
pub struct ApiClient {
    base: String,
    token: String,
    org: OrgId,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: String, token: String, org: OrgId) -> Result<Self, LocalError> {
        let setup = |e: &dyn std::fmt::Display| LocalError::Setup(e.to_string());
        let http = crate::tls::reqwest_builder()
            .map_err(|e| setup(&e))?
            .build()
            .map_err(|e| setup(&e))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            org,
            http,
        })
    }

    /// Sends a request; the status and the JSON answer (`null` when there is none).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), LocalError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            LocalError::Setup(format!(
                "could not reach webhooks-local at {}: {e} (is it running? --api sets its address)",
                self.base
            ))
        })?;
        let status = StatusCode::from_u16(response.status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let text = response.text().await.unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

/// What an error answer says, for a person.
fn message(body: &Value) -> String {
    let mut text = body["message"].as_str().unwrap_or("no message").to_owned();
    for error in body["errors"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "\n  {}: {}",
            error["field"].as_str().unwrap_or("?"),
            error["message"].as_str().unwrap_or("?")
        ));
    }
    text
}

/// `webhooks-local trigger`: creates a sample booking, which publishes `booking.created` to the
/// org's subscribed endpoints.
pub async fn trigger(client: &ApiClient) -> Result<(), LocalError> {
    let booking = json!({
        "customerName": "Ada Lovelace",
        "customerEmail": "ada@example.com",
        "startTime": "2030-01-01T10:00:00Z",
        "endTime": "2030-01-01T11:00:00Z",
        "notes": "created by webhooks-local trigger",
    });
    let (status, body) = client
        .call(reqwest::Method::POST, "/bookings", Some(booking))
        .await?;
    if status != StatusCode::CREATED {
        return Err(LocalError::Setup(format!(
            "POST /bookings answered {status}: {}",
            message(&body)
        )));
    }
    println!(
        "created booking {} for org {}: booking.created is on its way to the org's subscribed endpoints",
        body["booking"]["id"].as_str().unwrap_or("?"),
        client.org
    );
    Ok(())
}

/// `webhooks-local listen`: registers an endpoint on this listener for every event type,
/// prints its secret, forwards each verified delivery to `forward_to` (answering with its
/// status), and removes the endpoint on Ctrl-C.
pub async fn listen(
    listener: TcpListener,
    client: &ApiClient,
    forward_to: &str,
) -> Result<(), LocalError> {
    let url = format!("http://{}/", listener.local_addr()?);
    let events: Vec<&str> = EventType::SUBSCRIBABLE.iter().map(|t| t.as_str()).collect();
    let (status, body) = client
        .call(
            reqwest::Method::POST,
            "/webhooks",
            Some(json!({
                "url": url,
                "events": events,
                "description": format!("webhooks-local listen, forwarding to {forward_to}"),
            })),
        )
        .await?;
    if status != StatusCode::CREATED {
        return Err(LocalError::Setup(format!(
            "could not register an endpoint at {url}: POST /webhooks answered {status}: {}{}",
            message(&body),
            if status == StatusCode::BAD_REQUEST {
                "\n(a --strict webhooks-local refuses loopback http endpoints: run it without --strict)"
            } else {
                ""
            }
        )));
    }
    let endpoint = &body["endpoint"];
    let id = endpoint["id"].as_str().unwrap_or_default().to_owned();
    let secret = endpoint["secret"].as_str().unwrap_or_default().to_owned();
    println!(
        "Ready. Endpoint {id} of org {} receives on {url} and forwards to {forward_to}\nIts signing secret (shown this once): {secret}\nCtrl-C removes the endpoint.",
        client.org
    );

    let forwarder = crate::tls::reqwest_builder()
        .map_err(|e| LocalError::Setup(e.to_string()))?
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| LocalError::Setup(e.to_string()))?;
    let forward_to = forward_to.to_owned();
    let forwarding = serve(listener, parse_secret(Some(&secret))?, move |delivery| {
        let (forwarder, forward_to) = (forwarder.clone(), forward_to.clone());
        async move {
            let what = format!(
                "{} {}",
                delivery.header("webhook-id"),
                serde_json::from_slice::<Value>(&delivery.body)
                    .ok()
                    .and_then(|b| b["type"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            );
            if let Some(Err(why)) = &delivery.verified {
                println!("refused {what}: signature INVALID: {why} (answered 401)");
                return StatusCode::UNAUTHORIZED;
            }
            let mut request = forwarder.post(&forward_to).body(delivery.body.clone());
            for (name, value) in &delivery.headers {
                if name.starts_with("webhook-") || name == "content-type" {
                    request = request.header(name, value);
                }
            }
            match request.send().await {
                Ok(response) => {
                    println!("{what} -> {forward_to}: {}", response.status());
                    StatusCode::from_u16(response.status().as_u16())
                        .unwrap_or(StatusCode::BAD_GATEWAY)
                }
                Err(error) => {
                    println!("{what} -> {forward_to}: not delivered: {error} (answered 502)");
                    StatusCode::BAD_GATEWAY
                }
            }
        }
    });
    let result = tokio::select! {
        result = forwarding => result,
        _ = shutdown_signal() => Ok(()),
    };
    let (status, body) = client
        .call(reqwest::Method::DELETE, &format!("/webhooks/{id}"), None)
        .await?;
    if status == StatusCode::NO_CONTENT {
        println!("removed endpoint {id}");
    } else {
        println!(
            "could not remove endpoint {id} ({status}): {}",
            message(&body)
        );
    }
    result
}
