//! `POST /bookings`: stores a booking and publishes `booking.created`.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::{body_bytes, json_response, org_from_claims, respond};
use crate::config::ApiConfig;
use crate::domain::booking::NewBooking;
use crate::domain::event::EventType;
use crate::domain::id::BookingId;
use crate::error::ApiError;
use crate::ports::{BookingStore, DeliveryQueue, EndpointStore};
use crate::publish::publish;
use crate::time::now_rfc3339;

/// The booking is the product; webhooks are secondary. Once the booking is stored the answer is
/// 201, whatever publishing does: a failure is logged with the booking id, and publishing may
/// hold the answer back for at most `publish_timeout`.
pub async fn create_booking(
    store: &(impl BookingStore + EndpointStore),
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
            store.insert_booking(&org, &booking).await?;
            tracing::info!(org_id = %org, booking_id = %booking.id, "booking created");

            let data = json!({ "booking": &booking });
            let published = tokio::time::timeout(
                config.publish_timeout,
                publish(store, queue, &org, EventType::BookingCreated, data),
            )
            .await;
            match published {
                Ok(Ok(report)) => tracing::info!(
                    org_id = %org, booking_id = %booking.id, endpoints = report.endpoints,
                    "booking.created published to {} endpoint(s)", report.enqueued
                ),
                Ok(Err(error)) => tracing::error!(
                    org_id = %org, booking_id = %booking.id, %error,
                    "booking.created was not published for booking {}", booking.id
                ),
                Err(_) => tracing::error!(
                    org_id = %org, booking_id = %booking.id,
                    "booking.created publishing for booking {} timed out after {:?}", booking.id, config.publish_timeout
                ),
            }
            Ok(json_response(StatusCode::CREATED, &json!({ "booking": booking })))
        }
        .await,
    )
}
