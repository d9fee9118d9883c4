//! One suite, two ciphers: the local AES-GCM cipher must refuse what KMS refuses.

use common::adapters::aws::KmsCipher;
use common::adapters::embedded::LocalCipher;
use common::domain::id::EndpointId;
use common::error::CipherError;
use common::ports::{SecretCipher, SecretContext};
use common::testing::{create_key, sdk_config};

use crate::contract_store::org;

async fn suite(cipher: &impl SecretCipher) {
    let (a, b) = (org("org_a"), org("org_b"));
    let (one, two) = (
        EndpointId::generate().unwrap(),
        EndpointId::generate().unwrap(),
    );
    let context = SecretContext {
        org_id: &a,
        endpoint_id: &one,
    };
    let secret = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    let ciphertext = cipher.encrypt(secret, context).await.unwrap();
    assert!(
        !ciphertext.windows(secret.len()).any(|w| w == secret),
        "ciphertext holds the plaintext"
    );
    assert_eq!(cipher.decrypt(&ciphertext, context).await.unwrap(), secret);

    let other_endpoint = SecretContext {
        org_id: &a,
        endpoint_id: &two,
    };
    assert!(matches!(
        cipher.decrypt(&ciphertext, other_endpoint).await,
        Err(CipherError::Undecryptable)
    ));
    let other_org = SecretContext {
        org_id: &b,
        endpoint_id: &one,
    };
    assert!(matches!(
        cipher.decrypt(&ciphertext, other_org).await,
        Err(CipherError::Undecryptable)
    ));

    let mut tampered = ciphertext.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(cipher.decrypt(&tampered, context).await.is_err());
}

#[tokio::test]
async fn local_cipher_binds_the_encryption_context() {
    suite(&LocalCipher::generate().unwrap()).await;
}

#[tokio::test]
async fn kms_cipher_binds_the_encryption_context() {
    let sdk = sdk_config().await;
    suite(&KmsCipher::from_sdk_config(&sdk, create_key(&sdk).await)).await;
}
