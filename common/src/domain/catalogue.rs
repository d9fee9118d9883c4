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

/// A booking as the API shows it; `status` is `cancelled` in `booking.cancelled`, with
/// `cancelledAt` and, when one was given, `reason`.
fn booking_object(status: &[&str]) -> Value {
    json!({
        "type": "object",
        "required": ["id", "customerName", "customerEmail", "startTime", "endTime", "status", "createdAt", "updatedAt"],
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
            "cancelledAt": { "type": "string", "format": "date-time" },
            "reason": { "type": "string", "maxLength": MAX_REASON_LEN }
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
            if let Some(required) = booking["required"].as_array_mut() {
                required.push(json!("cancelledAt"));
            }
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
                    "endpointId": { "type": "string", "pattern": "^ep_[0-9A-HJKMNP-TV-Z]{26}$" },
                    "sentAt": { "type": "string", "format": "date-time" }
                }
            }),
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
