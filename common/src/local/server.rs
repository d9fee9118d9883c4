//! The local HTTP front door: verifies the bearer token like API Gateway's JWT authorizer, builds
//! the same request context, and calls the Lambda handlers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
use lambda_http::http::header::ALLOW;
use lambda_http::http::{HeaderValue, Method, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt, Response};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{jwt, JWT_SECRET_VAR};
use crate::adapters::embedded::LocalQueue;
use crate::api::{self, error_response, json_response, org_from_claims, MAX_BODY_BYTES};
use crate::config::ApiConfig;
use crate::domain::delivery::DeadLetter;
use crate::domain::event::DeliveryMessage;
use crate::error::ApiError;
use crate::ports::{
    BookingStore, DeliveryLog, DeliveryQueue, EndpointStore, EventOutbox, IdempotencyStore,
    SecretCipher,
};
use crate::time::format_rfc3339;
use time::OffsetDateTime;

/// The API over any set of adapters: embedded, or (with `--aws`) the real services.
pub struct LocalApi<S, C, Q> {
    store: S,
    cipher: C,
    queue: Arc<Q>,
    config: ApiConfig,
    jwt_secret: Vec<u8>,
    /// The embedded queue's dead-letter list, shown at `GET /local/dead-letters`.
    dead_letters: Option<Arc<LocalQueue>>,
}

