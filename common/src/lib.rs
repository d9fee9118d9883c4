//! Everything of the webhook platform that is not a `main`: the domain, the ports and their
//! adapters, configuration, and the handlers the Lambda binaries and the local runner serve.

pub mod adapters;
pub mod api;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod local;
pub mod metrics;
pub mod ports;
pub mod publish;
pub mod recover;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod time;
pub mod tls;
