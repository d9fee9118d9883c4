//! The HTTP client that POSTs webhooks: built once per container, rustls, bounded timeouts, no
//! redirects, no proxies, and a resolver that only ever hands the connector vetted addresses.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use url::{Host, Url};

use crate::config::DeliveryConfig;
use crate::domain::delivery::{truncate, ErrorClass, MAX_RECORDED_RESPONSE};
use crate::domain::retry::parse_retry_after;
use crate::domain::target::TargetPolicy;

pub const USER_AGENT_VALUE: &str = concat!("serverless-webhooks/", env!("CARGO_PKG_VERSION"));
/// How much of a subscriber's response body is read (for the attempt record); the rest is
/// dropped unread.
pub const MAX_RESPONSE_BODY: usize = MAX_RECORDED_RESPONSE;

/// What one POST came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostOutcome {
    /// A 2xx.
    Delivered { status: u16 },
    /// 410 Gone: the subscriber asks us to stop.
    Gone,
    /// The target rules refused the URL or every address it resolves to; nothing was sent.
    Refused { error: String },
    /// Any other status, a timeout or a connection error.
    Failed {
        status: Option<u16>,
        class: ErrorClass,
        error: String,
        /// The subscriber's `Retry-After` (429 and 503), seconds or an HTTP date.
        retry_after: Option<Duration>,
    },
}

/// A POST's outcome, how long it took, and the start of what the subscriber answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostResult {
    pub outcome: PostOutcome,
    pub latency: Duration,
    /// Up to [`MAX_RESPONSE_BODY`] bytes, lossy UTF-8; `None` when there was no response.
    pub response_body: Option<String>,
}

/// The signed request, ready to send.
pub struct SignedRequest<'a> {
    pub url: &'a str,
    pub message_id: &'a str,
    pub timestamp: i64,
    pub signature: &'a str,
    /// The endpoint's custom headers, sent before ours (none of them can name one of ours:
    /// see [`RESERVED_HEADERS`](crate::domain::endpoint::RESERVED_HEADERS)).
    pub headers: &'a crate::domain::endpoint::CustomHeaders,
    /// W3C `traceparent` of this attempt, and the producer's `tracestate`.
    pub traceparent: Option<String>,
    pub tracestate: Option<&'a str>,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to no public address")]
struct NoPublicAddress {
    host: String,
}

/// Resolves with the system resolver, then keeps only the addresses the policy allows. The
/// connector dials exactly these, so a name cannot be re-resolved to something else between
/// the check and the connection (DNS rebinding).
struct VettingResolver {
    policy: TargetPolicy,
}

impl Resolve for VettingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let vetted = resolve_vetted(policy, &host).await?;
            Ok(Box::new(vetted.into_iter()) as Addrs)
        })
    }
}

/// Resolves `host` and keeps the addresses `policy` allows; an error when none is left.
pub async fn resolve_vetted(
    policy: TargetPolicy,
    host: &str,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let resolved = tokio::net::lookup_host((host, 0)).await?;
    let vetted: Vec<SocketAddr> = resolved
        .filter(|addr| policy.allows_address(addr.ip()))
        .collect();
    if vetted.is_empty() {
        return Err(Box::new(NoPublicAddress {
            host: host.to_owned(),
        }));
    }
    Ok(vetted)
}

pub struct WebhookClient {
    http: reqwest::Client,
    policy: TargetPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
    #[error("could not build the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

impl WebhookClient {
    pub fn new(config: &DeliveryConfig) -> Result<Self, ClientBuildError> {
        let http = crate::tls::reqwest_builder()?
            .dns_resolver(VettingResolver {
                policy: config.targets,
            })
            .redirect(Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(USER_AGENT_VALUE)
            // A Lambda container may be frozen between invocations while a subscriber closes
            // the idle connection; reusing it would burn an attempt on "connection closed".
            .pool_idle_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            http,
            policy: config.targets,
        })
    }

