//! The delivery log and recovery: `GET /webhooks/{id}/messages[/{msgId}]`,
//! `GET /webhooks/{id}/attempts`, `POST /webhooks/{id}/messages/{msgId}/resend`,
//! `POST /webhooks/{id}/recover`, `POST /webhooks/{id}/test` and `GET /event-types`.
//!
//! Every route names the endpoint through the caller's org: another org's endpoint or message
//! is a 404, by key, like one that does not exist.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde_json::{json, Value};

use super::idempotency;
use super::{
    body_bytes, endpoint_id_from_path, json_response, org_from_claims, page_after, page_limit,
    respond, trace_of, Cursor,
};
use crate::config::ApiConfig;
use crate::domain::catalogue::catalogue;
use crate::domain::delivery::{
    AttemptRecord, MessageRecord, MessageState, Outcome, RecoverRange, Trigger,
};
use crate::domain::endpoint::Endpoint;
use crate::domain::event::{DeliveryMessage, Event, EventType};
use crate::domain::id::{EventId, MessageId};
use crate::domain::queue_body::QueueBody;
use crate::domain::validation::Fields;
use crate::domain::OrgId;
use crate::error::ApiError;
use crate::ports::{DeliveryLog, DeliveryQueue, EndpointStore, IdempotencyStore};
use crate::recover::{recover, RecoverError, RUN_BUDGET};
use crate::time::{format_rfc3339, millis_from_rfc3339, now_rfc3339, unix_millis_now};

/// A message as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView<'a> {
    /// The `webhook-id`.
    pub id: &'a MessageId,
    pub event_id: Option<&'a EventId>,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub timestamp: &'a str,
    pub state: MessageState,
    pub attempts: u32,
    /// When pending.
    pub next_attempt_at: Option<&'a str>,
    pub last_status: Option<u16>,
    pub last_error: Option<&'a str>,
    /// What the subscriber is sent, `{"type","timestamp","data"}` (one message's view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

fn message_view(record: &MessageRecord) -> MessageView<'_> {
    MessageView {
        id: &record.message_id,
        event_id: record.event_id.as_ref(),
        event_type: &record.event_type,
        timestamp: &record.timestamp,
        state: record.state,
        attempts: record.attempts,
        next_attempt_at: record
            .next_attempt_at
            .as_deref()
            .filter(|_| record.state == MessageState::Pending),
        last_status: record.last_status,
        last_error: record.last_error.as_deref(),
        payload: None,
    }
}

/// A message just queued, before its first attempt (it has no record yet).
fn queued_view(message: &DeliveryMessage, attempts: u32, at: &str) -> Value {
    json!({
        "id": message.id,
        "eventId": message.event_id,
        "type": message.event_type,
        "timestamp": message.timestamp,
        "state": MessageState::Pending,
        "attempts": attempts,
        "nextAttemptAt": at,
        "lastStatus": null,
        "lastError": null,
    })
}

/// An attempt as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptView<'a> {
    message_id: &'a MessageId,
    attempt: u32,
    at: &'a str,
    outcome: Outcome,
    status_code: Option<u16>,
    error_class: Option<&'static str>,
    latency_ms: u64,
    response_body: Option<&'a str>,
    trigger: Trigger,
}

fn attempt_view(record: &AttemptRecord) -> AttemptView<'_> {
    AttemptView {
        message_id: &record.message_id,
        attempt: record.attempt,
        at: &record.at,
        outcome: record.outcome,
        status_code: record.status_code,
        error_class: record.error_class.map(|c| c.as_str()),
        latency_ms: record.latency_ms,
        response_body: record.response_body.as_deref(),
        trigger: record.trigger,
    }
}

