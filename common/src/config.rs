//! Settings, read once from the environment at init. A missing or malformed setting stops the
//! function at init with a message naming it, instead of failing on the first request.

use std::time::Duration;

use crate::domain::delivery::CircuitPolicy;
use crate::domain::retry::{parse_duration, RetrySchedule};
use crate::domain::target::TargetPolicy;
use crate::metrics::{Metrics, DEFAULT_NAMESPACE};

pub const TABLE_NAME: &str = "TABLE_NAME";
pub const KMS_KEY_ID: &str = "KMS_KEY_ID";
pub const DELIVERY_QUEUE_URL: &str = "DELIVERY_QUEUE_URL";
pub const DEAD_LETTER_QUEUE_URL: &str = "DEAD_LETTER_QUEUE_URL";
pub const ORG_ID_CLAIM: &str = "ORG_ID_CLAIM";
pub const ALLOW_PRIVATE_TARGETS: &str = "WEBHOOKS_ALLOW_PRIVATE_TARGETS";
pub const ALLOW_INSECURE_URLS: &str = "WEBHOOKS_ALLOW_INSECURE_URLS";
pub const RETRY_SCHEDULE: &str = "WEBHOOKS_RETRY_SCHEDULE";
pub const CONNECT_TIMEOUT_SECS: &str = "WEBHOOKS_CONNECT_TIMEOUT_SECS";
pub const REQUEST_TIMEOUT_SECS: &str = "WEBHOOKS_REQUEST_TIMEOUT_SECS";
pub const DELIVERY_CONCURRENCY: &str = "WEBHOOKS_DELIVERY_CONCURRENCY";
pub const SECRET_CACHE_TTL_SECS: &str = "WEBHOOKS_SECRET_CACHE_TTL_SECS";
pub const PUBLISH_TIMEOUT_SECS: &str = "WEBHOOKS_PUBLISH_TIMEOUT_SECS";
pub const RELAY_MIN_AGE_SECS: &str = "WEBHOOKS_RELAY_MIN_AGE_SECS";
pub const MAX_ENDPOINTS_PER_ORG: &str = "WEBHOOKS_MAX_ENDPOINTS_PER_ORG";
pub const CIRCUIT_FAILURES: &str = "WEBHOOKS_CIRCUIT_FAILURES";
pub const CIRCUIT_OPEN_SECS: &str = "WEBHOOKS_CIRCUIT_OPEN_SECS";
pub const DISABLE_AFTER: &str = "WEBHOOKS_DISABLE_AFTER";
pub const RETENTION_DAYS: &str = "WEBHOOKS_RETENTION_DAYS";
pub const METRICS_NAMESPACE: &str = "WEBHOOKS_METRICS_NAMESPACE";

pub const DEFAULT_ORG_ID_CLAIM: &str = "org_id";
pub const DEFAULT_MAX_ENDPOINTS_PER_ORG: u64 = 100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("the environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("the environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where settings come from: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Source for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name).filter(|v| !v.is_empty())
    }
}

pub fn required(source: &impl Source, name: &'static str) -> Result<String, ConfigError> {
    source.get(name).ok_or(ConfigError::Missing(name))
}

fn flag(source: &impl Source, name: &'static str) -> Result<bool, ConfigError> {
    match source.get(name).as_deref() {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            name,
            reason: format!("expected 1 or 0, got {other:?}"),
        }),
    }
}

fn number(
    source: &impl Source,
    name: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let Some(text) = source.get(name) else {
        return Ok(default);
    };
    let value: u64 = text.parse().map_err(|_| ConfigError::Invalid {
        name,
        reason: format!("expected a whole number, got {text:?}"),
    })?;
    if !range.contains(&value) {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("must be between {} and {}", range.start(), range.end()),
        });
    }
    Ok(value)
}

/// Which targets are allowed (both relaxations off unless set to 1).
pub fn target_policy(source: &impl Source) -> Result<TargetPolicy, ConfigError> {
    Ok(TargetPolicy {
        allow_private: flag(source, ALLOW_PRIVATE_TARGETS)?,
        allow_insecure: flag(source, ALLOW_INSECURE_URLS)?,
    })
}

