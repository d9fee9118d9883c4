//! The log subscriber every binary installs: the Lambda runtime's default (level from
//! `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`, either one level name, else INFO; JSON when
//! `AWS_LAMBDA_LOG_FORMAT` is `JSON`), with one rule added that no setting can lift: events
//! from other crates stop at INFO.
//!
//! At DEBUG and TRACE the AWS SDK logs request and response bodies (the KMS `Encrypt` request
//! carries the plaintext `whsec_` secret, `Decrypt`'s answer too) and the Lambda runtime logs
//! raw invocation events (with the caller's bearer token). A secret must not reach the logs at
//! any level, so the ceiling is on the subscriber, whatever `LogLevel` a template or an
//! operator sets; this project's own code (`common`) logs at the level asked for, and never
//! logs a secret.

use std::env;
use std::str::FromStr;

use lambda_runtime::tracing::subscriber::filter::{filter_fn, LevelFilter};
use lambda_runtime::tracing::subscriber::fmt::MakeWriter;
use lambda_runtime::tracing::subscriber::layer::SubscriberExt;
use lambda_runtime::tracing::subscriber::util::SubscriberInitExt;
use lambda_runtime::tracing::subscriber::{self as subscriber};
use tracing::{Level, Metadata, Subscriber};

/// Installs the subscriber, writing to stdout (what Lambda sends to CloudWatch Logs), in JSON
/// when `AWS_LAMBDA_LOG_FORMAT` is `JSON`. A second install (tests in one process) keeps the
/// first.
pub fn init_subscriber() {
    let json = env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = subscriber(std::io::stdout, json).try_init();
}

/// The subscriber [`init_subscriber`] installs, with another writer: tests hold the log
/// shape that alarms and metric filters read to the production one.
pub fn subscriber<W>(writer: W, json: bool) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let level = env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| env::var("RUST_LOG"))
        .ok()
        .and_then(|level| LevelFilter::from_str(&level).ok())
        .unwrap_or(LevelFilter::INFO);
    // A level and the ceiling, not an `EnvFilter`: its directive syntax would bring a regex
    // engine (regex-automata) into every binary for per-target levels nobody sets on Lambda.
    let filter =
        filter_fn(move |metadata| *metadata.level() <= level && below_the_secret_ceiling(metadata));
    let builder = subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_max_level(level)
        .with_writer(writer);
    if json {
        Box::new(builder.json().finish().with(filter))
    } else {
        Box::new(builder.finish().with(filter))
    }
}

/// Whether an event may be logged: any level from this project's code, at most INFO from
/// every other crate (the AWS SDK, the Lambda runtime, hyper, rustls, ...).
pub fn below_the_secret_ceiling(metadata: &Metadata<'_>) -> bool {
    is_own_code(metadata.target()) || *metadata.level() <= Level::INFO
}

fn is_own_code(target: &str) -> bool {
    target == "common" || target.starts_with("common::")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_crate_counts_as_own_code() {
        assert!(is_own_code("common"));
        assert!(is_own_code("common::api::webhooks"));
        assert!(!is_own_code("commonly"));
        assert!(!is_own_code("aws_smithy_runtime::client::orchestrator"));
        assert!(!is_own_code("lambda_runtime"));
    }
}
