//! The smallest `lambda_runtime` function: the baseline `scripts/bench init` measures every
//! function's cold start against (same crate versions, same profile, same runtime emulator).
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<_, Error>(event.payload)
    }))
    .await
}
