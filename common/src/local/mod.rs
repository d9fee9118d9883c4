//! The local runner: the whole system on 127.0.0.1 with embedded adapters and no AWS account.
//! The API routes call the very handlers the Lambdas run; the delivery worker runs in-process on
//! a queue with the SQS semantics that matter.

pub mod jwt;
mod receiver;
mod server;
mod tools;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::adapters::aws::{
    load_sdk_config, DynamoStore, KmsCipher, SqsConsumer, SqsDeliveryQueue,
};
use crate::adapters::embedded::{LocalCipher, LocalQueue, MemoryStore};
use crate::config::{self, ApiConfig, ConfigError, DeliveryConfig, ProcessEnv, Source};
use crate::delivery::Deliverer;
use crate::domain::delivery::MAX_RECEIVES;
use crate::domain::id::random_hex;
use crate::domain::OrgId;
use crate::metrics::Metrics;
use crate::ports::{
    BookingStore, DeliveryLog, DeliveryQueue, EndpointStore, EventOutbox, SecretCipher,
};
use crate::publish::relay_pending_events;

pub use server::LocalApi;

pub const JWT_SECRET_VAR: &str = "WEBHOOKS_LOCAL_JWT_SECRET";
pub const DEFAULT_PORT: u16 = 3000;
/// How long a received message stays hidden before the local queue hands it out again.
const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN_TTL_SECS: i64 = 30 * 24 * 3600;
/// How often the in-process relay publishes what the outbox still holds.
const RELAY_INTERVAL: Duration = Duration::from_secs(5);
/// Added to the publish timeout to make the relay's minimum event age.
const RELAY_MARGIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

/// `webhooks-local`: the whole system on this machine, and the tools to try it. No `Debug`:
/// some commands hold the JWT secret.
#[derive(Parser)]
#[command(
    name = "webhooks-local",
    version,
    about = "The webhook platform on this machine: the API, the delivery worker and the outbox relay, on embedded adapters (no AWS account needed)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: `serve`.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, the delivery worker and the outbox relay (the default)
    Serve(ServeArgs),
    /// Print a bearer token for an organization, signed with WEBHOOKS_LOCAL_JWT_SECRET
    Token(TokenArgs),
    /// A webhook receiver that prints every request and verifies its signature
    Receive(ReceiveArgs),
    /// Create a booking for an organization on a running webhooks-local, which publishes
    /// booking.created to the organization's endpoints
    Trigger(TriggerArgs),
    /// Register an endpoint for an organization on a running webhooks-local, print its
    /// secret, and forward every verified delivery to a local URL (Ctrl-C removes the endpoint)
    Listen(ListenArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Port on 127.0.0.1 (0: any free port)
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Production URL rules: https only, no private or loopback targets
    #[arg(long)]
    strict: bool,
    /// Use DynamoDB, KMS and SQS through the standard AWS environment (TABLE_NAME, KMS_KEY_ID,
    /// DELIVERY_QUEUE_URL, DEAD_LETTER_QUEUE_URL) instead of the embedded adapters
    #[arg(long)]
    aws: bool,
}

/// Where a running webhooks-local is, and as whom to call it.
#[derive(clap::Args)]
struct Caller {
    /// The organization (the token's org claim)
    #[arg(long, default_value = "demo", value_parser = parse_org)]
    org: OrgId,
    /// Base URL of the running webhooks-local
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    api: String,
    /// The secret the running webhooks-local verifies tokens with
    #[arg(long, env = JWT_SECRET_VAR, hide_env_values = true)]
    jwt_secret: String,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The organization the token acts for
    #[arg(long, value_parser = parse_org)]
    org: OrgId,
    /// The secret the running webhooks-local verifies tokens with
    #[arg(long, env = JWT_SECRET_VAR, hide_env_values = true)]
    jwt_secret: String,
}

#[derive(clap::Args)]
struct ReceiveArgs {
    /// Port on 127.0.0.1 (0: any free port)
    #[arg(long, env = "PORT", default_value_t = 9000)]
    port: u16,
    /// The endpoint's whsec_ secret: requests whose signature does not verify get 401
    #[arg(long)]
    secret: Option<String>,
    /// Status to answer verified requests with
    #[arg(long, default_value_t = 204, value_parser = clap::value_parser!(u16).range(100..=599))]
    status: u16,
}