/// The caller's org and the endpoint of the path, which must be the org's.
async fn own_endpoint(
    store: &impl EndpointStore,
    config: &ApiConfig,
    request: &Request,
) -> Result<(OrgId, Endpoint), ApiError> {
    let org = org_from_claims(request, &config.org_id_claim)?;
    let id = endpoint_id_from_path(request)?;
    let endpoint = store
        .get_endpoint(&org, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok((org, endpoint))
}

fn message_id_from_path(request: &Request) -> Result<MessageId, ApiError> {
    request
        .path_parameters_ref()
        .and_then(|p| p.first("msgId"))
        .and_then(MessageId::parse)
        .ok_or(ApiError::NotFound)
}

/// A query parameter read by `parse`, a 400 naming `expected` when it does not read.
fn query_param<T>(
    request: &Request,
    name: &str,
    expected: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    let query = request.query_string_parameters();
    query
        .first(name)
        .map(|text| {
            parse(text).ok_or_else(|| ApiError::invalid(name, format!("must be {expected}")))
        })
        .transpose()
}

/// `GET /webhooks/{id}/messages?state=&limit=&cursor=`: newest first.
pub async fn list_messages(
    store: &(impl EndpointStore + DeliveryLog),
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let (org, endpoint) = own_endpoint(store, config, &request).await?;
            let state = query_param(
                &request,
                "state",
                "one of pending, delivered, failed, dead, dropped",
                |text| text.parse::<MessageState>().ok(),
            )?;
            let limit = page_limit(&request.query_string_parameters())?;
            let after = page_after(&request, &org, MessageId::parse)?;
            let page = store
                .list_messages(&org, &endpoint.id, state, limit, after.as_ref())
                .await?;
            let messages: Vec<_> = page.messages.iter().map(message_view).collect();
            let next_cursor = page
                .next_after
                .map(|after| Cursor::encode(&org, after.as_str()));
            Ok(json_response(
                StatusCode::OK,
                &json!({ "messages": messages, "nextCursor": next_cursor }),
            ))
        }
        .await,
    )
}

/// `GET /webhooks/{id}/messages/{msgId}`: the message and the payload its subscriber is sent.
pub async fn get_message(
    store: &(impl EndpointStore + DeliveryLog),
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let (org, endpoint) = own_endpoint(store, config, &request).await?;
            let id = message_id_from_path(&request)?;
            let record = store
                .message_record(&org, &endpoint.id, &id)
                .await?
                .ok_or(ApiError::NotFound)?;
            let payload = record
                .restarted_message()
                .and_then(|message| message.payload().ok())
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .ok_or(ApiError::Internal)?;
            let mut view = message_view(&record);
            view.payload = Some(payload);
            Ok(json_response(StatusCode::OK, &json!({ "message": view })))
        }
        .await,
    )
}

/// An attempt cursor's key: `<message id>#<slot>`, as [`AttemptRecord::sort_key`] writes it.
fn attempt_key(text: &str) -> Option<String> {
    let (message, slot) = text.split_once('#')?;
    let slot_ok = slot.len() <= 14
        && slot
            .strip_prefix('m')
            .unwrap_or(slot)
            .bytes()
            .all(|b| b.is_ascii_digit());
    (MessageId::parse(message).is_some() && slot_ok && !slot.is_empty()).then(|| text.to_owned())
}

/// `GET /webhooks/{id}/attempts?messageId=&outcome=&limit=&cursor=`: newest first.
pub async fn list_attempts(
    store: &(impl EndpointStore + DeliveryLog),
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let (org, endpoint) = own_endpoint(store, config, &request).await?;
            let message = query_param(
                &request,
                "messageId",
                "a message id (msg_...)",
                MessageId::parse,
            )?;
            let outcome = query_param(
                &request,
                "outcome",
                "one of delivered, failed, gone, refused, circuitOpen, dropped",
                |text| text.parse::<Outcome>().ok(),
            )?;
            let limit = page_limit(&request.query_string_parameters())?;
            let after = page_after(&request, &org, attempt_key)?;
            // A cursor is a position in the list it came from: one from another message's list
            // names no position in this one.
            if let (Some(after), Some(message)) = (&after, &message) {
                if !after.starts_with(&format!("{message}#")) {
                    return Err(ApiError::invalid(
                        "cursor",
                        "belongs to another list: pass back the nextCursor of this one",
                    ));
                }
            }
            let page = store
                .list_attempts(
                    &org,
                    &endpoint.id,
                    message.as_ref(),
                    outcome,
                    limit,
                    after.as_deref(),
                )
                .await?;
            let attempts: Vec<_> = page.attempts.iter().map(attempt_view).collect();
            let next_cursor = page.next_after.map(|after| Cursor::encode(&org, &after));
            Ok(json_response(
                StatusCode::OK,
                &json!({ "attempts": attempts, "nextCursor": next_cursor }),
            ))
        }
        .await,
    )
}

async fn enqueue(queue: &impl DeliveryQueue, message: &DeliveryMessage) -> Result<(), ApiError> {
    let body = QueueBody::encode(message).map_err(|_| ApiError::Internal)?;
    match queue.enqueue(&[body]).await {
        Ok(failed) if failed.is_empty() => Ok(()),
        Ok(_) => Err(ApiError::Unavailable),
        Err(error) => {
            tracing::error!(%error, message_id = %message.id, "could not enqueue a message");
            Err(ApiError::Unavailable)
        }
    }
}

