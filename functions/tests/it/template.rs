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

#[test]
fn every_template_binary_exists_and_every_lambda_is_deployed() {
    let workspace: BTreeSet<String> = workspace_lambdas().into_iter().collect();
    let template = template_binaries();
    assert_eq!(template.len(), 8, "{template:?}");
    assert_eq!(template, workspace);
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    assert_eq!(
        text.matches("BuildMethod: rust-cargolambda").count(),
        template.len()
    );
}
