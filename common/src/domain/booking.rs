//! Bookings: the product's own object. Creating, changing and cancelling one publishes
//! `booking.created`, `booking.updated` and `booking.cancelled`.

use serde::{Deserialize, Serialize};

use super::id::BookingId;
use super::validation::{FieldError, Fields};
use crate::time::parse_rfc3339;

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_SERVICE_ID_LEN: usize = 128;
pub const MAX_NOTES_LEN: usize = 2000;
pub const MAX_REASON_LEN: usize = 500;

/// Where a booking stands: `confirmed` from its creation, `cancelled` for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BookingStatus {
    Confirmed,
    Cancelled,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "confirmed" => Some(BookingStatus::Confirmed),
            "cancelled" => Some(BookingStatus::Cancelled),
            _ => None,
        }
    }
}

/// A validated `POST /bookings` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBooking {
    pub customer_name: String,
    pub customer_email: String,
    pub start_time: String,
    pub end_time: String,
    pub service_id: Option<String>,
    pub notes: Option<String>,
}

/// A stored booking, as the API and the `booking.*` payloads show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Booking {
    pub id: BookingId,
    pub customer_name: String,
    pub customer_email: String,
    pub start_time: String,
    pub end_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    pub status: BookingStatus,
    pub created_at: String,
    /// RFC 3339; the creation time until it first changes. A change is written only if this
    /// is still what the change was made from (optimistic concurrency).
    pub updated_at: String,
    /// RFC 3339, once cancelled; `null` before.
    pub cancelled_at: Option<String>,
    /// Why it was cancelled, when the cancellation said; `null` otherwise.
    pub reason: Option<String>,
}

/// The fields a booking is created with, and which a `PATCH` may change.
pub const BOOKING_FIELDS: [&str; 6] = [
    "customerName",
    "customerEmail",
    "startTime",
    "endTime",
    "serviceId",
    "notes",
];

/// A validated `PATCH /bookings/{id}` body: the fields to change, under the rules of create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BookingChanges {
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub service_id: Option<String>,
    pub notes: Option<String>,
}

impl BookingChanges {
    pub fn parse(body: &[u8]) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::parse(body, &BOOKING_FIELDS)?;
        let customer_name = fields.string("customerName", false, MAX_NAME_LEN);
        if customer_name.as_ref().is_some_and(|n| n.trim().is_empty()) {
            fields.error("customerName", "must not be empty");
        }
        let customer_email = email_field(&mut fields, false);
        let start_time = time_field(&mut fields, "startTime", false).map(|(text, _)| text);
        let end_time = time_field(&mut fields, "endTime", false).map(|(text, _)| text);
        let service_id = fields.string("serviceId", false, MAX_SERVICE_ID_LEN);
        let notes = fields.string("notes", false, MAX_NOTES_LEN);
        if BOOKING_FIELDS.iter().all(|name| !fields.is_present(name)) {
            fields.error(
                "body",
                format!("must change at least one of {}", BOOKING_FIELDS.join(", ")),
            );
        }
        fields.finish()?;
        Ok(Self {
            customer_name,
            customer_email,
            start_time,
            end_time,
            service_id,
            notes,
        })
    }

    /// `booking` with these changes made at `at`, and the names of the fields whose value
    /// really changed (empty: nothing to write, nothing to announce). The times are checked
    /// together, as they end up: the end still after the start.
    pub fn apply(
        &self,
        booking: &Booking,
        at: String,
    ) -> Result<(Booking, Vec<&'static str>), Vec<FieldError>> {
        let mut changed = booking.clone();
        let mut names = Vec::new();
        let mut set = |name: &'static str, field: &mut String, value: &Option<String>| {
            if let Some(value) = value.as_ref().filter(|v| *v != field) {
                *field = value.clone();
                names.push(name);
            }
        };
        set(
            "customerName",
            &mut changed.customer_name,
            &self.customer_name,
        );
        set(
            "customerEmail",
            &mut changed.customer_email,
            &self.customer_email,
        );
        set("startTime", &mut changed.start_time, &self.start_time);
        set("endTime", &mut changed.end_time, &self.end_time);
        let mut set_optional =
            |name: &'static str, field: &mut Option<String>, value: &Option<String>| {
                if value.is_some() && value != field {
                    *field = value.clone();
                    names.push(name);
                }
            };
        set_optional("serviceId", &mut changed.service_id, &self.service_id);
        set_optional("notes", &mut changed.notes, &self.notes);
        let start = parse_rfc3339(&changed.start_time);
        let end = parse_rfc3339(&changed.end_time);
        if let (Some(start), Some(end)) = (start, end) {
            if start >= end {
                let field = if self.end_time.is_some() {
                    "endTime"
                } else {
                    "startTime"
                };
                return Err(vec![FieldError::new(
                    field,
                    format!(
                        "must leave endTime after startTime (the booking would run from {} to {})",
                        changed.start_time, changed.end_time
                    ),
                )]);
            }
        }
        if !names.is_empty() {
            changed.updated_at = at;
        }
        Ok((changed, names))
    }
}