#[derive(clap::Args)]
struct TriggerArgs {
    #[command(flatten)]
    caller: Caller,
}

#[derive(clap::Args)]
struct ListenArgs {
    /// Where verified deliveries are forwarded (their body and webhook-* headers)
    #[arg(long, value_parser = parse_http_url)]
    forward_to: String,
    /// Port on 127.0.0.1 for the endpoint this registers (0: any free port)
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[command(flatten)]
    caller: Caller,
}

fn parse_org(text: &str) -> Result<OrgId, String> {
    OrgId::parse(text).ok_or_else(|| format!("not a valid organization id: {}", OrgId::RULE))
}

fn parse_http_url(text: &str) -> Result<String, String> {
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url.to_string()),
        _ => Err("expected an http:// or https:// URL".into()),
    }
}

/// Entry point of the `webhooks-local` binary: parses the command line (clap prints help,
/// version and usage errors itself and exits) and runs the command.
pub async fn run_cli(args: impl IntoIterator<Item = String>) -> Result<(), LocalError> {
    let cli = Cli::parse_from(std::iter::once("webhooks-local".to_owned()).chain(args));
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Token(args)) => {
            let api = ApiConfig::from_source(&ProcessEnv)?;
            println!(
                "{}",
                issue_token(args.jwt_secret.as_bytes(), &api.org_id_claim, &args.org)?
            );
            Ok(())
        }
        Some(Command::Receive(args)) => {
            let listener = bind(args.port).await?;
            receiver::receive(listener, args.secret.as_deref(), args.status).await
        }
        Some(Command::Trigger(args)) => tools::trigger(&args.caller.into_client()?).await,
        Some(Command::Listen(args)) => {
            let listener = bind(args.port).await?;
            tools::listen(listener, &args.caller.into_client()?, &args.forward_to).await
        }
    }
}

impl Caller {
    fn into_client(self) -> Result<tools::ApiClient, LocalError> {
        let claim = ApiConfig::from_source(&ProcessEnv)?.org_id_claim;
        let token = issue_token(self.jwt_secret.as_bytes(), &claim, &self.org)?;
        tools::ApiClient::new(self.api, token, self.org)
    }
}

/// Binds 127.0.0.1:`port`; a port in use says which and how to choose another.
async fn bind(port: u16) -> Result<TcpListener, LocalError> {
    match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await {
        Ok(listener) => Ok(listener),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Err(LocalError::Usage(
            format!("port {port} on 127.0.0.1 is already in use (another webhooks-local?): choose another with --port N (or PORT=N), or --port 0 for any free port"),
        )),
        Err(error) => Err(LocalError::Io(error)),
    }
}

fn issue_token(secret: &[u8], claim: &str, org: &OrgId) -> Result<String, LocalError> {
    jwt::issue(secret, claim, org.as_str(), TOKEN_TTL_SECS)
        .map_err(|e| LocalError::Setup(e.to_string()))
}

/// The environment, with the local runner's defaults for the target rules: `--strict` forces
/// the production rules; in memory they are relaxed unless set (so a receiver on
/// http://localhost works); with `--aws` they are the production ones unless set, since the
/// endpoints land in a real table that deployed functions deliver from.
struct LocalSource {
    strict: bool,
    relaxed_by_default: bool,
}

