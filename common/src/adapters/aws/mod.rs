//! Adapters over aws-sdk-rust. Clients are built once per container from one `SdkConfig`, which
//! honours the standard environment (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL` for an
//! emulator).

mod dynamodb;
mod kms;
mod sqs;

pub use dynamodb::{DynamoStore, PENDING_EVENTS_INDEX};
pub use kms::KmsCipher;
pub use sqs::{SqsConsumer, SqsDeliveryQueue};

use std::time::Duration;

pub use aws_config::SdkConfig;

/// Loads the shared SDK configuration from the environment, with timeouts: a hung DynamoDB, SQS
/// or KMS call must fail (a 503 from the API, a retry from delivery) before the function's own
/// timeout turns it into an API Gateway 5xx or a whole batch handed out again.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(sdk_timeouts())
        .load()
        .await
}

/// Per attempt and per operation (retries included).
pub fn sdk_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(6))
        .build()
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
