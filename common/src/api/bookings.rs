//! `POST /bookings`: stores a booking and publishes `booking.created`.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::{body_bytes, json_response, org_from_claims, respond};
use crate::config::ApiConfig;
use crate::domain::booking::NewBooking;
use crate::domain::event::{Event, EventType};
use crate::domain::id::BookingId;
use crate::error::ApiError;
use crate::ports::{BookingStore, DeliveryQueue, EndpointStore, EventOutbox};
use crate::publish::publish_event;
use crate::time::now_rfc3339;

/// The booking is the product; webhooks are secondary. The booking and its `booking.created`
/// event are stored in one transaction, so the event survives whatever happens next. Then the
/// event is published (waiting at most `publish_timeout`) and cleared from the outbox; if that
/// fails, the answer is still 201, the failure is logged with the booking id, and the relay
/// publishes the event later.
pub async fn create_booking(
    store: &(impl BookingStore + EndpointStore + EventOutbox),
    queue: &impl DeliveryQueue,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            let new = NewBooking::parse(body_bytes(&request)?)?;
            let id = BookingId::generate().map_err(|_| ApiError::Internal)?;
            let booking = new.into_booking(id, now_rfc3339());
            let event = Event::new(EventType::BookingCreated, json!({ "booking": &booking })).map_err(|_| ApiError::Internal)?;
            store.insert_booking(&org, &booking, &event).await?;
            tracing::info!(org_id = %org, booking_id = %booking.id, event_id = %event.id, "booking created");

            // Publishing and clearing share one timeout, so the answer is never held longer.
            let publish_and_clear = async {
                let report = publish_event(store, queue, &org, &event).await?;
                if let Err(error) = store.clear_event(&org, &event.id).await {
                    tracing::warn!(event_id = %event.id, %error, "published but not cleared; the relay will publish it again with the same message ids");
                }
                Ok::<_, crate::publish::PublishError>(report)
            };
            let published = tokio::time::timeout(config.publish_timeout, publish_and_clear).await;
            match published {
                Ok(Ok(report)) => tracing::info!(
                    org_id = %org, booking_id = %booking.id, event_id = %event.id, endpoints = report.endpoints,
                    "booking.created published to {} endpoint(s)", report.endpoints
                ),
                Ok(Err(error)) => tracing::error!(
                    org_id = %org, booking_id = %booking.id, event_id = %event.id, %error,
                    "booking.created for booking {} not published yet; it stays in the outbox for the relay", booking.id
                ),
                Err(_) => tracing::error!(
                    org_id = %org, booking_id = %booking.id, event_id = %event.id,
                    "booking.created for booking {} timed out after {:?}; it stays in the outbox for the relay", booking.id, config.publish_timeout
                ),
            }
            Ok(json_response(StatusCode::CREATED, &json!({ "booking": booking })))
        }
        .await,
    )
}
