//! Triggered by the delivery queue: signs and POSTs each record, settles each at once (acknowledged,
//! re-sent for its next attempt, or dead-lettered), and reports those left to the queue.
use std::convert::Infallible;

use common::adapters::aws::{sdk_config_from_environment, DynamoStore, KmsCipher, SqsConsumer};
use common::config::{
    required, DeliveryConfig, ProcessEnv, DEAD_LETTER_QUEUE_URL, DELIVERY_QUEUE_URL, KMS_KEY_ID,
    TABLE_NAME,
};
use common::delivery::{Deliverer, SqsEvent};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    common::telemetry::init_subscriber();
    let config = DeliveryConfig::from_source(&ProcessEnv)?;
    let sdk = sdk_config_from_environment()?;
    let store = DynamoStore::from_sdk_config(&sdk, required(&ProcessEnv, TABLE_NAME)?);
    let cipher = KmsCipher::from_sdk_config(&sdk, required(&ProcessEnv, KMS_KEY_ID)?);
    let control = SqsConsumer::from_sdk_config(
        &sdk,
        required(&ProcessEnv, DELIVERY_QUEUE_URL)?,
        required(&ProcessEnv, DEAD_LETTER_QUEUE_URL)?,
    );
    let deliverer = Deliverer::new(store, cipher, config)?;
    let (deliverer, control) = (&deliverer, &control);
    run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        let deadline = event.context.deadline;
        Ok::<_, Infallible>(
            deliverer
                .handle_sqs_event(control, event.payload, deadline)
                .await,
        )
    }))
    .await
}
