//! `GET /event-types` behind API Gateway: the event catalogue, with a JSON Schema of each type's
//! `data`.
use std::convert::Infallible;

use common::api;
use common::config::{ApiConfig, ProcessEnv};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    common::telemetry::init_subscriber();
    let config = ApiConfig::from_source(&ProcessEnv)?;

    run(service_fn(|request: Request| async {
        Ok::<_, Infallible>(api::list_event_types(&config, request).await)
    }))
    .await
}
