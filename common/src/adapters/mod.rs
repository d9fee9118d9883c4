//! Adapters for the ports: `aws` (DynamoDB, SQS, KMS through aws-sdk-rust) and `embedded`
//! (in-process, for the local runner and tests). Both pass the same contract tests.

pub mod aws;
pub mod embedded;
