//! `GET /webhooks/{id}/attempts` behind API Gateway: lists an endpoint's attempts, newest first.
use std::convert::Infallible;

use common::adapters::aws::{sdk_config_from_environment, DynamoStore};
use common::api;
use common::config::{required, ApiConfig, ProcessEnv, TABLE_NAME};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    common::telemetry::init_subscriber();
    let config = ApiConfig::from_source(&ProcessEnv)?;
    let sdk = sdk_config_from_environment()?;
    let store = DynamoStore::from_sdk_config(&sdk, required(&ProcessEnv, TABLE_NAME)?);

    run(service_fn(|request: Request| async {
        Ok::<_, Infallible>(api::list_attempts(&store, &config, request).await)
    }))
    .await
}
