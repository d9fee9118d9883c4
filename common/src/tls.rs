//! TLS for every connection this project opens (AWS APIs and subscribers alike): rustls with the
//! *ring* provider and Mozilla's root programme compiled in (`webpki-roots`).
//!
//! Why compiled-in roots: the system store is about 150 files under `/etc/ssl/certs`, read and
//! parsed at every cold start before the first request (the AWS SDK's default client loads it
//! when a client is built). `webpki-roots` ships the same Mozilla programme that Amazon Linux's
//! `ca-certificates` package is built from, already in trust-anchor form: nothing to read or
//! parse. The price is that a root added to the system store at run time is not trusted; a
//! Lambda function has no such store of its own to add to, and a subscriber must present a
//! publicly trusted certificate (see README, "Decisions").
//!
//! Why *ring*: the same TLS 1.2 and 1.3 suites as aws-lc-rs for a fraction of the code (this
//! change, with the log filter's, took 2.2 to 2.4 MiB off each arm64 bootstrap: README,
//! "Performance"), and no FIPS requirement here.

use std::sync::Arc;

/// The rustls client configuration every HTTPS client shares: TLS 1.2 and 1.3 with *ring*'s
/// default suites, trusting the compiled-in Mozilla roots.
///
/// # Errors
/// [`TlsSetupError`] if the provider lacks the default protocol versions (*ring* has both; the
/// error exists so that a change of provider fails at start, not with a panic).
pub fn client_config() -> Result<rustls::ClientConfig, TlsSetupError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// A reqwest client builder speaking TLS through [`client_config`]: every reqwest client of
/// this project starts here (reqwest is built without a TLS provider of its own).
///
/// # Errors
/// As [`client_config`].
pub fn reqwest_builder() -> Result<reqwest::ClientBuilder, TlsSetupError> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(client_config()?))
}

#[derive(Debug, thiserror::Error)]
#[error("TLS set-up failed: {0}")]
pub struct TlsSetupError(#[from] rustls::Error);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_roots_include_the_amazon_roots_aws_endpoints_chain_to() {
        let config = client_config().unwrap();
        assert!(config.crypto_provider().cipher_suites.len() >= 6);
        // Amazon Root CA 1 (CN=Amazon Root CA 1, O=Amazon, C=US): every AWS service endpoint's
        // certificate chains to an Amazon Trust Services root.
        let amazon_root_1 = webpki_roots::TLS_SERVER_ROOTS.iter().any(|anchor| {
            let subject: &[u8] = anchor.subject.as_ref();
            subject.windows(16).any(|w| w == b"Amazon Root CA 1")
        });
        assert!(amazon_root_1);
        assert!(reqwest_builder().unwrap().build().is_ok());
    }
}
