//! The whole system on one machine, with embedded adapters: `webhooks-local --help`.

#[tokio::main]
async fn main() {
    common::telemetry::init_subscriber();
    if let Err(error) = common::local::run_cli(std::env::args().skip(1)).await {
        eprintln!("webhooks-local: {error}");
        std::process::exit(2);
    }
}
