//! Error types of the ports, and how an API failure becomes an HTTP answer.

use lambda_http::http::StatusCode;

use crate::domain::validation::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an item with this key already exists")]
    Conflict,
    /// The org already has the most items of this kind it may have.
    #[error("the organization already has the maximum of {0}")]
    LimitReached(usize),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("a stored item is malformed: {0}")]
    Corrupt(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// Wrong key, wrong encryption context or tampered ciphertext.
    #[error("the ciphertext does not decrypt under this key and context")]
    Undecryptable,
    #[error("the cipher is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the queue is unavailable: {0}")]
    Unavailable(String),
    #[error("a message could not be encoded: {0}")]
    Encoding(String),
}

/// Why an API request did not succeed; each kind has its status and JSON shape.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Invalid input")]
    Invalid(Vec<FieldError>),
    /// No token at all (RFC 6750 section 3.1: the challenge then names no error).
    #[error("{0}")]
    MissingToken(String),
    /// A token that is not accepted, or whose claims name no valid organization; the text
    /// says which and what to do.
    #[error("{0}")]
    InvalidToken(String),
    #[error("Not found")]
    NotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("Request body too large")]
    PayloadTooLarge,
    #[error("Conflict")]
    Conflict,
    #[error("This organization already has the maximum of {0} webhook endpoints; delete one before creating another")]
    EndpointLimit(usize),
    /// The route needs an enabled endpoint.
    #[error("This endpoint is disabled; enable it with PATCH /webhooks/{{id}} {{\"disabled\": false}} first")]
    EndpointDisabled,
    /// A 409 whose reason the text gives.
    #[error("{0}")]
    Conflicting(&'static str),
    #[error(
        "A request with this Idempotency-Key is still in progress; retry once it has finished"
    )]
    IdempotencyKeyInUse,
    #[error("This Idempotency-Key was used in the last 24 hours with a different request (method, path or body); send a new key for a new request")]
    IdempotencyKeyReused,
    /// A dependency failed; details go to the log, not to the client.
    #[error("Service unavailable, try again")]
    Unavailable,
    #[error("Internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::MissingToken(_) | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict
            | ApiError::Conflicting(_)
            | ApiError::IdempotencyKeyInUse
            | ApiError::EndpointLimit(_)
            | ApiError::EndpointDisabled => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid(vec![FieldError::new(field, message)])
    }

    /// `{"message": "...", "errors": [...]}`; `errors` is empty unless the input was invalid.
    pub fn body(&self) -> serde_json::Value {
        let errors = match self {
            ApiError::Invalid(errors) => errors.as_slice(),
            _ => &[],
        };
        serde_json::json!({ "message": self.to_string(), "errors": errors })
    }
}

impl From<Vec<FieldError>> for ApiError {
    fn from(errors: Vec<FieldError>) -> Self {
        ApiError::Invalid(errors)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict => ApiError::Conflict,
            StoreError::LimitReached(limit) => ApiError::EndpointLimit(limit),
            StoreError::Unavailable(detail) => {
                tracing::error!(error = %detail, "store unavailable");
                ApiError::Unavailable
            }
            StoreError::Corrupt(detail) => {
                tracing::error!(error = %detail, "corrupt item in store");
                ApiError::Internal
            }
        }
    }
}

impl From<CipherError> for ApiError {
    fn from(error: CipherError) -> Self {
        tracing::error!(error = %error, "secret cipher failed");
        ApiError::Unavailable
    }
}
