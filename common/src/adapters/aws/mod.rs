//! Adapters over aws-sdk-rust. Clients are built once per container from one `SdkConfig`, which
//! honours the standard environment (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL` for an
//! emulator).

mod dynamodb;
mod kms;
mod sqs;

pub use dynamodb::{DynamoStore, PENDING_EVENTS_INDEX};
pub use kms::KmsCipher;
pub use sqs::{SqsDeliveryQueue, SqsRetryControl};

pub use aws_config::SdkConfig;

/// Loads the shared SDK configuration from the environment.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// The most useful text of an SDK error: its code and message, not just "service error".
fn describe(error: &impl std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
