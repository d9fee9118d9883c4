//! `PATCH /bookings/{id}` behind API Gateway: changes a booking and publishes booking.updated.
use std::convert::Infallible;

use common::adapters::aws::{sdk_config_from_environment, DynamoStore, SqsDeliveryQueue};
use common::api;
use common::config::{required, ApiConfig, ProcessEnv, DELIVERY_QUEUE_URL, TABLE_NAME};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    common::telemetry::init_subscriber();
    let config = ApiConfig::from_source(&ProcessEnv)?;
    let sdk = sdk_config_from_environment()?;
    let store = DynamoStore::from_sdk_config(&sdk, required(&ProcessEnv, TABLE_NAME)?);
    let queue = SqsDeliveryQueue::from_sdk_config(&sdk, required(&ProcessEnv, DELIVERY_QUEUE_URL)?);
    run(service_fn(|request: Request| async {
        Ok::<_, Infallible>(api::update_booking(&store, &queue, &config, request).await)
    }))
    .await
}