/// A validated `POST /bookings/{id}/cancel` body (it may be empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cancellation {
    pub reason: Option<String>,
}

impl Cancellation {
    pub fn parse(body: &[u8]) -> Result<Self, Vec<FieldError>> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let mut fields = Fields::parse(body, &["reason"])?;
        let reason = fields.string("reason", false, MAX_REASON_LEN);
        fields.finish()?;
        Ok(Self { reason })
    }

    /// `booking` cancelled at `at`.
    pub fn apply(&self, booking: &Booking, at: String) -> Booking {
        Booking {
            status: BookingStatus::Cancelled,
            cancelled_at: Some(at.clone()),
            reason: self.reason.clone(),
            updated_at: at,
            ..booking.clone()
        }
    }
}

impl NewBooking {
    pub fn parse(body: &[u8]) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::parse(body, &BOOKING_FIELDS)?;
        let customer_name = fields.string("customerName", true, MAX_NAME_LEN);
        let customer_email = email_field(&mut fields, true);
        let start_time = time_field(&mut fields, "startTime", true);
        let end_time = time_field(&mut fields, "endTime", true);
        if let (Some((_, start)), Some((_, end))) = (&start_time, &end_time) {
            if start >= end {
                fields.error("endTime", "must be after startTime");
            }
        }
        let service_id = fields.string("serviceId", false, MAX_SERVICE_ID_LEN);
        let notes = fields.string("notes", false, MAX_NOTES_LEN);
        fields.finish()?;
        match (customer_name, customer_email, start_time, end_time) {
            (
                Some(customer_name),
                Some(customer_email),
                Some((start_time, _)),
                Some((end_time, _)),
            ) => Ok(Self {
                customer_name,
                customer_email,
                start_time,
                end_time,
                service_id,
                notes,
            }),
            // Unreachable in practice: a missing required field was recorded as an error above.
            _ => Err(vec![FieldError::new("body", "required fields are missing")]),
        }
    }

    pub fn into_booking(self, id: BookingId, created_at: String) -> Booking {
        Booking {
            id,
            customer_name: self.customer_name,
            customer_email: self.customer_email,
            start_time: self.start_time,
            end_time: self.end_time,
            service_id: self.service_id,
            notes: self.notes,
            status: BookingStatus::Confirmed,
            updated_at: created_at.clone(),
            created_at,
            cancelled_at: None,
            reason: None,
        }
    }
}

fn email_field(fields: &mut Fields, required: bool) -> Option<String> {
    let email = fields.string("customerEmail", required, MAX_EMAIL_LEN)?;
    if looks_like_email(&email) {
        Some(email)
    } else {
        fields.error("customerEmail", "must be an email address");
        None
    }
}

fn time_field(
    fields: &mut Fields,
    name: &str,
    required: bool,
) -> Option<(String, time::OffsetDateTime)> {
    let text = fields.string(name, required, 64)?;
    match parse_rfc3339(&text) {
        Some(at) => Some((text, at)),
        None => {
            fields.error(
                name,
                "must be an RFC 3339 date-time, like 2026-05-01T10:00:00Z",
            );
            None
        }
    }
}

/// A deliberately loose check: one `@`, something on each side, a dot in the domain, no spaces.
fn looks_like_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !text.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_booking_is_accepted() {
        let body = br#"{"customerName":"Ada","customerEmail":"ada@example.com","startTime":"2026-05-01T10:00:00Z","endTime":"2026-05-01T11:00:00+00:00","serviceId":"svc_1"}"#;
        let booking = NewBooking::parse(body).unwrap();
        assert_eq!(booking.service_id.as_deref(), Some("svc_1"));
        assert_eq!(booking.notes, None);
    }

    #[test]
    fn times_must_parse_and_be_in_order() {
        let body = br#"{"customerName":"Ada","customerEmail":"ada@example.com","startTime":"2026-05-01T11:00:00Z","endTime":"2026-05-01T10:00:00Z"}"#;
        let errors = NewBooking::parse(body).unwrap_err();
        assert_eq!(errors[0].field, "endTime");
        let body = br#"{"customerName":"Ada","customerEmail":"ada@example.com","startTime":"tomorrow","endTime":"2026-05-01T10:00:00Z"}"#;
        assert_eq!(NewBooking::parse(body).unwrap_err()[0].field, "startTime");
    }

    #[test]
    fn missing_and_malformed_fields_are_all_listed() {
        let errors = NewBooking::parse(br#"{"customerEmail":"nope","notes":7}"#).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "customerName",
                "customerEmail",
                "startTime",
                "endTime",
                "notes"
            ]
        );
    }
}
