//! `POST /webhooks`, `GET /webhooks`, `GET|PATCH|DELETE /webhooks/{id}`.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;

use super::{
    body_bytes, empty_response, endpoint_id_from_path, json_response, org_from_claims, page_after,
    page_limit, respond, Cursor,
};
use crate::config::ApiConfig;
use crate::domain::endpoint::{Endpoint, EndpointChanges, NewEndpoint};
use crate::domain::id::EndpointId;
use crate::domain::secret::WebhookSecret;
use crate::error::ApiError;
use crate::ports::{EndpointStore, SecretCipher, SecretContext};
use crate::time::now_rfc3339;

/// `POST /webhooks`: the only answer that ever holds the secret.
pub async fn create_webhook(
    store: &impl EndpointStore,
    cipher: &impl SecretCipher,
    config: &ApiConfig,
    request: Request,
) -> Response<Body> {
    respond(
        async {
            let org = org_from_claims(&request, &config.org_id_claim)?;
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
                org_id: org,
                url: new.url,
                events: new.events,
                description: new.description,
                disabled: false,
                disabled_reason: None,
                disabled_at: None,
                health: Default::default(),
                created_at: now.clone(),
                updated_at: now,
                secret_ciphertext,
            };
            store
                .insert_endpoint(&endpoint, config.max_endpoints_per_org)
                .await?;
            tracing::info!(org_id = %endpoint.org_id, endpoint_id = %endpoint.id, "endpoint created");
            let mut view = endpoint.view();
            view.secret = Some(secret.expose());
            Ok(json_response(StatusCode::CREATED, &json!({ "endpoint": view })))
        }
        .await,
    )
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
