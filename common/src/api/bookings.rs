//! `POST /bookings`, `GET|PATCH /bookings/{id}`, `POST /bookings/{id}/cancel`: each change of a
//! booking is stored with the event that announces it, then published.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::idempotency::{self, Begin};
use super::{body_bytes, booking_id_from_path, json_response, org_from_claims, respond, trace_of};
use crate::config::ApiConfig;
use crate::domain::booking::{Booking, BookingChanges, BookingStatus, Cancellation, NewBooking};
use crate::domain::event::{Event, EventType};
use crate::domain::id::BookingId;
use crate::domain::OrgId;
use crate::error::{ApiError, StoreError};
use crate::ports::{BookingStore, DeliveryQueue, EndpointStore, EventOutbox, IdempotencyStore};
use crate::publish::{publish_and_clear, publish_metrics};
use crate::time::now_rfc3339;

const CANCELLED: &str = "This booking is cancelled: it can no longer change";
const CHANGED_MEANWHILE: &str =
    "This booking was changed by another request meanwhile; read it again and retry";

/// The booking is the product; webhooks are secondary. The booking and its `booking.created`
/// event are stored in one transaction (with the answer, under an `Idempotency-Key`), so the
/// event survives whatever happens next and a retried request creates and announces nothing
/// twice. Then the event is published (see [`publish_now`]).
pub async fn create_booking(
    store: &(impl BookingStore + EndpointStore + EventOutbox + IdempotencyStore),
    queue: &impl DeliveryQueue,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            let mut guard = match idempotency::begin(store, &request, &org).await? {
                Begin::Replay(stored) => return Ok(idempotency::replayed(&stored)),
                Begin::Proceed(guard) => guard,
            };
            let result = async {
                let new = NewBooking::parse(body_bytes(&request)?)?;
                let id = BookingId::generate().map_err(|_| ApiError::Internal)?;
                let booking = new.into_booking(id, now_rfc3339());
                let event = Event::new(EventType::BookingCreated, json!({ "booking": &booking }))
                    .map_err(|_| ApiError::Internal)?
                    .with_trace(trace_of(&request));
                let answer = json!({ "booking": &booking });
                let completion = guard.completion(StatusCode::CREATED, &answer);
                store
                    .insert_booking(&org, &booking, &event, completion.as_ref())
                    .await?;
                tracing::info!(org_id = %org, booking_id = %booking.id, event_id = %event.id, "booking created");
                publish_now(store, queue, config, &org, &booking.id, &event).await;
                Ok(json_response(StatusCode::CREATED, &answer))
            }
            .await;
            guard.settle(store, &org, result).await
        }
        .await,
    )
}

/// `GET /bookings/{id}`.
pub async fn get_booking(
    store: &impl BookingStore,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            let id = booking_id_from_path(&request)?;
            let booking = store
                .get_booking(&org, &id)
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "booking": booking }),
            ))
        }
        .await,
    )
}

/// `PATCH /bookings/{id}`: changes fields under the rules of create and publishes
/// `booking.updated` with the names of the fields that changed. A request that changes nothing
/// (every value as stored) writes and publishes nothing. `409` for a cancelled booking, or one
/// changed by another request between the read and the write.
pub async fn update_booking(
    store: &(impl BookingStore + EndpointStore + EventOutbox),
    queue: &impl DeliveryQueue,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            let id = booking_id_from_path(&request)?;
            let changes = BookingChanges::parse(body_bytes(&request)?)?;
            let booking = confirmed_booking(store, &org, &id).await?;
            let (changed, names) = changes.apply(&booking, now_rfc3339())?;
            if names.is_empty() {
                return Ok(json_response(StatusCode::OK, &json!({ "booking": booking })));
            }
            let event = Event::new(
                EventType::BookingUpdated,
                json!({ "booking": &changed, "changes": names }),
            )
            .map_err(|_| ApiError::Internal)?
            .with_trace(trace_of(&request));
            let written = store
                .replace_booking(&org, &changed, &booking.updated_at, &event, None)
                .await;
            explain_conflict(store, &org, &id, written).await?;
            tracing::info!(org_id = %org, booking_id = %id, event_id = %event.id, changes = ?names, "booking updated");
            publish_now(store, queue, config, &org, &id, &event).await;
            Ok(json_response(StatusCode::OK, &json!({ "booking": changed })))
        }
        .await,
    )
}