impl<S, C, Q> LocalApi<S, C, Q>
where
    S: EndpointStore + BookingStore + EventOutbox + DeliveryLog + IdempotencyStore,
    C: SecretCipher,
    Q: DeliveryQueue,
{
    pub fn new(
        store: S,
        cipher: C,
        queue: Arc<Q>,
        config: ApiConfig,
        jwt_secret: Vec<u8>,
        dead_letters: Option<Arc<LocalQueue>>,
    ) -> Self {
        Self {
            store,
            cipher,
            queue,
            config,
            jwt_secret,
            dead_letters,
        }
    }

    /// Where the API's (and, sharing it, the worker's) metrics go.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.config.metrics
    }

    /// Routes one request to its handler.
    pub async fn handle(&self, request: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let response = match self.to_lambda_request(request).await {
            // Like API Gateway: an unknown route is a 404 whatever the token; a known one is
            // refused by the authorizer before any handler runs.
            Ok((_, Err(refused))) if is_route(&method, &path) => error_response(&refused),
            Ok((lambda_request, _)) => self.route(&method, &path, lambda_request).await,
            Err(error) => error_response(&error),
        };
        tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
        into_hyper(response)
    }

    async fn route(
        &self,
        method: &Method,
        path: &str,
        request: lambda_http::Request,
    ) -> Response<Body> {
        // The path as sent: `/webhooks/` or `//webhooks` name no route, as on API Gateway.
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        let (store, cipher, config) = (&self.store, &self.cipher, &self.config);
        match (method, segments.as_slice()) {
            (&Method::POST, ["webhooks"]) => {
                api::create_webhook(store, cipher, config, request).await
            }
            (&Method::GET, ["webhooks"]) => api::list_webhooks(store, config, request).await,
            (&Method::GET, ["webhooks", id]) if !id.is_empty() => {
                api::get_webhook(store, config, with_id(request, id)).await
            }
            (&Method::PATCH, ["webhooks", id]) if !id.is_empty() => {
                api::update_webhook(store, config, with_id(request, id)).await
            }
            (&Method::DELETE, ["webhooks", id]) if !id.is_empty() => {
                api::delete_webhook(store, config, with_id(request, id)).await
            }
            (&Method::POST, ["webhooks", id, "secret", "rotate"]) if !id.is_empty() => {
                api::rotate_webhook_secret(store, cipher, config, with_id(request, id)).await
            }
            (&Method::POST, ["bookings"]) => {
                api::create_booking(store, self.queue.as_ref(), config, request).await
            }
            (&Method::GET, ["bookings", id]) if !id.is_empty() => {
                api::get_booking(store, config, with_id(request, id)).await
            }
            (&Method::PATCH, ["bookings", id]) if !id.is_empty() => {
                api::update_booking(store, self.queue.as_ref(), config, with_id(request, id)).await
            }
            (&Method::POST, ["bookings", id, "cancel"]) if !id.is_empty() => {
                api::cancel_booking(store, self.queue.as_ref(), config, with_id(request, id)).await
            }
            (&Method::GET, ["webhooks", id, "messages"]) if !id.is_empty() => {
                api::list_messages(store, config, with_id(request, id)).await
            }
            (&Method::GET, ["webhooks", id, "messages", msg_id]) if !id.is_empty() => {
                let request = with_params(request, &[("id", id), ("msgId", msg_id)]);
                api::get_message(store, config, request).await
            }
            (&Method::POST, ["webhooks", id, "messages", msg_id, "resend"]) if !id.is_empty() => {
                let request = with_params(request, &[("id", id), ("msgId", msg_id)]);
                api::resend_message(store, self.queue.as_ref(), config, request).await
            }
            (&Method::GET, ["webhooks", id, "attempts"]) if !id.is_empty() => {
                api::list_attempts(store, config, with_id(request, id)).await
            }
            (&Method::POST, ["webhooks", id, "recover"]) if !id.is_empty() => {
                api::recover_messages(store, self.queue.as_ref(), config, with_id(request, id))
                    .await
            }
            (&Method::POST, ["webhooks", id, "test"]) if !id.is_empty() => {
                api::send_test_event(store, self.queue.as_ref(), config, with_id(request, id)).await
            }
            (&Method::GET, ["event-types"]) => api::list_event_types(config, request).await,
            (&Method::GET, ["local", "dead-letters"]) => self.dead_letters(&request),
            (&Method::GET, ["local", "metrics"]) => self.metrics_totals(&request),
            (&Method::POST, ["local", "dead-letters", "replay"]) => {
                self.replay_dead_letters(&request)
            }
            (_, path) => match allowed_methods(path) {
                // RFC 9110 section 15.5.6: a 405 lists the methods the resource has.
                Some(allowed) => {
                    let mut response = error_response(&ApiError::MethodNotAllowed);
                    response
                        .headers_mut()
                        .insert(ALLOW, HeaderValue::from_static(allowed));
                    response
                }
                None => error_response(&ApiError::NotFound),
            },
        }
    }

    /// `GET /local/metrics`: what the functions report as EMF in AWS, as running totals since
    /// the runner started (counts by metric, and by outcome for `Attempts`; count, p50, p99
    /// and max of each latency).
    fn metrics_totals(&self, request: &lambda_http::Request) -> Response<Body> {
        match org_from_claims(request, &self.config.org_id_claim) {
            Ok(_) => json_response(StatusCode::OK, &self.config.metrics.totals()),
            Err(error) => error_response(&error),
        }
    }

    /// The caller's org's dead letters (local runner only; on AWS they sit in the DLQ).
    fn dead_letters(&self, request: &lambda_http::Request) -> Response<Body> {
        let org = match org_from_claims(request, &self.config.org_id_claim) {
            Ok(org) => org,
            Err(error) => return error_response(&error),
        };
        let Some(queue) = &self.dead_letters else {
            // With --aws the dead letters are in the SQS dead-letter queue.
            return error_response(&ApiError::NotFound);
        };
        // Shown as the DLQ holds them: the message to replay, and why it stopped (no reason
        // when the queue redrove it after too many receives).
        let letters: Vec<serde_json::Value> = queue
            .dead_letters()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|letter| {
                let message = serde_json::from_str::<DeliveryMessage>(&letter.body).ok()?;
                if message.org_id != org.as_str() {
                    return None;
                }
                let attribute = |name: &str| letter.attributes.get(name).cloned();
                let number = |name: &str| attribute(name).and_then(|v| v.parse::<u64>().ok());
                Some(json!({
                    "reason": attribute(DeadLetter::REASON),
                    "attempts": number(DeadLetter::ATTEMPTS),
                    "lastStatus": number(DeadLetter::LAST_STATUS),
                    "lastError": attribute(DeadLetter::LAST_ERROR),
                    "deadLetteredAt": attribute(DeadLetter::DEAD_LETTERED_AT),
                    "message": message,
                }))
            })
            .collect();
        json_response(StatusCode::OK, &json!({ "deadLetters": letters }))
    }

    /// Sends the caller's org's dead letters back to the delivery queue, as SQS's DLQ redrive
    /// does (local runner only): each starts a fresh schedule under its own `webhook-id`.
    fn replay_dead_letters(&self, request: &lambda_http::Request) -> Response<Body> {
        let org = match org_from_claims(request, &self.config.org_id_claim) {
            Ok(org) => org,
            Err(error) => return error_response(&error),
        };
        let Some(queue) = &self.dead_letters else {
            return error_response(&ApiError::NotFound);
        };
        let replayed = queue.replay_dead_letters(|body| {
            serde_json::from_str::<DeliveryMessage>(body).is_ok_and(|m| m.org_id == org.as_str())
        });
        match replayed {
            Ok(count) => json_response(StatusCode::ACCEPTED, &json!({ "replayed": count })),
            Err(error) => {
                tracing::error!(%error, "could not replay dead letters");
                error_response(&ApiError::Unavailable)
            }
        }
    }

    /// The bearer token's claims, or why the token is refused, in words that say what to do.
    fn bearer_claims(
        &self,
        header: Option<&hyper::header::HeaderValue>,
    ) -> Result<HashMap<String, String>, ApiError> {
        let fix = format!("mint a token with `webhooks-local token --org ORG` under the {JWT_SECRET_VAR} this runner uses");
        let Some(value) = header else {
            return Err(ApiError::MissingToken(format!(
                "No Authorization header: send `Authorization: Bearer <token>`; {fix}"
            )));
        };
        let value = value.to_str().unwrap_or_default();
        // The scheme name is case-insensitive (RFC 9110 section 11.1). Nothing of the header
        // is echoed: without a scheme, it may be the token itself.
        // A bare `Bearer` (HTTP trims the trailing space) is a scheme with an empty token.
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::InvalidToken(format!(
                "The Authorization header is not a bearer token: expected `Bearer <token>`; {fix}"
            )));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(ApiError::InvalidToken(format!(
                "The bearer token is empty; {fix}"
            )));
        }
        jwt::verify(&self.jwt_secret, token).map_err(|error| {
            tracing::info!(%error, "bearer token refused");
            let cause = match error {
                jwt::TokenError::Expired(at) => format!(
                    "The token expired at {}",
                    OffsetDateTime::from_unix_timestamp(at)
                        .map(format_rfc3339)
                        .unwrap_or_else(|_| at.to_string())
                ),
                jwt::TokenError::BadSignature => format!(
                    "The token's signature does not verify: it was signed with another secret than this runner's {JWT_SECRET_VAR}"
                ),
                other => {
                    let text = other.to_string();
                    let mut chars = text.chars();
                    chars
                        .next()
                        .map(|first| first.to_uppercase().chain(chars).collect())
                        .unwrap_or_default()
                }
            };
            ApiError::InvalidToken(format!("{cause}; {fix}"))
        })
    }

    /// The request as a Lambda handler sees it behind API Gateway: the same request context,
    /// with JWT claims only when the bearer token verifies, and otherwise why it does not.
    async fn to_lambda_request(
        &self,
        request: hyper::Request<Incoming>,
    ) -> Result<(lambda_http::Request, Result<(), ApiError>), ApiError> {
        let (parts, body) = request.into_parts();
        let bytes = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|error| {
                if error
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::invalid("body", "could not be read")
                }
            })?
            .to_bytes();
        let (claims, refused) =
            match self.bearer_claims(parts.headers.get(hyper::header::AUTHORIZATION)) {
                Ok(claims) => (Some(claims), Ok(())),
                Err(refused) => (None, Err(refused)),
            };
        let query: HashMap<String, Vec<String>> = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes()).fold(HashMap::new(), |mut map, (k, v)| {
                    map.entry(k.into_owned())
                        .or_insert_with(Vec::new)
                        .push(v.into_owned());
                    map
                })
            })
            .unwrap_or_default();
        let context = request_context(&parts.method, parts.uri.path(), claims)?;
        let body = if bytes.is_empty() {
            Body::Empty
        } else {
            match String::from_utf8(bytes.to_vec()) {
                Ok(text) => Body::Text(text),
                Err(_) => Body::Binary(bytes.to_vec()),
            }
        };
        let request = lambda_http::Request::from_parts(parts, body)
            .with_query_string_parameters(query)
            .with_request_context(context);
        Ok((request, refused))
    }
}

