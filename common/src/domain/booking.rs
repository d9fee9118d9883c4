//! Bookings: the product's own object, whose creation publishes `booking.created`.

use serde::Serialize;

use super::id::BookingId;
use super::validation::{FieldError, Fields};
use crate::time::parse_rfc3339;

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_SERVICE_ID_LEN: usize = 128;
pub const MAX_NOTES_LEN: usize = 2000;

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

/// A stored booking, as the API and the `booking.created` payload show it.
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
    pub created_at: String,
}

impl NewBooking {
    pub fn parse(body: &[u8]) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::parse(
            body,
            &[
                "customerName",
                "customerEmail",
                "startTime",
                "endTime",
                "serviceId",
                "notes",
            ],
        )?;
        let customer_name = fields.string("customerName", true, MAX_NAME_LEN);
        let customer_email = fields.string("customerEmail", true, MAX_EMAIL_LEN);
        if let Some(email) = &customer_email {
            if !looks_like_email(email) {
                fields.error("customerEmail", "must be an email address");
            }
        }
        let start_time = time_field(&mut fields, "startTime");
        let end_time = time_field(&mut fields, "endTime");
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
            created_at,
        }
    }
}

fn time_field(fields: &mut Fields, name: &str) -> Option<(String, time::OffsetDateTime)> {
    let text = fields.string(name, true, 64)?;
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
