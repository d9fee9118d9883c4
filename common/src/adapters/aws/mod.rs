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

/// Loads the shared SDK configuration from the environment, with timeouts: a hung DynamoDB, SQS
/// or KMS call must fail (a 503 from the API, a retry from delivery) before the function's own
/// timeout turns it into an API Gateway 5xx or a whole batch handed out again.
///
/// When the environment holds the credentials and the region (always so on Lambda), no profile
/// file is read and the default credential chain (profile, web identity, ECS, IMDS providers)
/// is not built: a cold start pays only for what it uses. Elsewhere (a developer's shell with a
/// profile) the SDK's default chain applies.
///
/// # Errors
/// [`HttpClientError`] if the HTTP client cannot be built.
pub async fn load_sdk_config() -> Result<SdkConfig, HttpClientError> {
    let mut loader = sdk_defaults()?;
    if everything_from_environment(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty())) {
        use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
        loader = loader
            .credentials_provider(
                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
            )
            .profile_files(
                EnvConfigFiles::builder()
                    .with_contents(EnvConfigFileKind::Config, "")
                    .build(),
            );
    }
    Ok(loader.load().await)
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

/// Credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`; Lambda adds `AWS_SESSION_TOKEN`)
/// and region (`AWS_REGION` or `AWS_DEFAULT_REGION`) both set in the environment.
fn everything_from_environment(is_set: impl Fn(&str) -> bool) -> bool {
    is_set("AWS_ACCESS_KEY_ID")
        && is_set("AWS_SECRET_ACCESS_KEY")
        && (is_set("AWS_REGION") || is_set("AWS_DEFAULT_REGION"))
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
    use super::everything_from_environment;

    #[test]
    fn profile_files_are_skipped_only_when_credentials_and_region_are_in_the_environment() {
        fn with<'a>(names: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
            move |name| names.contains(&name)
        }
        assert!(everything_from_environment(with(&[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION"
        ])));
        assert!(everything_from_environment(with(&[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION"
        ])));
        assert!(!everything_from_environment(with(&[
            "AWS_ACCESS_KEY_ID",
            "AWS_REGION"
        ])));
        assert!(!everything_from_environment(with(&[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY"
        ])));
        assert!(!everything_from_environment(with(&["AWS_REGION"])));
    }
}
