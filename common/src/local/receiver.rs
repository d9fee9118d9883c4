//! A webhook receiver on loopback, for trying the system out: `webhooks-local receive` prints
//! what it is sent, `webhooks-local listen` forwards it. Given the endpoint's secret, each
//! request is verified as a Standard Webhooks receiver does, and refused with 401 if it does
//! not verify, so the sender records a failed attempt.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::LocalError;
use crate::domain::secret::WebhookSecret;
use crate::domain::signature::{verify, VerifyError};
use crate::time::unix_seconds_now;

/// Largest request body a receiver reads.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One request a receiver got.
pub struct Delivery {
    pub method: String,
    pub uri: String,
    /// Every header, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// `None` when no secret was given.
    pub verified: Option<Result<(), VerifyError>>,
}

impl Delivery {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses a `--secret` value.
pub fn parse_secret(secret: Option<&str>) -> Result<Option<WebhookSecret>, LocalError> {
    secret
        .map(WebhookSecret::parse)
        .transpose()
        .map_err(|e| LocalError::Usage(format!("--secret: {e}")))
}

/// Serves `listener` until the process stops: each request is read, verified when there is a
/// `secret`, and handed to `handle`, whose status is the answer.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    secret: Option<WebhookSecret>,
    handle: F,
) -> Result<(), LocalError>
where
    F: Fn(Delivery) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = StatusCode> + Send,
{
    let secret = Arc::new(secret);
    loop {
        let (stream, _) = listener.accept().await?;
        let (secret, handle) = (secret.clone(), handle.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let (secret, handle) = (secret.clone(), handle.clone());
                async move {
                    let (parts, body) = request.into_parts();
                    let body = Limited::new(body, MAX_BODY_BYTES)
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let mut delivery = Delivery {
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(n, v)| {
                                (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect(),
                        body,
                        verified: None,
                    };
                    delivery.verified = secret.as_ref().as_ref().map(|secret| {
                        verify(
                            secret,
                            delivery.header("webhook-id"),
                            delivery.header("webhook-timestamp"),
                            delivery.header("webhook-signature"),
                            &delivery.body_text(),
                            unix_seconds_now(),
                        )
                    });
                    let mut response = hyper::Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = handle(delivery).await;
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `webhooks-local receive`: prints every request, all its headers and its body, and answers
/// `status`, or 401 to one whose signature does not verify (saying why).
pub async fn receive(
    listener: TcpListener,
    secret: Option<&str>,
    status: u16,
) -> Result<(), LocalError> {
    let secret = parse_secret(secret)?;
    let status = StatusCode::from_u16(status)
        .map_err(|_| LocalError::Usage(format!("not a status: {status}")))?;
    println!(
        "receiving webhooks on http://{}/ (answering {status}; signatures {})",
        listener.local_addr()?,
        if secret.is_some() {
            "verified: 401 to any that does not verify"
        } else {
            "not verified: pass --secret whsec_..."
        }
    );
    serve(listener, secret, move |delivery| async move {
        let (verdict, answer) = match &delivery.verified {
            None => ("signature not checked (no --secret)".to_owned(), status),
            Some(Ok(())) => ("signature valid".to_owned(), status),
            Some(Err(why)) => (
                format!("signature INVALID: {why}"),
                StatusCode::UNAUTHORIZED,
            ),
        };
        let headers: String = delivery
            .headers
            .iter()
            .map(|(name, value)| format!("  {name}: {value}\n"))
            .collect();
        println!(
            "{} {}\n{headers}  ({verdict}; answered {})\n  {}\n",
            delivery.method,
            delivery.uri,
            answer.as_u16(),
            delivery.body_text()
        );
        answer
    })
    .await
}
