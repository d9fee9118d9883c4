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
use crate::domain::signature::verify;
use crate::time::unix_seconds_now;

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
                    let verified = secret.as_ref().as_ref().map(|secret| {
                        verify(
                            secret,
                            &id,
                            &timestamp,
                            &signatures,
                            &text,
                            unix_seconds_now(),
                        )
                    });
                    let verdict = match &verified {
                        None => "not checked".to_owned(),
                        Some(Ok(())) => "valid".to_owned(),
                        Some(Err(why)) => format!("INVALID: {why}"),
                    };
                    println!(
                        "{} {}\n  webhook-id: {id}\n  webhook-timestamp: {timestamp}\n  webhook-signature: {signatures} ({verdict})\n  {text}\n",
                        parts.method, parts.uri
                    );
                    let mut response = hyper::Response::new(Full::new(Bytes::new()));
                    // A receiver refuses what does not verify, so the sender sees a failure.
                    *response.status_mut() = match verified {
                        Some(Err(_)) => StatusCode::UNAUTHORIZED,
                        _ => status,
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
