//! The API error type: every failure a handler can return, each mapped to one status and a JSON
//! body `{"message": ...}`, plus the JSON body extractor whose rejections become [`ApiError`]s.
//!
//! Server-side causes (5xx) are logged here with `tracing::error!` and the client only ever sees
//! a generic message; 4xx messages are written for the client and sent as they are.

use axum::extract::rejection::JsonRejection;
use axum::extract::FromRequest;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::queue::QueueError;
use crate::store::StoreError;

/// What the client sees for every 5xx whose cause is ours.
pub const INTERNAL_MESSAGE: &str = "internal server error";
/// What a client is told when storage could not read or write.
pub const STORAGE_MESSAGE: &str =
    "storage is unavailable (the server cannot read or write its disk); try again later";
/// Seconds a client is asked to wait after a storage failure.
/// What a client is told when the storage backend is out of reach (the cause goes to the log).
pub const UNAVAILABLE_MESSAGE: &str = "storage is temporarily unavailable, try again shortly";
const STORAGE_RETRY_AFTER_SECS: u64 = 5;

/// Every way a request can fail. Messages are lowercase, without a trailing period (except
/// where the MERN front end expects its own wording, such as `Invalid credentials`).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or breaks a rule (missing field, short password, ...).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid session (or no admin key).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed (for example a read-only admin key).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource, or one the caller may not know exists.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request contradicts the current state (for example a tab that expects another
    /// signed-in user than the cookie's).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body exceeds the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not of a type the route accepts.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 with `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// 503 with a message meant for the client (not ready, shutting down). Not for causes.
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After`: the server is too busy to take this now.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after_secs: u64,
    },
    /// 500 (or 503 when the store is closing); the cause is logged, never sent.
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    /// A queue operation failed: 404 unknown queue or job, 400 bad options, 409 a job in the
    /// wrong state, 503 shutting down; storage causes as `Store`.
    #[error("{0}")]
    Queue(#[from] QueueError),
    /// 500; the cause is logged, never sent.
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::Unauthorized(message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::Forbidden(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound(message.into())
    }

    /// The status each case maps to; exhaustive so a new case must choose one.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(
                StoreError::Closed | StoreError::Io(_) | StoreError::Unavailable { .. },
            ) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(StoreError::Deleted(_)) => StatusCode::NOT_FOUND,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Queue(err) => match err {
                QueueError::UnknownQueue(_) | QueueError::JobNotFound(_) => StatusCode::NOT_FOUND,
                QueueError::InvalidOptions(_) | QueueError::DataTooLarge { .. } => {
                    StatusCode::BAD_REQUEST
                }
                QueueError::WrongState { .. } | QueueError::JobActive(_) => StatusCode::CONFLICT,
                QueueError::ShuttingDown
                | QueueError::Store(
                    StoreError::Closed | StoreError::Io(_) | StoreError::Unavailable { .. },
                ) => StatusCode::SERVICE_UNAVAILABLE,
                QueueError::AlreadyRegistered(_) | QueueError::Store(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    /// Storage could not read or write (a full or failing disk).
    fn is_disk_failure(&self) -> bool {
        matches!(
            self,
            ApiError::Store(StoreError::Io(_))
                | ApiError::Queue(QueueError::Store(StoreError::Io(_)))
        )
    }

    /// The storage backend cannot be reached for now (a lost connection): retry later.
    fn is_store_unavailable(&self) -> bool {
        matches!(
            self,
            ApiError::Store(StoreError::Unavailable { .. })
                | ApiError::Queue(QueueError::Store(StoreError::Unavailable { .. }))
        )
    }

    /// The text sent to the client: the message for client-facing cases, a generic one for causes.
    fn client_message(&self) -> String {
        if self.is_disk_failure() {
            // It may pass (the log repairs itself once it can write again, and a restart
            // replays it). The cause goes to the log, not the client.
            return STORAGE_MESSAGE.to_owned();
        }
        if self.is_store_unavailable() {
            return UNAVAILABLE_MESSAGE.to_owned();
        }
        match self {
            ApiError::Store(StoreError::Closed)
            | ApiError::Queue(QueueError::ShuttingDown | QueueError::Store(StoreError::Closed)) => {
                "service is shutting down".to_owned()
            }
            ApiError::Store(StoreError::Deleted(_)) => "User not found".to_owned(),
            ApiError::Store(_)
            | ApiError::Internal(_)
            | ApiError::Queue(QueueError::AlreadyRegistered(_) | QueueError::Store(_)) => {
                INTERNAL_MESSAGE.to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if matches!(
            self,
            ApiError::Store(_)
                | ApiError::Internal(_)
                | ApiError::Queue(QueueError::Store(_) | QueueError::AlreadyRegistered(_))
        ) {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        }
        let mut response = error_response(status, self.client_message());
        if let ApiError::TooManyRequests {
            retry_after_secs, ..
        }
        | ApiError::Busy {
            retry_after_secs, ..
        } = self
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
        } else if self.is_disk_failure() || self.is_store_unavailable() {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(STORAGE_RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// A JSON error response with `message`.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            message: message.into(),
        }),
    )
        .into_response()
}

/// Request-body extractor: `axum::Json` with rejections as [`ApiError`]s, so malformed JSON,
/// wrong types and missing fields give 400 `{"message": ...}`. Use it instead of `axum::Json`
/// for bodies; responses can keep using `axum::Json`.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct JsonBody<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        match &rejection {
            JsonRejection::JsonDataError(err) => {
                ApiError::BadRequest(format!("invalid request body: {}", deepest_cause(err)))
            }
            JsonRejection::JsonSyntaxError(err) => {
                ApiError::BadRequest(format!("malformed JSON: {}", deepest_cause(err)))
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a JSON body with `Content-Type: application/json`".to_owned(),
            ),
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::PayloadTooLarge("request body is too large".to_owned())
            }
            JsonRejection::BytesRejection(_) => {
                ApiError::BadRequest("cannot read the request body".to_owned())
            }
            // The enum is non-exhaustive: keep axum's status class, in our shape.
            _ if rejection.status().is_server_error() => ApiError::Internal(anyhow::anyhow!(
                "json extractor failed: {}",
                rejection.body_text()
            )),
            _ => ApiError::BadRequest(rejection.body_text().to_lowercase()),
        }
    }
}

/// serde's own words ("missing field `email` at line 1 column 2") without axum's preamble.
fn deepest_cause(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(current) = cause {
        text = current.to_string();
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_message(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        body["message"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_disk_failure_is_a_503_to_retry_and_its_cause_stays_in_the_log() {
        let cause = "append to /data/db-0.wal: No space left on device".to_owned();
        for error in [
            ApiError::Store(StoreError::Io(cause.clone())),
            ApiError::Queue(QueueError::Store(StoreError::Io(cause.clone()))),
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "5");
            assert_eq!(body_message(response).await, STORAGE_MESSAGE);
        }
        // An unreadable record is not something waiting fixes.
        let response = ApiError::Store(StoreError::Codec("bad tag".to_owned())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(body_message(response).await, INTERNAL_MESSAGE);
    }

    #[tokio::test]
    async fn an_unreachable_store_is_a_503_to_retry_and_a_fault_is_a_500() {
        let lost = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let unavailable = StoreError::unavailable("redis connection lost", lost);
        assert!(std::error::Error::source(&unavailable).is_some());
        for error in [
            ApiError::Store(unavailable.clone()),
            ApiError::Queue(QueueError::Store(unavailable)),
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "5");
            assert_eq!(body_message(response).await, UNAVAILABLE_MESSAGE);
        }
        let broken = std::io::Error::other("script returned garbage");
        let fault = StoreError::fault("take failed", broken);
        assert!(std::error::Error::source(&fault).is_some());
        for error in [
            ApiError::Store(fault.clone()),
            ApiError::Queue(QueueError::Store(fault)),
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(response.headers().get(header::RETRY_AFTER).is_none());
            assert_eq!(body_message(response).await, INTERNAL_MESSAGE);
        }
    }
}
