//! `POST /webhooks/{id}/secret/rotate` behind API Gateway: a new secret, shown once; the old one signs too during its grace period.
use std::convert::Infallible;

use common::adapters::aws::{sdk_config_from_environment, DynamoStore, KmsCipher};
use common::api;
use common::config::{required, ApiConfig, ProcessEnv, KMS_KEY_ID, TABLE_NAME};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    common::telemetry::init_subscriber();
    let config = ApiConfig::from_source(&ProcessEnv)?;
    let sdk = sdk_config_from_environment()?;
    let store = DynamoStore::from_sdk_config(&sdk, required(&ProcessEnv, TABLE_NAME)?);
    let cipher = KmsCipher::from_sdk_config(&sdk, required(&ProcessEnv, KMS_KEY_ID)?);
    run(service_fn(|request: Request| async {
        Ok::<_, Infallible>(api::rotate_webhook_secret(&store, &cipher, &config, request).await)
    }))
    .await
}
