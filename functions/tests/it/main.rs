//! Integration tests, in one binary so the SDK-heavy dependency tree links once. The `aws`
//! adapters run against moto server (started by ./scripts/test) through aws-sdk-rust.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod contract_cipher;
mod contract_queue;
mod contract_store;
mod engine;
mod events;
mod lifecycle;
mod local_runner;
mod log_api;
mod logs;
mod observability;
mod pipeline;
mod template;