impl Source for LocalSource {
    fn get(&self, name: &str) -> Option<String> {
        let relaxable =
            name == config::ALLOW_PRIVATE_TARGETS || name == config::ALLOW_INSECURE_URLS;
        match (relaxable, self.strict) {
            (true, true) => Some("0".into()),
            (true, false) => ProcessEnv
                .get(name)
                .or_else(|| self.relaxed_by_default.then(|| "1".into())),
            (false, _) => ProcessEnv.get(name),
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), LocalError> {
    let ServeArgs { port, strict, aws } = args;
    let source = LocalSource {
        strict,
        relaxed_by_default: !aws,
    };
    let mut api_config = ApiConfig::from_source(&source)?;
    let mut delivery_config = DeliveryConfig::from_source(&source)?;
    // Totals in memory, for GET /local/metrics, instead of EMF lines in the terminal.
    let metrics = Metrics::in_memory(api_config.metrics.namespace());
    api_config.metrics = metrics.clone();
    delivery_config.metrics = metrics;
    let (jwt_secret, generated) = match ProcessEnv.get(JWT_SECRET_VAR) {
        Some(secret) => (secret, false),
        None => {
            let secret = random_hex(24).map_err(|e| LocalError::Setup(e.to_string()))?;
            (secret, true)
        }
    };
    let listener = bind(port).await?;
    let demo = OrgId::parse("demo").ok_or_else(|| LocalError::Setup("demo org".into()))?;
    let token = issue_token(jwt_secret.as_bytes(), &api_config.org_id_claim, &demo)?;
    let banner = Banner {
        address: listener.local_addr()?,
        strict,
        aws,
        delivery: &delivery_config,
        jwt_secret: &jwt_secret,
        generated,
        token: &token,
    };
    let setup = |e: &dyn std::fmt::Display| LocalError::Setup(e.to_string());
    // Older than anything the producer may still be publishing itself.
    let relay_min_age = api_config.publish_timeout + RELAY_MARGIN;

    if aws {
        let sdk = load_sdk_config().await.map_err(|e| setup(&e))?;
        let store =
            DynamoStore::from_sdk_config(&sdk, config::required(&ProcessEnv, config::TABLE_NAME)?);
        let cipher =
            KmsCipher::from_sdk_config(&sdk, config::required(&ProcessEnv, config::KMS_KEY_ID)?);
        let queue_url = config::required(&ProcessEnv, config::DELIVERY_QUEUE_URL)?;
        let dead_letter_url = config::required(&ProcessEnv, config::DEAD_LETTER_QUEUE_URL)?;
        let producer = Arc::new(SqsDeliveryQueue::from_sdk_config(&sdk, &queue_url));
        let consumer = Arc::new(SqsConsumer::from_sdk_config(
            &sdk,
            queue_url,
            dead_letter_url,
        ));
        let deliverer = Deliverer::new(store.clone(), cipher.clone(), delivery_config.clone())
            .map_err(|e| setup(&e))?;
        let api = LocalApi::new(
            store.clone(),
            cipher,
            producer.clone(),
            api_config,
            jwt_secret.as_bytes().to_vec(),
            None,
        );
        banner.print();
        run_system(
            listener,
            api,
            deliverer,
            consumer,
            store,
            producer,
            relay_min_age,
        )
        .await;
        println!("webhooks-local stopped (messages still queued stay in SQS)");
    } else {
        let store = MemoryStore::new();
        let cipher = LocalCipher::generate().map_err(|e| setup(&e))?;
        let queue = Arc::new(LocalQueue::new(VISIBILITY_TIMEOUT, MAX_RECEIVES));
        let deliverer = Deliverer::new(store.clone(), cipher.clone(), delivery_config.clone())
            .map_err(|e| setup(&e))?;
        let api = LocalApi::new(
            store.clone(),
            cipher,
            queue.clone(),
            api_config,
            jwt_secret.as_bytes().to_vec(),
            Some(queue.clone()),
        );
        banner.print();
        run_system(
            listener,
            api,
            deliverer,
            queue.clone(),
            store,
            queue.clone(),
            relay_min_age,
        )
        .await;
        let left = queue.len().unwrap_or(0);
        let dead = queue.dead_letters().map(|d| d.len()).unwrap_or(0);
        if left > 0 {
            tracing::warn!("stopped with {left} message(s) still queued and not delivered (the embedded queue is in memory: they are discarded)");
        }
        println!(
            "webhooks-local stopped: {left} message(s) left undelivered, {dead} dead-lettered"
        );
    }
    Ok(())
}

/// Serves the API, runs the delivery worker and the outbox relay, and stops them all on Ctrl-C
/// or SIGTERM, letting the batch under way finish.
async fn run_system<S, C, Q, W>(
    listener: TcpListener,
    api: LocalApi<S, C, Q>,
    deliverer: Deliverer<S, C>,
    consumer: Arc<W>,
    store: S,
    producer: Arc<Q>,
    relay_min_age: Duration,
) where
    S: EndpointStore
        + BookingStore
        + EventOutbox
        + DeliveryLog
        + crate::ports::IdempotencyStore
        + Clone
        + 'static,
    C: SecretCipher + 'static,
    Q: DeliveryQueue + 'static,
    W: worker::Receiver + 'static,
{
    let (stop, stopped) = watch::channel(false);
    let metrics = api.metrics().clone();
    let worker = tokio::spawn(worker::run(Arc::new(deliverer), consumer, stopped.clone()));
    let relay = tokio::spawn({
        let mut stopped = stopped.clone();
        async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RELAY_INTERVAL) => {}
                    _ = stopped.changed() => return,
                }
                // Stopping mid-run is safe: what was not relayed stays in the outbox.
                tokio::select! {
                    relayed = relay_pending_events(&store, producer.as_ref(), relay_min_age) => {
                        match relayed {
                            Ok(report) => metrics.emit(&report.metrics()),
                            Err(error) => tracing::error!(%error, "outbox relay failed"),
                        }
                    }
                    _ = stopped.changed() => return,
                }
            }
        }
    });
    let server = tokio::spawn(server::run(listener, Arc::new(api), stopped));

    shutdown_signal().await;
    tracing::info!("shutting down: finishing the deliveries under way");
    let _ = stop.send(true);
    let _ = server.await;
    let _ = relay.await;
    let _ = worker.await;
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// What the start banner tells a person.
struct Banner<'a> {
    address: SocketAddr,
    strict: bool,
    aws: bool,
    delivery: &'a DeliveryConfig,
    jwt_secret: &'a str,
    generated: bool,
    token: &'a str,
}

