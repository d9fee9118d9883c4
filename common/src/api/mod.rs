//! HTTP handlers, one per route, shared by the Lambda binaries and the local runner. A handler
//! always answers with a status: client mistakes are 4xx JSON, and no error escapes to become
//! API Gateway's own 502.

mod bookings;
mod cursor;
mod deliveries;
mod idempotency;
mod webhooks;

pub use bookings::{cancel_booking, create_booking, get_booking, update_booking};
pub use cursor::Cursor;
pub use deliveries::{
    get_message, list_attempts, list_event_types, list_messages, recover_messages, resend_message,
    send_test_event,
};
pub use webhooks::{
    create_webhook, delete_webhook, get_webhook, list_webhooks, rotate_webhook_secret,
    update_webhook,
};

use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

use crate::domain::id::{BookingId, EndpointId};
use crate::domain::trace::TraceContext;
use crate::domain::OrgId;
use crate::error::ApiError;
use crate::ports::MAX_PAGE_SIZE;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The org from the verified JWT claims of an API Gateway HTTP API request, and nowhere else.
/// API Gateway's authorizer has refused a missing or bad token already; what is left to refuse
/// here is a token without a valid org claim, and the answer names the claim.
pub fn org_from_claims(request: &Request, claim: &str) -> Result<OrgId, ApiError> {
    let claims = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|jwt| &jwt.claims),
        _ => None,
    };
    let Some(claims) = claims else {
        return Err(ApiError::MissingToken(
            "No verified bearer token: send `Authorization: Bearer <token>`".into(),
        ));
    };
    let Some(value) = claims.get(claim) else {
        return Err(ApiError::InvalidToken(format!(
            "The token has no `{claim}` claim naming the organization"
        )));
    };
    OrgId::parse(value).ok_or_else(|| {
        ApiError::InvalidToken(format!(
            "The token's `{claim}` claim is not a valid organization id: {}",
            OrgId::RULE
        ))
    })
}

/// The request body, refused when too large. API Gateway hands binary or base64 bodies over
/// already decoded.
pub fn body_bytes(request: &Request) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = match request.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(bytes)
}

/// Items a list page holds when the request names no `limit`.
pub const DEFAULT_PAGE_SIZE: usize = 20;

/// The `limit` query parameter: 1 to [`MAX_PAGE_SIZE`], [`DEFAULT_PAGE_SIZE`] when absent.
pub fn page_limit(
    query: &lambda_http::aws_lambda_events::query_map::QueryMap,
) -> Result<usize, ApiError> {
    match query.first("limit") {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_PAGE_SIZE}"),
                )
            }),
    }
}

/// The `cursor` query parameter read back into its list's key by `parse` (see [`Cursor`]);
/// `None` for the first page.
pub fn page_after<T>(
    request: &Request,
    org: &OrgId,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    request
        .query_string_parameters()
        .first("cursor")
        .map(|text| Cursor::decode(text, org, parse))
        .transpose()
}

/// The `{id}` path parameter. A malformed id cannot exist, so it is a 404 like any other.
pub fn endpoint_id_from_path(request: &Request) -> Result<EndpointId, ApiError> {
    request
        .path_parameters_ref()
        .and_then(|p| p.first("id"))
        .and_then(EndpointId::parse)
        .ok_or(ApiError::NotFound)
}

/// The W3C trace context an event produced by `request` carries to its deliveries: the
/// request's `traceparent` (and `tracestate`), else one derived from API Gateway's
/// `X-Amzn-Trace-Id`, else a new trace rooted here. An invalid `traceparent` is ignored, as
/// the W3C spec asks, never refused.
pub fn trace_of(request: &Request) -> Option<TraceContext> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    // Several tracestate headers are one list (W3C Trace Context, section 3.3.1.1).
    let tracestate: Vec<&str> = request
        .headers()
        .get_all("tracestate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let tracestate = (!tracestate.is_empty()).then(|| tracestate.join(","));
    header("traceparent")
        .and_then(|traceparent| TraceContext::parse(traceparent, tracestate.as_deref()))
        .or_else(|| header("x-amzn-trace-id").and_then(TraceContext::from_amzn_trace_id))
        .or_else(|| TraceContext::generate().ok())
}

/// The `{id}` path parameter of a booking route; a malformed id is a 404.
pub fn booking_id_from_path(request: &Request) -> Result<BookingId, ApiError> {
    request
        .path_parameters_ref()
        .and_then(|p| p.first("id"))
        .and_then(BookingId::parse)
        .ok_or(ApiError::NotFound)
}

/// A JSON answer whose text is already made.
pub fn json_text_response(status: StatusCode, body: String) -> Response<Body> {
    with_body(status, Body::Text(body))
}

pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"));
    with_body(status, Body::Text(body))
}

pub fn empty_response(status: StatusCode) -> Response<Body> {
    with_body(status, Body::Empty)
}

fn with_body(status: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if !matches!(response.body(), Body::Empty) {
        response.headers_mut().insert(
            CONTENT_TYPE,
            lambda_http::http::HeaderValue::from_static("application/json"),
        );
    }
    response
}

/// Seconds a client is asked to wait before retrying a `503` (`Retry-After`, RFC 9110
/// section 10.2.3): a dependency's throttling or outage is usually over by then.
pub const RETRY_AFTER_SECS: u32 = 1;

/// The `WWW-Authenticate` challenge of a 401 (RFC 6750 section 3): none of the error
/// attributes when no token was sent, `invalid_token` and a description otherwise.
fn bearer_challenge(error: &ApiError) -> Option<String> {
    match error {
        ApiError::MissingToken(_) => Some(r#"Bearer realm="webhooks""#.to_owned()),
        ApiError::InvalidToken(description) => {
            // error_description allows printable ASCII but `"` and `\` (RFC 6750 section 3).
            let description: String = description
                .chars()
                .map(|c| match c {
                    '"' | '\\' => '\'',
                    c if c == ' ' || c.is_ascii_graphic() => c,
                    _ => '?',
                })
                .collect();
            Some(format!(
                r#"Bearer realm="webhooks", error="invalid_token", error_description="{description}""#
            ))
        }
        _ => None,
    }
}

pub fn error_response(error: &ApiError) -> Response<Body> {
    let mut response = json_response(error.status(), &error.body());
    if let Some(challenge) =
        bearer_challenge(error).and_then(|c| lambda_http::http::HeaderValue::from_str(&c).ok())
    {
        response
            .headers_mut()
            .insert(lambda_http::http::header::WWW_AUTHENTICATE, challenge);
    }
    if error.status() == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            lambda_http::http::header::RETRY_AFTER,
            lambda_http::http::HeaderValue::from(RETRY_AFTER_SECS),
        );
    }
    response
}

/// Turns a handler's result into the answer, whatever happened.
pub fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(|error| error_response(&error))
}