fn with_id(request: lambda_http::Request, id: &str) -> lambda_http::Request {
    with_params(request, &[("id", id)])
}

fn with_params(request: lambda_http::Request, params: &[(&str, &str)]) -> lambda_http::Request {
    request.with_path_parameters(
        params
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect::<HashMap<_, _>>(),
    )
}

fn request_context(
    method: &Method,
    path: &str,
    claims: Option<HashMap<String, String>>,
) -> Result<RequestContext, ApiError> {
    let mut context = json!({
        "accountId": "local",
        "apiId": "local",
        "stage": "$default",
        "requestId": "local",
        "domainName": "127.0.0.1",
        "timeEpoch": crate::time::unix_seconds_now() * 1000,
        "http": {
            "method": method.as_str(),
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": "",
        },
    });
    if let Some(claims) = claims {
        context["authorizer"] = json!({ "jwt": { "claims": claims, "scopes": null } });
    }
    let context: ApiGatewayV2httpRequestContext =
        serde_json::from_value(context).map_err(|error| {
            tracing::error!(%error, "could not build the request context");
            ApiError::Internal
        })?;
    Ok(RequestContext::ApiGatewayV2(context))
}

fn into_hyper(response: Response<Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}

/// Serves until `stopped` turns true.
pub async fn run<S, C, Q>(
    listener: TcpListener,
    api: Arc<LocalApi<S, C, Q>>,
    mut stopped: watch::Receiver<bool>,
) where
    S: EndpointStore + BookingStore + EventOutbox + DeliveryLog + IdempotencyStore + 'static,
    C: SecretCipher + 'static,
    Q: DeliveryQueue + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(request).await) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "connection closed with an error");
            }
        });
    }
}

