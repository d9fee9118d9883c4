//! Runs on a schedule: publishes the events producers recorded but could not publish.
use common::adapters::aws::{sdk_config_from_environment, DynamoStore, SqsDeliveryQueue};
use common::config::{
    metrics, relay_min_age, required, ProcessEnv, DELIVERY_QUEUE_URL, TABLE_NAME,
};
use common::publish::relay_pending_events;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    common::telemetry::init_subscriber();
    let min_age = relay_min_age(&ProcessEnv)?;
    let metrics = metrics(&ProcessEnv)?;
    let sdk = sdk_config_from_environment()?;
    let store = DynamoStore::from_sdk_config(&sdk, required(&ProcessEnv, TABLE_NAME)?);
    let queue = SqsDeliveryQueue::from_sdk_config(&sdk, required(&ProcessEnv, DELIVERY_QUEUE_URL)?);
    // An error fails the scheduled invocation, so it shows in the function's error metric;
    // the next run tries again.
    run(service_fn(|_: LambdaEvent<Value>| async {
        let report = relay_pending_events(&store, &queue, min_age).await?;
        metrics.emit(&report.metrics());
        Ok::<_, Error>(report)
    }))
    .await
}