/// `POST /bookings/{id}/cancel` `{"reason"?}`: cancels for good and publishes
/// `booking.cancelled`. `409` when it is cancelled already.
pub async fn cancel_booking(
    store: &(impl BookingStore + EndpointStore + EventOutbox + IdempotencyStore),
    queue: &impl DeliveryQueue,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            let mut guard = match idempotency::begin(store, &request, &org).await? {
                Begin::Replay(stored) => return Ok(idempotency::replayed(&stored)),
                Begin::Proceed(guard) => guard,
            };
            let result = async {
                let id = booking_id_from_path(&request)?;
                let cancellation = Cancellation::parse(body_bytes(&request)?)?;
                let booking = confirmed_booking(store, &org, &id).await?;
                let cancelled = cancellation.apply(&booking, now_rfc3339());
                let event =
                    Event::new(EventType::BookingCancelled, json!({ "booking": &cancelled }))
                        .map_err(|_| ApiError::Internal)?
                        .with_trace(trace_of(&request));
                let answer = json!({ "booking": &cancelled });
                let completion = guard.completion(StatusCode::OK, &answer);
                let written = store
                    .replace_booking(&org, &cancelled, &booking.updated_at, &event, completion.as_ref())
                    .await;
                explain_conflict(store, &org, &id, written).await?;
                tracing::info!(org_id = %org, booking_id = %id, event_id = %event.id, "booking cancelled");
                publish_now(store, queue, config, &org, &id, &event).await;
                Ok(json_response(StatusCode::OK, &answer))
            }
            .await;
            guard.settle(store, &org, result).await
        }
        .await,
    )
}

/// The booking, if it is in `org` (`404` otherwise) and still confirmed (`409` otherwise).
async fn confirmed_booking(
    store: &impl BookingStore,
    org: &OrgId,
    id: &BookingId,
) -> Result<Booking, ApiError> {
    let booking = store
        .get_booking(org, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if booking.status == BookingStatus::Cancelled {
        return Err(ApiError::Conflicting(CANCELLED));
    }
    Ok(booking)
}

/// Why a conditional booking write was refused: the booking is gone (`404`), was cancelled,
/// or changed meanwhile (`409`).
async fn explain_conflict(
    store: &impl BookingStore,
    org: &OrgId,
    id: &BookingId,
    written: Result<(), StoreError>,
) -> Result<(), ApiError> {
    match written {
        Err(StoreError::Conflict) => match store.get_booking(org, id).await? {
            None => Err(ApiError::NotFound),
            Some(b) if b.status == BookingStatus::Cancelled => {
                Err(ApiError::Conflicting(CANCELLED))
            }
            Some(_) => Err(ApiError::Conflicting(CHANGED_MEANWHILE)),
        },
        other => Ok(other?),
    }
}

/// Publishes a stored event and clears it from the outbox, waiting at most
/// `config.publish_timeout` for both. A failure is logged with the booking id, never answered:
/// the change is stored, and the relay publishes the event later.
async fn publish_now(
    store: &(impl EndpointStore + EventOutbox),
    queue: &impl DeliveryQueue,
    config: &ApiConfig,
    org: &OrgId,
    booking_id: &BookingId,
    event: &Event,
) {
    let kind = event.event_type.as_str();
    let trace_id = event.trace.as_ref().map_or("", |t| t.trace_id());
    let outcome = tokio::time::timeout(
        config.publish_timeout,
        publish_and_clear(store, queue, org, event),
    )
    .await;
    let enqueued = match &outcome {
        Ok(Ok(report)) => {
            tracing::info!(
                org_id = %org, booking_id = %booking_id, event_id = %event.id, trace_id, endpoints = report.endpoints,
                "{kind} published to {} endpoint(s)", report.endpoints
            );
            Some(report.endpoints)
        }
        Ok(Err(error)) => {
            tracing::error!(
                org_id = %org, booking_id = %booking_id, event_id = %event.id, trace_id, %error,
                "{kind} for booking {booking_id} not published yet; it stays in the outbox for the relay"
            );
            None
        }
        Err(_) => {
            tracing::error!(
                org_id = %org, booking_id = %booking_id, event_id = %event.id, trace_id,
                "{kind} for booking {booking_id} timed out after {:?}; it stays in the outbox for the relay", config.publish_timeout
            );
            None
        }
    };
    let mut metrics = publish_metrics(org, event, enqueued);
    metrics.property("traceId", trace_id);
    config.metrics.emit(&metrics);
}
