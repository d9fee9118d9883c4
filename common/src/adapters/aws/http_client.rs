//! The HTTP client of every AWS SDK client: reqwest over [`crate::tls`], the same stack that
//! delivers webhooks, instead of the SDK's default hyper client.
//!
//! Why not the default: it loads the system certificate store when a client is built (every
//! cold start, before any request; see [`crate::tls`]) and brings its own copy of hyper-rustls
//! and aws-lc-rs next to reqwest's. The SDK's extension point for this is its `HttpClient`
//! trait; the orchestrator keeps doing signing, retries and the attempt and operation timeouts.
//! This client does the connect timeout and maps errors to the kinds the retry classifier reads
//! (a connect or I/O failure and a timeout are retried as transient, as the default client's).

use std::time::Duration;

use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;

use crate::tls::{reqwest_builder, TlsSetupError};

/// One connection pool for every SDK client of the process. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SdkHttpClient {
    connector: SharedHttpConnector,
}

impl SdkHttpClient {
    /// A client whose connections give up after `connect_timeout` (the TCP and TLS handshakes).
    ///
    /// # Errors
    /// [`HttpClientError`] if TLS cannot be set up or reqwest refuses the settings.
    pub fn new(connect_timeout: Duration) -> Result<Self, HttpClientError> {
        let http = reqwest_builder()?
            .connect_timeout(connect_timeout)
            // AWS endpoints never redirect a signed API call; a redirect is an error to see.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            connector: SharedHttpConnector::new(ReqwestConnector { http }),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("could not build the AWS HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

impl HttpClient for SdkHttpClient {
    /// The one pool, whatever the settings: the connect timeout is the one given at
    /// construction ([`super::sdk_timeouts`] gives the same to the SDK), and the SDK enforces
    /// its attempt and operation timeouts itself.
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.connector.clone()
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new("reqwest", None))
    }
}

#[derive(Debug)]
struct ReqwestConnector {
    http: reqwest::Client,
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match to_reqwest(request) {
            Ok(request) => request,
            Err(error) => return HttpConnectorFuture::ready(Err(error)),
        };
        let http = self.http.clone();
        HttpConnectorFuture::new(async move {
            let response = http.execute(request).await.map_err(connector_error)?;
            let mut answer = http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                headers.extend(response.headers().clone());
            }
            let body = response.bytes().await.map_err(connector_error)?;
            let answer = answer
                .body(SdkBody::from(body))
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            HttpResponse::try_from(answer).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// DynamoDB, SQS and KMS requests are JSON documents held in memory; a streaming body (none of
/// the operations used has one) is refused as a user error rather than buffered.
fn to_reqwest(request: HttpRequest) -> Result<reqwest::Request, ConnectorError> {
    let request = request
        .try_into_http1x()
        .map_err(|e| ConnectorError::user(e.into()))?;
    let (parts, body) = request.into_parts();
    let bytes = body
        .bytes()
        .map(bytes::Bytes::copy_from_slice)
        .ok_or_else(|| ConnectorError::user("streaming request bodies are not supported".into()))?;
    reqwest::Request::try_from(http::Request::from_parts(parts, bytes))
        .map_err(|e| ConnectorError::user(e.into()))
}

/// The error kinds the SDK's retry classifier reads: timeouts and I/O (connect, reset, a body
/// cut short) are transient and retried; anything else is reported as it is.
fn connector_error(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() {
        ConnectorError::io(error.into())
    } else if error.is_builder() {
        ConnectorError::user(error.into())
    } else {
        ConnectorError::other(error.into(), Some(ErrorKind::TransientError))
    }
}