/// What every API handler needs besides its ports.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The JWT claim that names the organization.
    pub org_id_claim: String,
    pub targets: TargetPolicy,
    /// How long `POST /bookings` waits for publishing before answering anyway.
    pub publish_timeout: Duration,
    /// Most endpoints one org may have (`POST /webhooks` answers 409 past it). It bounds the
    /// fan-out of one event, so a publish works in bounded memory and time.
    pub max_endpoints_per_org: usize,
    /// How long the delivery log keeps messages: how far back a recovery may reach.
    pub retention: Duration,
    /// Where publishing reports `EventsPublished`, `MessagesEnqueued`, `PublishFailures`.
    pub metrics: Metrics,
}

/// EMF on standard output under `WEBHOOKS_METRICS_NAMESPACE` (default `Webhooks`; 1 to 255
/// characters, CloudWatch's limit for a namespace, not starting with `AWS/`).
pub fn metrics(source: &impl Source) -> Result<Metrics, ConfigError> {
    let namespace = source
        .get(METRICS_NAMESPACE)
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    if namespace.is_empty() || namespace.len() > 255 || namespace.starts_with("AWS/") {
        return Err(ConfigError::Invalid {
            name: METRICS_NAMESPACE,
            reason: "must be 1 to 255 characters and not start with AWS/".into(),
        });
    }
    Ok(Metrics::stdout(namespace))
}

/// How long attempt records and message states are kept (`WEBHOOKS_RETENTION_DAYS`, 1 to 365,
/// default 30).
pub fn retention(source: &impl Source) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(
        number(source, RETENTION_DAYS, 30, 1..=365)? * 86_400,
    ))
}

impl ApiConfig {
    pub fn from_source(source: &impl Source) -> Result<Self, ConfigError> {
        Ok(Self {
            org_id_claim: source
                .get(ORG_ID_CLAIM)
                .unwrap_or_else(|| DEFAULT_ORG_ID_CLAIM.to_owned()),
            targets: target_policy(source)?,
            // The API functions time out at 15 s, and the booking's own write may take 6 s first.
            publish_timeout: Duration::from_secs(number(source, PUBLISH_TIMEOUT_SECS, 5, 1..=8)?),
            max_endpoints_per_org: number(
                source,
                MAX_ENDPOINTS_PER_ORG,
                DEFAULT_MAX_ENDPOINTS_PER_ORG,
                1..=10_000,
            )? as usize,
            retention: retention(source)?,
            metrics: metrics(source)?,
        })
    }
}

/// How long an event waits in the outbox before the relay publishes it: long enough that the
/// producer's own publish (bounded by the publish timeout) has finished.
pub fn relay_min_age(source: &impl Source) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(number(
        source,
        RELAY_MIN_AGE_SECS,
        60,
        10..=3600,
    )?))
}

/// What the delivery worker needs besides its ports.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    pub targets: TargetPolicy,
    pub schedule: RetrySchedule,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// How many records of a batch are delivered at once.
    pub concurrency: usize,
    pub secret_cache_ttl: Duration,
    pub circuit: CircuitPolicy,
    /// An endpoint that has failed for this long without a single success is disabled
    /// (`disabledReason: "failing"`).
    pub disable_after: Duration,
    /// How long attempt records and message states are kept (the table's TTL).
    pub retention: Duration,
    /// Where delivery reports its metrics (attempts by outcome, latencies, dead letters, ...).
    pub metrics: Metrics,
}

impl DeliveryConfig {
    /// How long the attempts of a batch may take where no invocation deadline sets it (the
    /// local runner): one record's connect and request timeouts and its store and KMS calls.
    pub fn record_budget(&self) -> std::time::Duration {
        self.connect_timeout + self.request_timeout + std::time::Duration::from_secs(8)
    }

