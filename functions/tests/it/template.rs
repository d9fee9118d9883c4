//! The SAM template and the workspace agree on which Lambda functions exist.

use std::collections::BTreeSet;

use crate::events::repo_root;

/// The local runner is a binary of the workspace, not a Lambda.
const NOT_A_LAMBDA: &str = "webhooks-local";

pub fn workspace_lambdas() -> Vec<String> {
    std::fs::read_dir(repo_root().join("functions/src/bin"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".rs").map(str::to_owned))
        .filter(|name| name != NOT_A_LAMBDA)
        .collect()
}

fn template_binaries() -> BTreeSet<String> {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    template
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Binary:"))
        .map(|name| name.trim().trim_matches('"').to_owned())
        .collect()
}

/// The value after `key:` on the first line that has it.
fn setting(template: &str, key: &str) -> String {
    template
        .lines()
        .find_map(|line| line.trim().strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} not in template.yaml"))
        .trim()
        .trim_matches('"')
        .to_owned()
}

#[test]
fn the_queues_fit_the_delivery_model() {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let _: common::domain::retry::RetrySchedule = setting(&template, "WEBHOOKS_RETRY_SCHEDULE:")
        .parse()
        .unwrap();
    let max_receive_count: u32 = setting(&template, "maxReceiveCount:").parse().unwrap();
    assert_eq!(
        max_receive_count,
        common::domain::delivery::MAX_RECEIVES,
        "the redrive catches poison messages only, after the receives the local queue allows"
    );
    assert!(
        !template.contains("ChangeMessageVisibility"),
        "retries wait out of the in-flight pool, not behind a visibility timeout"
    );
    // A queue message lives one hop at most: its delay, then a few receives.
    let visibility: u64 = setting(&template, "VisibilityTimeout:").parse().unwrap();
    let retention: u64 = setting(&template, "MessageRetentionPeriod:")
        .parse()
        .unwrap();
    let longest =
        common::ports::MAX_QUEUE_DELAY.as_secs() + visibility * u64::from(max_receive_count);
    assert!(
        longest < retention,
        "SQS would expire a message ({retention} s) before its last receive ({longest} s)"
    );
    let deliver = &template[template.find("  DeliverWebhooksFunction:").unwrap()..];
    let timeout: u64 = setting(deliver, "Timeout:").parse().unwrap();
    assert!(
        timeout <= visibility,
        "SQS requires the visibility timeout to cover the function's"
    );
}

#[test]
fn every_template_binary_exists_and_every_lambda_is_deployed() {
    let workspace: BTreeSet<String> = workspace_lambdas().into_iter().collect();
    let template = template_binaries();
    assert_eq!(template.len(), 19, "{template:?}");
    assert_eq!(template, workspace);
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    assert_eq!(
        text.matches("BuildMethod: rust-cargolambda").count(),
        template.len()
    );
}

/// The metrics are EMF log lines, which Lambda's log-level filter counts as INFO: a level
/// above INFO would drop every metric.
#[test]
fn no_allowed_log_level_drops_the_metrics() {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let parameter = &template[template.find("  LogLevel:").unwrap()..];
    let allowed = setting(parameter, "AllowedValues:");
    let levels: Vec<&str> = allowed
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(str::trim)
        .collect();
    assert!(!levels.is_empty());
    for level in levels {
        assert!(["TRACE", "DEBUG", "INFO"].contains(&level), "{level}");
    }
}