/// `POST /webhooks/{id}/messages/{msgId}/resend`: one attempt now, same `webhook-id`, a fresh
/// signature, whatever the message's state; it neither restarts nor advances the schedule.
pub async fn resend_message(
    store: &(impl EndpointStore + DeliveryLog + IdempotencyStore),
    queue: &impl DeliveryQueue,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            idempotency::idempotent(store, &request, &org, async {
                let (org, endpoint) = own_endpoint(store, config, &request).await?;
                let id = message_id_from_path(&request)?;
                let record = store
                    .message_record(&org, &endpoint.id, &id)
                    .await?
                    .ok_or(ApiError::NotFound)?;
                if endpoint.disabled {
                    return Err(ApiError::EndpointDisabled);
                }
                let message = DeliveryMessage {
                    attempt: 0,
                    trigger: Trigger::Manual,
                    ..record.restarted_message().ok_or(ApiError::Internal)?
                };
                enqueue(queue, &message).await?;
                let mut view =
                    serde_json::to_value(message_view(&record)).map_err(|_| ApiError::Internal)?;
                // The resend is queued: the message is on its way again, under its own schedule.
                view["nextAttemptAt"] = json!(now_rfc3339());
                Ok(json_response(
                    StatusCode::ACCEPTED,
                    &json!({ "message": view }),
                ))
            })
            .await
        }
        .await,
    )
}

/// `POST /webhooks/{id}/recover` `{"since", "until"?}`: the endpoint's `failed` and `dead`
/// messages of `[since, until)` go back on the queue for a fresh schedule. Answers how many this
/// request queued, and whether the rest continues in the background.
pub async fn recover_messages(
    store: &(impl EndpointStore + DeliveryLog + IdempotencyStore),
    queue: &impl DeliveryQueue,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            idempotency::idempotent(store, &request, &org, async {
                let (org, endpoint) = own_endpoint(store, config, &request).await?;
                let mut fields = Fields::parse(body_bytes(&request)?, &["since", "until"])?;
                let now = unix_millis_now();
                let retention_millis =
                    u64::try_from(config.retention.as_millis()).unwrap_or(u64::MAX);
                let earliest = now.saturating_sub(retention_millis);
                let time = |fields: &mut Fields, name: &str, required: bool| {
                    let text = fields.string(name, required, 64)?;
                    let millis = millis_from_rfc3339(&text);
                    if millis.is_none() {
                        fields.error(
                            name,
                            "must be an RFC 3339 date-time after 1970, like 2030-05-01T10:00:00Z",
                        );
                    }
                    millis
                };
                let since = time(&mut fields, "since", true);
                let until = time(&mut fields, "until", false);
                if since.is_some_and(|since| since > now) {
                    fields.error("since", "must not be in the future");
                }
                if since.is_some_and(|since| since < earliest) {
                    let days = config.retention.as_secs() / 86_400;
                    let limit = format_rfc3339(
                        time::OffsetDateTime::UNIX_EPOCH
                            + time::Duration::milliseconds(i64::try_from(earliest).unwrap_or(0)),
                    );
                    fields.error(
                        "since",
                        format!("must be within the {days}-day retention (at or after {limit})"),
                    );
                }
                if let (Some(since), Some(until)) = (since, until) {
                    if until <= since {
                        fields.error("until", "must be after since");
                    }
                }
                fields.finish()?;
                let since = since.ok_or(ApiError::Internal)?;
                if endpoint.disabled {
                    return Err(ApiError::EndpointDisabled);
                }
                let range = RecoverRange {
                    org_id: org.as_str().to_owned(),
                    endpoint_id: endpoint.id.clone(),
                    since_millis: since,
                    until_millis: until.unwrap_or(now + 1),
                    after: None,
                };
                let progress = recover(store, queue, range, RUN_BUDGET)
                    .await
                    .map_err(|error| {
                        tracing::error!(%error, endpoint_id = %endpoint.id, "recovery failed");
                        match error {
                            RecoverError::Store(error) => ApiError::from(error),
                            _ => ApiError::Unavailable,
                        }
                    })?;
                Ok(json_response(
                    StatusCode::ACCEPTED,
                    &json!({ "recovered": progress.recovered, "continuing": progress.continued }),
                ))
            })
            .await
        }
        .await,
    )
}