    /// The URL rules again at delivery time: the stored URL may predate a stricter setting, and
    /// an IP literal never reaches the resolver.
    fn vet_url(&self, url: &str) -> Result<Url, String> {
        let url = self
            .policy
            .check_url(url)
            .map_err(|e| format!("refused target: URL {e}"))?;
        let literal: Option<IpAddr> = match url.host() {
            Some(Host::Ipv4(ip)) => Some(ip.into()),
            Some(Host::Ipv6(ip)) => Some(ip.into()),
            _ => None,
        };
        if literal.is_some_and(|ip| !self.policy.allows_address(ip)) {
            return Err("refused target: not a public address".into());
        }
        Ok(url)
    }

    pub async fn post(&self, request: SignedRequest<'_>) -> PostResult {
        let started = tokio::time::Instant::now();
        let (outcome, response_body) = self.send(request).await;
        PostResult {
            outcome,
            latency: started.elapsed(),
            response_body,
        }
    }

    async fn send(&self, request: SignedRequest<'_>) -> (PostOutcome, Option<String>) {
        let url = match self.vet_url(request.url) {
            Ok(url) => url,
            Err(error) => return (PostOutcome::Refused { error }, None),
        };
        let mut post = self.http.post(url);
        for (name, value) in request.headers {
            post = post.header(name, value);
        }
        if let Some(traceparent) = &request.traceparent {
            post = post.header("traceparent", traceparent);
        }
        if let Some(tracestate) = request.tracestate {
            post = post.header("tracestate", tracestate);
        }
        let sent = post
            .header("webhook-id", request.message_id)
            .header("webhook-timestamp", request.timestamp.to_string())
            .header("webhook-signature", request.signature)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .body(request.body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => return (describe_send_error(&error), None),
        };
        let status = response.status();
        // RFC 9110 gives Retry-After its meaning on 503 and (RFC 6585) 429; elsewhere it is
        // ignored rather than let any answer stall the schedule.
        let asks_to_wait = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .filter(|_| asks_to_wait)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
        let body = read_body_start(&mut response).await;
        let outcome = if status.is_success() {
            PostOutcome::Delivered {
                status: status.as_u16(),
            }
        } else if status == StatusCode::GONE {
            PostOutcome::Gone
        } else {
            let mut error = format!("HTTP {}", status.as_u16());
            let snippet = one_line(&body, 200);
            if status.is_redirection() {
                error.push_str(" (redirects are not followed)");
            } else if !snippet.is_empty() {
                error.push_str(": ");
                error.push_str(&snippet);
            }
            PostOutcome::Failed {
                status: Some(status.as_u16()),
                class: ErrorClass::HttpStatus,
                error,
                retry_after,
            }
        };
        (outcome, Some(body))
    }
}

/// Up to [`MAX_RESPONSE_BODY`] bytes of the body, lossy UTF-8, cut at a character boundary.
async fn read_body_start(response: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_RESPONSE_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(MAX_RESPONSE_BODY);
    truncate(&String::from_utf8_lossy(&bytes), MAX_RESPONSE_BODY)
}

/// The first `max` characters of `text`, its whitespace runs made single spaces.
fn one_line(text: &str, max: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(max).collect()
}

fn describe_send_error(error: &reqwest::Error) -> PostOutcome {
    let (class, kind) = if error.is_timeout() {
        (ErrorClass::Timeout, "timed out")
    } else if error.is_connect() {
        (ErrorClass::Connection, "connection failed")
    } else {
        (ErrorClass::Request, "request failed")
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        if inner.downcast_ref::<NoPublicAddress>().is_some() {
            return PostOutcome::Refused {
                error: format!("refused target: {inner}"),
            };
        }
        detail = inner.to_string();
        source = inner.source();
    }
    let error = if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    };
    PostOutcome::Failed {
        status: None,
        class,
        error,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_unless_private_targets_are_allowed() {
        let error = resolve_vetted(TargetPolicy::STRICT, "localhost")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no public address"), "{error}");
        let addresses = resolve_vetted(TargetPolicy::LOCAL_DEVELOPMENT, "localhost")
            .await
            .unwrap();
        assert!(
            addresses.iter().all(|a| a.ip().is_loopback()),
            "{addresses:?}"
        );
    }
}
