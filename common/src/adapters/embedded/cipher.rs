//! A local stand-in for KMS: AES-256-GCM under a process key, with the encryption context bound
//! as associated data, so a ciphertext moved to another endpoint or org fails to decrypt, as
//! with KMS.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};

use crate::domain::id::fill_random;
use crate::error::CipherError;
use crate::ports::{SecretCipher, SecretContext};

const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct LocalCipher {
    cipher: Aes256Gcm,
}

impl LocalCipher {
    /// A cipher under a fresh random key: what it encrypts lives as long as the process.
    pub fn generate() -> Result<Self, CipherError> {
        let mut key = [0u8; 32];
        fill_random(&mut key).map_err(|e| CipherError::Unavailable(e.to_string()))?;
        Ok(Self::from_key(key))
    }

    pub fn from_key(key: [u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        }
    }
}

/// Length-prefixed, so no two different contexts encode alike.
fn associated_data(context: SecretContext<'_>) -> Vec<u8> {
    let mut aad = Vec::new();
    for (name, value) in [
        ("org_id", context.org_id.as_str()),
        ("endpoint_id", context.endpoint_id.as_str()),
    ] {
        for part in [name, value] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
    }
    aad
}

impl SecretCipher for LocalCipher {
    async fn encrypt(
        &self,
        plaintext: &[u8],
        context: SecretContext<'_>,
    ) -> Result<Vec<u8>, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce).map_err(|e| CipherError::Unavailable(e.to_string()))?;
        let aad = associated_data(context);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CipherError::Unavailable("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    async fn decrypt(
        &self,
        ciphertext: &[u8],
        context: SecretContext<'_>,
    ) -> Result<Vec<u8>, CipherError> {
        if ciphertext.len() <= NONCE_LEN {
            return Err(CipherError::Undecryptable);
        }
        let (nonce, sealed) = ciphertext.split_at(NONCE_LEN);
        let aad = associated_data(context);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| CipherError::Undecryptable)
    }
}
