//! The event catalogue as `GET /event-types` shows it: each type, what it means, and a JSON
//! Schema (draft 2020-12) of the `data` its messages carry.

use serde::Serialize;
use serde_json::{json, Value};

use super::booking::{
    BOOKING_FIELDS, MAX_EMAIL_LEN, MAX_NAME_LEN, MAX_NOTES_LEN, MAX_REASON_LEN, MAX_SERVICE_ID_LEN,
};
use super::event::EventType;

/// One entry of the catalogue.
#[derive(Debug, Serialize)]
pub struct EventTypeInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: Value,
}

const ENDPOINT_ID: &str = "^ep_[0-9A-HJKMNP-TV-Z]{26}$";

/// An operational event's `data`: `endpointId` (the endpoint it is about) and `properties`.
fn operational_schema(event_type: EventType, required: &[&str], properties: Value) -> Value {
    let mut all = json!({ "endpointId": { "type": "string", "pattern": ENDPOINT_ID } });
    if let (Some(all), Some(more)) = (all.as_object_mut(), properties.as_object()) {
        all.extend(more.clone());
    }
    let mut required: Vec<&str> = required.to_vec();
    required.insert(0, "endpointId");
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("{} data", event_type.as_str()),
        "type": "object",
        "required": required,
        "additionalProperties": false,
        "properties": all
    })
}

/// A booking as the API shows it; `status` is `cancelled` in `booking.cancelled`, with
/// `cancelledAt` and, when one was given, `reason`.
fn booking_object(status: &[&str]) -> Value {
    json!({
        "type": "object",
        "required": ["id", "customerName", "customerEmail", "startTime", "endTime", "status", "createdAt", "updatedAt", "cancelledAt", "reason"],
        "additionalProperties": false,
        "properties": {
            "id": { "type": "string", "pattern": "^bk_[0-9A-HJKMNP-TV-Z]{26}$" },
            "customerName": { "type": "string", "minLength": 1, "maxLength": MAX_NAME_LEN },
            "customerEmail": { "type": "string", "maxLength": MAX_EMAIL_LEN },
            "startTime": { "type": "string", "format": "date-time" },
            "endTime": { "type": "string", "format": "date-time" },
            "serviceId": { "type": "string", "maxLength": MAX_SERVICE_ID_LEN },
            "notes": { "type": "string", "maxLength": MAX_NOTES_LEN },
            "status": { "enum": status },
            "createdAt": { "type": "string", "format": "date-time" },
            "updatedAt": { "type": "string", "format": "date-time" },
            "cancelledAt": { "type": ["string", "null"], "format": "date-time" },
            "reason": { "type": ["string", "null"], "maxLength": MAX_REASON_LEN }
        }
    })
}

/// The `data` of a `booking.*` event: `{"booking": {...}}`, plus `changes` (the names of the
/// fields that changed) in `booking.updated`.
fn booking_schema(event_type: EventType) -> Value {
    let title = format!("{} data", event_type.as_str());
    match event_type {
        EventType::BookingUpdated => json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": title,
            "type": "object",
            "required": ["booking", "changes"],
            "additionalProperties": false,
            "properties": {
                "booking": booking_object(&["confirmed"]),
                "changes": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": true,
                    "items": { "enum": BOOKING_FIELDS }
                }
            }
        }),
        EventType::BookingCancelled => {
            let mut booking = booking_object(&["cancelled"]);
            booking["properties"]["cancelledAt"] =
                json!({ "type": "string", "format": "date-time" });
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "title": title,
                "type": "object",
                "required": ["booking"],
                "additionalProperties": false,
                "properties": { "booking": booking }
            })
        }
        _ => json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": title,
            "type": "object",
            "required": ["booking"],
            "additionalProperties": false,
            "properties": { "booking": booking_object(&["confirmed"]) }
        }),
    }
}

impl EventType {
    pub fn description(self) -> &'static str {
        match self {
            EventType::BookingCreated => "A booking was made.",
            EventType::BookingUpdated => "A booking's details changed.",
            EventType::BookingCancelled => "A booking was cancelled.",
            EventType::WebhookTest => {
                "Sent to one endpoint by POST /webhooks/{id}/test, whatever it subscribes to, to try it."
            }
            EventType::EndpointDisabled => {
                "One of your endpoints was disabled by the platform (it answered 410 Gone, or kept failing for too long); it gets nothing until enabled again. Not sent for an endpoint disabled by PATCH, nor to the endpoint itself."
            }
            EventType::EndpointCircuitOpened => {
                "One of your endpoints failed several times in a row: its deliveries pause until a probe succeeds. Never sent to that endpoint."
            }
            EventType::MessageFailed => {
                "A message to one of your endpoints failed its last attempt and is dead; recover it with POST /webhooks/{id}/recover. Never sent to that endpoint."
            }
        }
    }

    /// A JSON Schema of the `data` of this type's messages.
    pub fn data_schema(self) -> Value {
        match self {
            EventType::BookingCreated | EventType::BookingUpdated | EventType::BookingCancelled => {
                booking_schema(self)
            }
            EventType::WebhookTest => json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "title": "webhook.test data",
                "type": "object",
                "required": ["endpointId", "sentAt"],
                "additionalProperties": false,
                "properties": {
                    "endpointId": { "type": "string", "pattern": ENDPOINT_ID },
                    "sentAt": { "type": "string", "format": "date-time" }
                }
            }),
            EventType::EndpointDisabled => operational_schema(
                self,
                &["url", "disabledReason", "disabledAt"],
                json!({
                    "url": { "type": "string", "format": "uri" },
                    "disabledReason": { "enum": ["gone", "failing"] },
                    "disabledAt": { "type": "string", "format": "date-time" }
                }),
            ),
            EventType::EndpointCircuitOpened => operational_schema(
                self,
                &["url", "failureStreak", "openUntil"],
                json!({
                    "url": { "type": "string", "format": "uri" },
                    "failureStreak": { "type": "integer", "minimum": 1 },
                    "openUntil": { "type": "string", "format": "date-time" }
                }),
            ),
            EventType::MessageFailed => operational_schema(
                self,
                &[
                    "messageId",
                    "eventType",
                    "attempts",
                    "lastStatus",
                    "lastError",
                ],
                json!({
                    "messageId": { "type": "string", "pattern": "^msg_[0-9A-Za-z]+$" },
                    "eventId": { "type": "string" },
                    "eventType": { "type": "string" },
                    "attempts": { "type": "integer", "minimum": 1 },
                    "lastStatus": { "type": ["integer", "null"] },
                    "lastError": { "type": ["string", "null"] }
                }),
            ),
        }
    }
}

/// Every type of the catalogue, in its order.
pub fn catalogue() -> Vec<EventTypeInfo> {
    EventType::ALL
        .into_iter()
        .map(|t| EventTypeInfo {
            name: t.as_str(),
            description: t.description(),
            schema: t.data_schema(),
        })
        .collect()
}