    pub fn from_source(source: &impl Source) -> Result<Self, ConfigError> {
        let schedule = match source.get(RETRY_SCHEDULE) {
            None => RetrySchedule::default(),
            Some(text) => text
                .parse()
                .map_err(
                    |e: crate::domain::retry::ScheduleError| ConfigError::Invalid {
                        name: RETRY_SCHEDULE,
                        reason: e.to_string(),
                    },
                )?,
        };
        Ok(Self {
            targets: target_policy(source)?,
            schedule,
            connect_timeout: Duration::from_secs(number(source, CONNECT_TIMEOUT_SECS, 5, 1..=60)?),
            request_timeout: Duration::from_secs(number(
                source,
                REQUEST_TIMEOUT_SECS,
                15,
                // With the store and KMS calls around it, one record stays within its budget.
                1..=20,
            )?),
            concurrency: number(source, DELIVERY_CONCURRENCY, 10, 1..=100)? as usize,
            secret_cache_ttl: Duration::from_secs(number(
                source,
                SECRET_CACHE_TTL_SECS,
                300,
                0..=3600,
            )?),
            circuit: CircuitPolicy {
                failures: number(source, CIRCUIT_FAILURES, 5, 1..=1000)? as u32,
                open_for: Duration::from_secs(number(source, CIRCUIT_OPEN_SECS, 60, 1..=3600)?),
            },
            disable_after: match source.get(DISABLE_AFTER) {
                None => Duration::from_secs(5 * 86_400),
                Some(text) => parse_duration(&text)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| ConfigError::Invalid {
                        name: DISABLE_AFTER,
                        reason: format!("expected a duration like 5d, 36h or 90s, got {text:?}"),
                    })?,
            },
            retention: retention(source)?,
            metrics: metrics(source)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn source(pairs: &[(&str, &str)]) -> impl Source {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn defaults_are_the_production_ones() {
        let api = ApiConfig::from_source(&source(&[])).unwrap();
        assert_eq!(api.org_id_claim, "org_id");
        assert_eq!(api.targets, TargetPolicy::STRICT);
        let delivery = DeliveryConfig::from_source(&source(&[])).unwrap();
        assert_eq!(delivery.schedule, RetrySchedule::default());
        assert_eq!(delivery.request_timeout, Duration::from_secs(15));
        assert_eq!(delivery.connect_timeout, Duration::from_secs(5));
        assert_eq!(delivery.circuit.failures, 5);
        assert_eq!(delivery.disable_after, Duration::from_secs(5 * 86_400));
        assert_eq!(delivery.retention, Duration::from_secs(30 * 86_400));
        let short = DeliveryConfig::from_source(&source(&[(DISABLE_AFTER, "1m30s")])).unwrap();
        assert_eq!(short.disable_after, Duration::from_secs(90));
        let err = DeliveryConfig::from_source(&source(&[(DISABLE_AFTER, "5 days")])).unwrap_err();
        assert!(err.to_string().contains(DISABLE_AFTER));
    }

    #[test]
    fn missing_and_malformed_settings_name_the_variable() {
        assert_eq!(
            required(&source(&[]), TABLE_NAME).unwrap_err().to_string(),
            "the environment variable TABLE_NAME is required but not set"
        );
        let err = ApiConfig::from_source(&source(&[(ALLOW_PRIVATE_TARGETS, "yes")])).unwrap_err();
        assert!(err.to_string().contains(ALLOW_PRIVATE_TARGETS));
        let err =
            DeliveryConfig::from_source(&source(&[(RETRY_SCHEDULE, "5 seconds")])).unwrap_err();
        assert!(err.to_string().contains(RETRY_SCHEDULE));
        let err = DeliveryConfig::from_source(&source(&[(DELIVERY_CONCURRENCY, "0")])).unwrap_err();
        assert!(err.to_string().contains(DELIVERY_CONCURRENCY));
    }

    #[test]
    fn flags_and_claim_name_are_read() {
        let api = ApiConfig::from_source(&source(&[
            (ORG_ID_CLAIM, "custom:org"),
            (ALLOW_PRIVATE_TARGETS, "1"),
            (ALLOW_INSECURE_URLS, "true"),
        ]))
        .unwrap();
        assert_eq!(api.org_id_claim, "custom:org");
        assert!(api.targets.allow_private && api.targets.allow_insecure);
    }
}