impl Banner<'_> {
    fn print(&self) {
        let Banner {
            address,
            strict,
            aws,
            delivery,
            jwt_secret,
            generated,
            token,
        } = self;
        let base = format!("http://{address}");
        let adapters = if *aws {
            "aws (DynamoDB, KMS, SQS through the standard AWS environment, AWS_ENDPOINT_URL included)"
        } else {
            "embedded (in-memory store, local AES-GCM cipher, in-process queue); nothing persists"
        };
        let targets = if *strict {
            "strict: https only, private and loopback targets refused (production rules)".to_owned()
        } else {
            format!(
                "relaxed for local development: private/loopback targets {}, plain http {} (use --strict for production rules)",
                if delivery.targets.allow_private { "ALLOWED" } else { "refused" },
                if delivery.targets.allow_insecure { "ALLOWED" } else { "refused" },
            )
        };
        let secret_line = if *generated {
            format!("generated for this run; set {JWT_SECRET_VAR} to keep tokens across restarts:\n    export {JWT_SECRET_VAR}={jwt_secret}")
        } else {
            format!("from {JWT_SECRET_VAR}")
        };
        let dead_letters = if *aws {
            "  # Dead letters are in the SQS dead-letter queue (DEAD_LETTER_QUEUE_URL).".to_owned()
        } else {
            format!(
                "  # Dead letters of your org (restart with WEBHOOKS_RETRY_SCHEDULE=1s,2s and add a receiver\n  # started with --status 500 to see one within seconds):\n  curl -s {base}/local/dead-letters -H \"authorization: Bearer $TOKEN\""
            )
        };
        // Under --strict a loopback receiver is refused, so the example is a public https URL.
        let (example_url, receiver_hint) = if *strict {
            (
                "https://hooks.example.com/in".to_owned(),
                "  # 2. --strict refuses http and loopback targets: use a public https receiver, or run\n  #    without --strict to try webhooks-local receive / listen on this machine.".to_owned(),
            )
        } else {
            (
                "http://127.0.0.1:9000/hook".to_owned(),
                format!("  # 2. In a third terminal, a receiver that checks signatures with that secret:\n  webhooks-local receive --port 9000 --secret whsec_...\n  #    (or in one step: webhooks-local listen --api {base} --org demo --forward-to http://127.0.0.1:8080/your/handler)"),
            )
        };
        println!(
            r#"
webhooks-local listening on {base}
  adapters:        {adapters}
  targets:         {targets}
  retry schedule:  {schedule} ({attempts} attempts, then the dead-letter list)
  JWT secret:      {secret_line}

Try it (in another terminal):
  export TOKEN={token}
  # 1. Register an endpoint. The answer holds its secret, shown this once.
  curl -s -X POST {base}/webhooks -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{{"url":"{example_url}","events":["booking.created"]}}'
{receiver_hint}
  # 3. Post a booking: its booking.created goes to every subscribed endpoint, this log shows the attempt.
  curl -s -X POST {base}/bookings -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{{"customerName":"Ada","customerEmail":"ada@example.com","startTime":"2030-01-01T10:00:00Z","endTime":"2030-01-01T11:00:00Z"}}'
{dead_letters}
"#,
            schedule = delivery.schedule,
            attempts = delivery.schedule.max_attempts(),
        );
    }
}