/// Whether a method and path name a route (the API's, or the local runner's own).
fn is_route(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    allowed_methods(&segments)
        .is_some_and(|allowed| allowed.split(", ").any(|m| m == method.as_str()))
}

/// The methods a known path answers (its `Allow` header); `None` for a path with no route.
fn allowed_methods(segments: &[&str]) -> Option<&'static str> {
    match segments {
        ["webhooks"] => Some("GET, POST"),
        ["webhooks", id] if !id.is_empty() => Some("GET, PATCH, DELETE"),
        ["webhooks", id, "messages" | "attempts"] if !id.is_empty() => Some("GET"),
        ["webhooks", id, "messages", message] if !id.is_empty() && !message.is_empty() => {
            Some("GET")
        }
        ["webhooks", id, "messages", message, "resend"]
            if !id.is_empty() && !message.is_empty() =>
        {
            Some("POST")
        }
        ["webhooks", id, "recover" | "test"] if !id.is_empty() => Some("POST"),
        ["webhooks", id, "secret", "rotate"] if !id.is_empty() => Some("POST"),
        ["event-types"] => Some("GET"),
        ["bookings"] => Some("POST"),
        ["bookings", id] if !id.is_empty() => Some("GET, PATCH"),
        ["bookings", id, "cancel"] if !id.is_empty() => Some("POST"),
        ["local", "dead-letters"] => Some("GET"),
        ["local", "metrics"] => Some("GET"),
        ["local", "dead-letters", "replay"] => Some("POST"),
        _ => None,
    }
}
