//! `POST /webhooks`, `GET /webhooks`, `GET|PATCH|DELETE /webhooks/{id}`,
//! `POST /webhooks/{id}/secret/rotate`.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;

use super::idempotency::{self, Begin};
use super::{
    body_bytes, empty_response, endpoint_id_from_path, json_response, org_from_claims, page_after,
    page_limit, respond, Cursor,
};
use crate::config::ApiConfig;
use crate::domain::endpoint::{Endpoint, EndpointChanges, NewEndpoint, RotationRequest};
use crate::domain::id::{hex, EndpointId};
use crate::domain::idempotency::StoredResponse;
use crate::domain::secret::WebhookSecret;
use crate::domain::OrgId;
use crate::error::{ApiError, StoreError};
use crate::ports::{EndpointStore, IdempotencyStore, SecretCipher, SecretContext};
use crate::time::{now_rfc3339, rfc3339_from_millis, unix_millis_now};

/// `POST /webhooks`: the only answer that ever holds the secret. Under an `Idempotency-Key`,
/// the endpoint and the answer (without the secret) are stored in one transaction; a replay
/// shows the secret again, decrypted from the endpoint's stored ciphertext.
pub async fn create_webhook(
    store: &(impl EndpointStore + IdempotencyStore),
    cipher: &impl SecretCipher,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            let mut guard = match idempotency::begin(store, &request, &org).await? {
                Begin::Replay(stored) => {
                    let endpoint_of = |body: &serde_json::Value| {
                        body["endpoint"]["id"].as_str().and_then(EndpointId::parse)
                    };
                    let insert = |body: &mut serde_json::Value, secret: String| {
                        body["endpoint"]["secret"] = secret.into();
                    };
                    return replay_with_secret(store, cipher, &org, stored, endpoint_of, insert)
                        .await;
                }
                Begin::Proceed(guard) => guard,
            };
            let result = async {
            let new = NewEndpoint::parse(body_bytes(&request)?, &config.targets)?;
            let id = EndpointId::generate().map_err(|_| ApiError::Internal)?;
            let secret = WebhookSecret::generate().map_err(|_| ApiError::Internal)?;
            let context = SecretContext {
                org_id: &org,
                endpoint_id: &id,
            };
            // Encrypted before the first write: the plaintext never reaches the store.
            let secret_ciphertext = cipher.encrypt(secret.expose().as_bytes(), context).await?;
            let now = now_rfc3339();
            let endpoint = Endpoint {
                id,
                org_id: org.clone(),
                url: new.url,
                events: new.events,
                description: new.description,
                disabled: false,
                disabled_reason: None,
                disabled_at: None,
                health: Default::default(),
                created_at: now.clone(),
                updated_at: now,
                headers: new.headers,
                secret_ciphertext,
                previous_secrets: Vec::new(),
                secret_rotated_at: None,
            };
            let completion =
                guard.completion(
                StatusCode::CREATED,
                &json!({
                    "endpoint": endpoint.view(),
                    SECRET_MARKER: ciphertext_digest(&endpoint.secret_ciphertext),
                }),
            );
            store
                .insert_endpoint(&endpoint, config.max_endpoints_per_org, completion.as_ref())
                .await?;
            tracing::info!(org_id = %endpoint.org_id, endpoint_id = %endpoint.id, "endpoint created");
            let mut view = endpoint.view();
            view.secret = Some(secret.expose());
            Ok(json_response(StatusCode::CREATED, &json!({ "endpoint": view })))
            }
            .await;
            guard.settle(store, &org, result).await
        }
        .await,
    )
}

/// `POST /webhooks/{id}/secret/rotate` `{"gracePeriodSeconds"?}`: a new secret, shown in this
/// answer only. The replaced one keeps signing deliveries, next to the new one, until the grace
/// period ends (see [`Endpoint::previous_secrets_after_rotation`]). `409` when another rotation
/// of the endpoint landed between the read and the write.
pub async fn rotate_webhook_secret(
    store: &(impl EndpointStore + IdempotencyStore),
    cipher: &impl SecretCipher,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            let id = endpoint_id_from_path(&request)?;
            let mut guard = match idempotency::begin(store, &request, &org).await? {
                Begin::Replay(stored) => {
                    let endpoint_of = |_: &serde_json::Value| Some(id.clone());
                    let insert = |body: &mut serde_json::Value, secret: String| {
                        body["secret"] = secret.into();
                    };
                    return replay_with_secret(store, cipher, &org, stored, endpoint_of, insert)
                        .await;
                }
                Begin::Proceed(guard) => guard,
            };
            let result = async {
                let rotation = RotationRequest::parse(body_bytes(&request)?)?;
                let endpoint = store
                    .get_endpoint(&org, &id)
                    .await?
                    .ok_or(ApiError::NotFound)?;
                let secret = WebhookSecret::generate().map_err(|_| ApiError::Internal)?;
                let context = SecretContext {
                    org_id: &org,
                    endpoint_id: &id,
                };
                let ciphertext = cipher.encrypt(secret.expose().as_bytes(), context).await?;
                let now = unix_millis_now();
                let previous = endpoint.previous_secrets_after_rotation(rotation.grace, now);
                // The stored answer holds no secret: a replay decrypts the endpoint's.
                let completion = guard.completion(
                    StatusCode::OK,
                    &json!({ SECRET_MARKER: ciphertext_digest(&ciphertext) }),
                );
                let rotated = store
                    .rotate_secret(
                        &org,
                        &id,
                        &endpoint.secret_ciphertext,
                        &ciphertext,
                        &previous,
                        &rfc3339_from_millis(now),
                        completion.as_ref(),
                    )
                    .await;
                match rotated {
                    Ok(true) => {}
                    Ok(false) => return Err(ApiError::NotFound),
                    Err(StoreError::Conflict) => {
                        return Err(ApiError::Conflicting(
                            "The secret was rotated by another request meanwhile; rotate again if you need a secret you have not seen",
                        ))
                    }
                    Err(error) => return Err(error.into()),
                }
                tracing::info!(org_id = %org, endpoint_id = %id, grace_secs = rotation.grace.as_secs(), previous_secrets = previous.len(), "secret rotated");
                Ok(json_response(
                    StatusCode::OK,
                    &json!({ "secret": secret.expose() }),
                ))
            }
            .await;
            guard.settle(store, &org, result).await
        }
        .await,
    )
}

