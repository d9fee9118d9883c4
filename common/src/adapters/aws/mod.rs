//! Adapters over aws-sdk-rust. Clients are built once per container from one `SdkConfig`, which
//! honours the standard environment (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL` for an
//! emulator).

mod dynamodb;
mod http_client;
mod kms;
mod sqs;

pub use dynamodb::{DynamoStore, PENDING_EVENTS_INDEX};
pub use http_client::{HttpClientError, SdkHttpClient};
pub use kms::KmsCipher;
pub use sqs::{SqsConsumer, SqsDeliveryQueue};

use std::time::Duration;

pub use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::SharedCredentialsProvider;

/// The shared SDK configuration of a Lambda function, from its environment alone: region
/// (`AWS_REGION`, else `AWS_DEFAULT_REGION`), credentials (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`: Lambda sets them from the execution role, see
/// "Defined runtime environment variables" in the Lambda developer guide), `AWS_ENDPOINT_URL`
/// for an emulator, our HTTP client and [`sdk_timeouts`], the standard retry mode (3 attempts).
///
/// Built directly rather than by aws-config's loader, which reads profile files and builds the
/// whole default credential chain (profile, web identity with its STS client, ECS, IMDS) at
/// every cold start, and links all of it into every binary, for credentials Lambda always puts
/// in the environment. Timeouts matter: a hung DynamoDB, SQS or KMS call must fail (a 503 from
/// the API, a retry from delivery) before the function's own timeout turns it into an API
/// Gateway 5xx or a whole batch handed out again.
///
/// # Errors
/// [`SdkSetupError::Missing`] naming the variable absent (or empty); [`SdkSetupError::Http`]
/// if the HTTP client cannot be built.
pub fn sdk_config_from_environment() -> Result<SdkConfig, SdkSetupError> {
    sdk_config_from(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
}

fn sdk_config_from(var: impl Fn(&str) -> Option<String>) -> Result<SdkConfig, SdkSetupError> {
    let region = var("AWS_REGION")
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .ok_or(SdkSetupError::Missing("AWS_REGION"))?;
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        var(name).ok_or(SdkSetupError::Missing(name))?;
    }
    let credentials = aws_config::environment::EnvironmentVariableCredentialsProvider::new();
    let mut config = SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .http_client(SdkHttpClient::new(CONNECT_TIMEOUT)?)
        .timeout_config(sdk_timeouts())
        .retry_config(aws_smithy_types::retry::RetryConfig::standard());
    if let Some(endpoint) = var("AWS_ENDPOINT_URL") {
        config = config.endpoint_url(endpoint);
    }
    Ok(config.build())
}

#[derive(Debug, thiserror::Error)]
pub enum SdkSetupError {
    #[error("{0} is not set: Lambda sets it; elsewhere, set it (or use a profile with `webhooks-local --aws`)")]
    Missing(&'static str),
    #[error(transparent)]
    Http(#[from] HttpClientError),
}

/// The SDK's default configuration chain (environment, profile files, SSO, web identity,
/// container and instance credentials), with our HTTP client and [`sdk_timeouts`]: for
/// `webhooks-local --aws` in a developer's shell, not for the Lambda functions
/// ([`sdk_config_from_environment`]).
///
/// # Errors
/// [`HttpClientError`] if the HTTP client cannot be built.
pub async fn load_sdk_config() -> Result<SdkConfig, HttpClientError> {
    Ok(sdk_defaults()?.load().await)
}

/// What every SDK configuration of this project starts from: [`SdkHttpClient`] and
/// [`sdk_timeouts`].
///
/// # Errors
/// [`HttpClientError`] if the HTTP client cannot be built.
pub fn sdk_defaults() -> Result<aws_config::ConfigLoader, HttpClientError> {
    Ok(aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(SdkHttpClient::new(CONNECT_TIMEOUT)?)
        .timeout_config(sdk_timeouts()))
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Per attempt and per operation (retries included).
pub fn sdk_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<SdkConfig, SdkSetupError> {
        sdk_config_from(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn a_lambda_environment_makes_the_whole_configuration() {
        let lambda = [
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ];
        let config = from(&lambda).unwrap();
        assert_eq!(config.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert!(config.credentials_provider().is_some());
        assert!(config.http_client().is_some());
        assert_eq!(config.endpoint_url(), None);
        assert_eq!(
            config.timeout_config().and_then(|t| t.connect_timeout()),
            Some(CONNECT_TIMEOUT)
        );
        assert_eq!(config.retry_config().map(|r| r.max_attempts()), Some(3));

        let mut emulated = lambda.to_vec();
        emulated[0] = ("AWS_DEFAULT_REGION", "us-east-1");
        emulated.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"));
        let config = from(&emulated).unwrap();
        assert_eq!(config.region().map(|r| r.as_ref()), Some("us-east-1"));
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn a_missing_region_or_key_is_named() {
        let missing = |vars: &[(&str, &str)]| match from(vars) {
            Err(SdkSetupError::Missing(name)) => name,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            missing(&[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")]),
            "AWS_REGION"
        );
        assert_eq!(
            missing(&[("AWS_REGION", "eu-west-1"), ("AWS_SECRET_ACCESS_KEY", "b")]),
            "AWS_ACCESS_KEY_ID"
        );
        assert_eq!(
            missing(&[("AWS_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", "a")]),
            "AWS_SECRET_ACCESS_KEY"
        );
    }
}
