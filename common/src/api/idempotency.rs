//! The `Idempotency-Key` of every POST route (see [`crate::domain::idempotency`]).
//!
//! A handler calls [`begin`] once it knows the org: a repeated request gets the first answer
//! back ([`Begin::Replay`]), a new one a [`Guard`]. A route whose effect is one store write
//! stores its answer in that write ([`Guard::completion`]); any other route's answer is stored
//! after it ([`Guard::settle`]). A request that fails gives its claim back, so the same key may
//! be tried again.

use std::time::Duration;

use lambda_http::http::{HeaderValue, StatusCode};
use lambda_http::{Body, Request, Response};

use super::body_bytes;
use crate::domain::id::random_hex;
use crate::domain::idempotency::{
    fingerprint, IdempotencyCompletion, IdempotencyKey, IdempotencyRecord, KeyState,
    StoredResponse, HEADER, REPLAYED_HEADER,
};
use crate::domain::OrgId;
use crate::error::ApiError;
use crate::ports::IdempotencyStore;
use crate::time::unix_millis_now;

/// How long a request waits for another one holding its key to finish before it answers 409.
const WAIT_FOR_CLAIM: Duration = Duration::from_secs(2);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What [`begin`] decided.
pub enum Begin {
    /// The answer of the request that used the key first (never holding a secret).
    Replay(StoredResponse),
    /// Go on: no key was sent, or this request holds it now.
    Proceed(Guard),
}

/// A request's hold on its key (nothing when it sent none).
#[must_use = "settle the guard, or its claim blocks the key until its lease runs out"]
pub struct Guard {
    claim: Option<(String, String)>,
    /// Whether the answer went into the route's own write.
    answered_in_write: bool,
}

/// Reads the request's `Idempotency-Key`, and claims it for `org`. `400` when the key is
/// malformed, `422` when the key was used for a different request, `409` when the request
/// that holds it has not finished within [`WAIT_FOR_CLAIM`].
pub async fn begin(
    store: &impl IdempotencyStore,
    request: &Request,
    org: &OrgId,
) -> Result<Begin, ApiError> {
    let Some(header) = request.headers().get(HEADER) else {
        return Ok(Begin::Proceed(Guard {
            claim: None,
            answered_in_write: false,
        }));
    };
    let key = header
        .to_str()
        .ok()
        .and_then(IdempotencyKey::parse)
        .ok_or_else(|| ApiError::invalid("Idempotency-Key", IdempotencyKey::RULE))?;
    let fingerprint = fingerprint(
        request.method().as_str(),
        request.uri().path(),
        body_bytes(request)?,
    );
    let key_id = key.storage_id();
    let token = random_hex(16).map_err(|_| ApiError::Internal)?;
    let waited_until = tokio::time::Instant::now() + WAIT_FOR_CLAIM;
    loop {
        let now = unix_millis_now();
        let claim =
            IdempotencyRecord::claim(key_id.clone(), fingerprint.clone(), token.clone(), now);
        let Some(record) = store.claim_idempotency_key(org, &claim, now).await? else {
            return Ok(Begin::Proceed(Guard {
                claim: Some((key_id, token)),
                answered_in_write: false,
            }));
        };
        if record.fingerprint != fingerprint {
            return Err(ApiError::IdempotencyKeyReused);
        }
        match record.state {
            KeyState::Completed(response) => return Ok(Begin::Replay(response)),
            KeyState::Claimed { .. } if tokio::time::Instant::now() < waited_until => {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            KeyState::Claimed { .. } => return Err(ApiError::IdempotencyKeyInUse),
        }
    }
}

impl Guard {
    /// The answer to store in the route's own write, if the request sent a key. `body` must
    /// hold no secret.
    pub fn completion(
        &mut self,
        status: StatusCode,
        body: &serde_json::Value,
    ) -> Option<IdempotencyCompletion> {
        let (key_id, token) = self.claim.as_ref()?;
        self.answered_in_write = true;
        Some(IdempotencyCompletion {
            key_id: key_id.clone(),
            token: token.clone(),
            response: StoredResponse {
                status: status.as_u16(),
                body: body.to_string(),
            },
        })
    }

    /// Ends the request's hold on its key: a success's answer is stored (unless it went into
    /// the route's write), a failure gives the key back. A store failure here is logged, not
    /// answered: the effect happened, and the claim's lease frees the key in the end.
    pub async fn settle(
        self,
        store: &impl IdempotencyStore,
        org: &OrgId,
        result: Result<Response<Body>, ApiError>,
    ) -> Result<Response<Body>, ApiError> {
        let Some((key_id, token)) = self.claim else {
            return result;
        };
        let succeeded = result.as_ref().is_ok_and(|r| r.status().is_success());
        let outcome = match (&result, succeeded, self.answered_in_write) {
            (_, true, true) => Ok(()),
            (Ok(response), true, false) => {
                let body = match response.body() {
                    Body::Text(text) => text.clone(),
                    _ => String::new(),
                };
                let completion = IdempotencyCompletion {
                    key_id,
                    token,
                    response: StoredResponse {
                        status: response.status().as_u16(),
                        body,
                    },
                };
                store.complete_idempotency_key(org, &completion).await
            }
            _ => store.release_idempotency_key(org, &key_id, &token).await,
        };
        if let Err(error) = outcome {
            tracing::warn!(org_id = %org, %error, "could not settle an Idempotency-Key; its claim expires by itself");
        }
        result
    }
}

/// Runs a POST route's `work` under the request's `Idempotency-Key`, for a route whose answer
/// is stored after its effect.
pub async fn idempotent(
    store: &impl IdempotencyStore,
    request: &Request,
    org: &OrgId,
    work: impl std::future::Future<Output = Result<Response<Body>, ApiError>>,
) -> Result<Response<Body>, ApiError> {
    match begin(store, request, org).await? {
        Begin::Replay(stored) => Ok(replayed(&stored)),
        Begin::Proceed(guard) => guard.settle(store, org, work.await).await,
    }
}

/// A stored answer sent again, marked `Idempotent-Replayed: true`.
pub fn replayed(response: &StoredResponse) -> Response<Body> {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    let mut answer = if response.body.is_empty() {
        super::empty_response(status)
    } else {
        super::json_text_response(status, response.body.clone())
    };
    answer
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    answer
}
