//! Secrets encrypted by KMS, bound to `{org_id, endpoint_id}` by the encryption context.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::Client;

use super::describe;
use crate::error::CipherError;
use crate::ports::{SecretCipher, SecretContext};

#[derive(Clone)]
pub struct KmsCipher {
    client: Client,
    key_id: String,
}

impl KmsCipher {
    pub fn from_sdk_config(sdk: &super::SdkConfig, key_id: impl Into<String>) -> Self {
        Self::new(Client::new(sdk), key_id)
    }

    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

impl SecretCipher for KmsCipher {
    async fn encrypt(
        &self,
        plaintext: &[u8],
        context: SecretContext<'_>,
    ) -> Result<Vec<u8>, CipherError> {
        let output = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plaintext))
            .encryption_context("org_id", context.org_id.as_str())
            .encryption_context("endpoint_id", context.endpoint_id.as_str())
            .send()
            .await
            .map_err(|e| CipherError::Unavailable(describe(&e)))?;
        output
            .ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| CipherError::Unavailable("KMS returned no ciphertext".into()))
    }

    async fn decrypt(
        &self,
        ciphertext: &[u8],
        context: SecretContext<'_>,
    ) -> Result<Vec<u8>, CipherError> {
        let output = self
            .client
            .decrypt()
            // Naming the key refuses ciphertexts made under any other key.
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .encryption_context("org_id", context.org_id.as_str())
            .encryption_context("endpoint_id", context.endpoint_id.as_str())
            .send()
            .await
            .map_err(|e| {
                let service = e.as_service_error();
                if service.is_some_and(|s| {
                    s.is_invalid_ciphertext_exception() || s.is_incorrect_key_exception()
                }) {
                    CipherError::Undecryptable
                } else {
                    CipherError::Unavailable(describe(&e))
                }
            })?;
        output
            .plaintext
            .map(Blob::into_inner)
            .ok_or_else(|| CipherError::Unavailable("KMS returned no plaintext".into()))
    }
}