/// Example `data` of a type, for a test message: the shape its catalogue schema gives, with
/// made-up values (operational samples name this endpoint).
fn sample_data(event_type: EventType, endpoint: &Endpoint, at: &str) -> Value {
    let booking = |status: &str, cancelled_at: Value, reason: Value| {
        json!({
            "id": "bk_01JAAAAAAAAAAAAAAAAAAAAAAA",
            "customerName": "Ada Lovelace",
            "customerEmail": "ada@example.com",
            "startTime": "2030-05-01T10:00:00.000Z",
            "endTime": "2030-05-01T11:00:00.000Z",
            "notes": "Window seat",
            "status": status,
            "createdAt": at,
            "updatedAt": at,
            "cancelledAt": cancelled_at,
            "reason": reason,
        })
    };
    match event_type {
        EventType::WebhookTest => json!({ "endpointId": endpoint.id, "sentAt": at }),
        EventType::BookingCreated => {
            json!({ "booking": booking("confirmed", Value::Null, Value::Null) })
        }
        EventType::BookingUpdated => json!({
            "booking": booking("confirmed", Value::Null, Value::Null),
            "changes": ["notes"],
        }),
        EventType::BookingCancelled => json!({
            "booking": booking("cancelled", json!(at), json!("Customer asked to cancel")),
        }),
        EventType::EndpointDisabled => json!({
            "endpointId": endpoint.id, "url": endpoint.url,
            "disabledReason": "failing", "disabledAt": at,
        }),
        EventType::EndpointCircuitOpened => json!({
            "endpointId": endpoint.id, "url": endpoint.url,
            "failureStreak": 5, "openUntil": at,
        }),
        EventType::MessageFailed => json!({
            "endpointId": endpoint.id,
            "messageId": "msg_01JAAAAAAAAAAAAAAAAAAAAAAA",
            "eventId": "evt_01JAAAAAAAAAAAAAAAAAAAAAAA",
            "eventType": "booking.created",
            "attempts": 8,
            "lastStatus": 500,
            "lastError": "HTTP 500",
        }),
    }
}

/// `POST /webhooks/{id}/test` `{"type"?}`: a `webhook.test` event (or a sample of another type
/// of the catalogue) to this endpoint only, whatever its event filter; delivered and recorded
/// like any message.
pub async fn send_test_event(
    store: &(impl EndpointStore + IdempotencyStore),
    queue: &impl DeliveryQueue,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            idempotency::idempotent(store, &request, &org, async {
                let (org, endpoint) = own_endpoint(store, config, &request).await?;
                let bytes = body_bytes(&request)?;
                let event_type = if bytes.iter().all(u8::is_ascii_whitespace) {
                    EventType::WebhookTest
                } else {
                    let mut fields = Fields::parse(bytes, &["type"])?;
                    let name = fields.string("type", false, 64);
                    let event_type = match name {
                        None => Some(EventType::WebhookTest),
                        Some(name) => match name.parse::<EventType>() {
                            Ok(t) => Some(t),
                            Err(_) => {
                                let known: Vec<_> =
                                    EventType::ALL.iter().map(|t| t.as_str()).collect();
                                fields
                                    .error("type", format!("must be one of {}", known.join(", ")));
                                None
                            }
                        },
                    };
                    fields.finish()?;
                    event_type.ok_or(ApiError::Internal)?
                };
                if endpoint.disabled {
                    return Err(ApiError::EndpointDisabled);
                }
                let at = now_rfc3339();
                let event = Event::new(event_type, sample_data(event_type, &endpoint, &at))
                    .map_err(|_| ApiError::Internal)?
                    .with_trace(trace_of(&request));
                let message = event.message_for(&org, endpoint.id.clone());
                enqueue(queue, &message).await?;
                Ok(json_response(
                    StatusCode::ACCEPTED,
                    &json!({ "message": queued_view(&message, 0, &at) }),
                ))
            })
            .await
        }
        .await,
    )
}

/// `GET /event-types`: the catalogue, with a JSON Schema of each type's `data`.
pub async fn list_event_types(config: &ApiConfig, request: Request) -> Response<Body> {
    respond(
        org_from_claims(&request, &config.org_id_claim)
            .map(|_| json_response(StatusCode::OK, &json!({ "eventTypes": catalogue() }))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_cursors_hold_an_attempt_key_and_nothing_else() {
        let message = "msg_01ARZ3NDEKTSV4RRFFQ69G5FAV";
        for good in [
            format!("{message}#00003"),
            format!("{message}#m1795979366000"),
        ] {
            assert_eq!(attempt_key(&good).as_deref(), Some(good.as_str()));
        }
        for bad in [
            message.to_owned(),
            format!("{message}#"),
            format!("{message}#x1"),
            "ep_01ARZ3NDEKTSV4RRFFQ69G5FAV#00001".to_owned(),
        ] {
            assert_eq!(attempt_key(&bad), None, "{bad}");
        }
    }
}
