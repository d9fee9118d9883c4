//! The whole system on one machine, with embedded adapters: `webhooks-local --help`.
use lambda_runtime::tracing;

#[tokio::main]
async fn main() {
    tracing::init_default_subscriber();
    if let Err(error) = common::local::run_cli(std::env::args().skip(1).collect()).await {
        eprintln!("webhooks-local: {error}");
        std::process::exit(2);
    }
}
