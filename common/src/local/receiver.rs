//! `webhooks-local receive`: a webhook receiver for trying the system out. It prints every
//! request and, given the endpoint's secret, checks the Standard Webhooks signature.

use std::convert::Infallible;
use std::net::SocketAddr;
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
use crate::domain::signature::sign;

pub async fn run(port: u16, secret: Option<&str>, status: u16) -> Result<(), LocalError> {
    let secret = secret
        .map(WebhookSecret::parse)
        .transpose()
        .map_err(|e| LocalError::Usage(format!("--secret: {e}")))?;
    let status = StatusCode::from_u16(status)
        .map_err(|_| LocalError::Usage(format!("not a status: {status}")))?;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!(
        "receiving webhooks on http://{}/ (answering {status}; signatures {})",
        listener.local_addr()?,
        if secret.is_some() {
            "verified"
        } else {
            "not verified: pass --secret whsec_..."
        }
    );
    let secret = Arc::new(secret);
    loop {
        let (stream, _) = listener.accept().await?;
        let secret = secret.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let secret = secret.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = Limited::new(body, 1024 * 1024)
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let header = |name: &str| {
                        parts
                            .headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let (id, timestamp, signatures) = (
                        header("webhook-id"),
                        header("webhook-timestamp"),
                        header("webhook-signature"),
                    );
                    let text = String::from_utf8_lossy(&body);
                    let verdict = match secret.as_ref() {
                        None => "not checked".to_owned(),
                        Some(secret) => match timestamp
                            .parse::<i64>()
                            .ok()
                            .and_then(|ts| sign(secret, &id, ts, &text).ok())
                        {
                            Some(expected) if signatures.split(' ').any(|s| s == expected) => {
                                "valid".to_owned()
                            }
                            _ => "INVALID".to_owned(),
                        },
                    };
                    println!(
                        "{} {}\n  webhook-id: {id}\n  webhook-timestamp: {timestamp}\n  webhook-signature: {signatures} ({verdict})\n  {text}\n",
                        parts.method, parts.uri
                    );
                    let mut response = hyper::Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