/// Where a stored answer that showed a secret names it instead: a digest of the secret's
/// ciphertext, which reveals nothing of the secret and is removed before the answer is sent
/// again.
const SECRET_MARKER: &str = "secretCiphertextSha256";

fn ciphertext_digest(ciphertext: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(ciphertext))
}

/// A stored answer of a route that showed a secret, sent again with that same secret,
/// decrypted from the endpoint's ciphertext the answer's [`SECRET_MARKER`] names (the
/// idempotency record never holds a secret). `endpoint_of` names the endpoint from the stored
/// body; `insert` puts the secret in. `404` when the endpoint is gone, `409` when that secret
/// has been rotated away since.
async fn replay_with_secret(
    store: &impl EndpointStore,
    cipher: &impl SecretCipher,
    org: &OrgId,
    stored: StoredResponse,
    endpoint_of: impl FnOnce(&serde_json::Value) -> Option<EndpointId>,
    insert: impl FnOnce(&mut serde_json::Value, String),
) -> Result<Response<Body>, ApiError> {
    let mut body: serde_json::Value =
        serde_json::from_str(&stored.body).map_err(|_| ApiError::Internal)?;
    let marker = body
        .as_object_mut()
        .and_then(|fields| fields.remove(SECRET_MARKER))
        .ok_or(ApiError::Internal)?;
    let id = endpoint_of(&body).ok_or(ApiError::Internal)?;
    let endpoint = store
        .get_endpoint(org, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    // The secret the first answer showed, if the endpoint still has it (current or in a
    // grace period); a later rotation's secret is never shown in its place.
    let ciphertext = std::iter::once(&endpoint.secret_ciphertext)
        .chain(endpoint.previous_secrets.iter().map(|p| &p.ciphertext))
        .find(|c| marker == ciphertext_digest(c))
        .ok_or(ApiError::Conflicting(
            "The secret this request was first answered with has since been rotated away; rotate again for a new one",
        ))?;
    let context = SecretContext {
        org_id: org,
        endpoint_id: &id,
    };
    let plaintext = cipher.decrypt(ciphertext, context).await?;
    let secret = String::from_utf8(plaintext).map_err(|_| ApiError::Internal)?;
    insert(&mut body, secret);
    Ok(idempotency::replayed(&StoredResponse {
        status: stored.status,
        body: body.to_string(),
    }))
}

/// `GET /webhooks?limit=&cursor=`: the caller's endpoints, oldest first.
pub async fn list_webhooks(
    store: &impl EndpointStore,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            let limit = page_limit(&request.query_string_parameters())?;
            let after = page_after(&request, &org, EndpointId::parse)?;
            let page = store.list_endpoints(&org, limit, after.as_ref()).await?;
            let endpoints: Vec<_> = page.endpoints.iter().map(Endpoint::view).collect();
            let next_cursor = page
                .next_after
                .map(|after| Cursor::encode(&org, after.as_str()));
            Ok(json_response(
                StatusCode::OK,
                &json!({ "endpoints": endpoints, "nextCursor": next_cursor }),
            ))
        }
        .await,
    )
}

/// `GET /webhooks/{id}`.
pub async fn get_webhook(
    store: &impl EndpointStore,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            let id = endpoint_id_from_path(&request)?;
            let endpoint = store
                .get_endpoint(&org, &id)
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "endpoint": endpoint.view() }),
            ))
        }
        .await,
    )
}

/// `PATCH /webhooks/{id}`: a conditional update, so a missing or foreign endpoint is a 404,
/// never an upsert.
pub async fn update_webhook(
    store: &impl EndpointStore,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            let id = endpoint_id_from_path(&request)?;
            let changes = EndpointChanges::parse(body_bytes(&request)?, &config.targets)?;
            let endpoint = store
                .update_endpoint(&org, &id, &changes, &now_rfc3339())
                .await?
                .ok_or(ApiError::NotFound)?;
            tracing::info!(org_id = %org, endpoint_id = %id, "endpoint updated");
            Ok(json_response(
                StatusCode::OK,
                &json!({ "endpoint": endpoint.view() }),
            ))
        }
        .await,
    )
}

/// `DELETE /webhooks/{id}`: permanent.
pub async fn delete_webhook(
    store: &impl EndpointStore,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
            let id = endpoint_id_from_path(&request)?;
            if !store.delete_endpoint(&org, &id).await? {
                return Err(ApiError::NotFound);
            }
            tracing::info!(org_id = %org, endpoint_id = %id, "endpoint deleted");
            Ok(empty_response(StatusCode::NO_CONTENT))
        }
        .await,
    )
}
