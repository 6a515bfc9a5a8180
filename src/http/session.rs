//! Who is calling: the `jwt` cookie (or `Authorization: Bearer`), the session cookie itself, and
//! the mapping of chat errors to API errors.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum_extra::extract::cookie::{Cookie, SameSite};

use super::{ApiError, AppState};
use crate::chat::{accounts::SESSION_TTL, Authenticated, ChatError};
use crate::config::SameSitePolicy;
use crate::queue::QueueError;
use crate::store::chat::UserRecord;

pub const SESSION_COOKIE: &str = "jwt";

/// The session token of a request: an explicit `Authorization: Bearer` token, else the `jwt`
/// cookie. The explicit one wins so that a request naming its own credential is judged by it:
/// a page that adds a made-up token to a request the browser sends with the user's cookie gets
/// refused, instead of skipping the origin check (`origin.rs`) and riding on the cookie.
pub fn request_token(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty());
    bearer.or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| Cookie::parse(pair.trim().to_owned()).ok())
            .find(|cookie| cookie.name() == SESSION_COOKIE && !cookie.value().is_empty())
            .map(|cookie| cookie.value().to_owned())
    })
}

/// The header in which the web client names the user it believes is signed in. When it names
/// someone else than the session's user (another tab signed in as someone else since), the
/// request is refused with 409 instead of acting as the other account.
pub const EXPECTED_USER_HEADER: &str = "x-courier-user";

/// The message of that 409, which the web client recognises.
pub const IDENTITY_CHANGED: &str = "You are signed in as someone else in another tab";

/// The authenticated caller; rejects with 401.
pub struct CurrentUser(pub UserRecord);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(state, &parts.headers)
            .await
            .map(|caller| CurrentUser(caller.user))
    }
}

/// The authenticated caller and the session their token names; rejects with 401.
pub struct CurrentSession(pub Authenticated);

impl FromRequestParts<AppState> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(state, &parts.headers)
            .await
            .map(CurrentSession)
    }
}

/// The user and session the headers' token names; 401 otherwise, 409 when the client expected
/// another user ([`EXPECTED_USER_HEADER`]).
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Authenticated, ApiError> {
    let chat = state.chat_state()?;
    let Some(token) = request_token(headers) else {
        return Err(ApiError::unauthorized("Unauthorized - No Token Provided"));
    };
    let caller = match chat.chat.accounts().authenticate(&token).await {
        Ok(caller) => caller,
        Err(ChatError::Unauthorized) => {
            return Err(ApiError::unauthorized("Unauthorized - Invalid Token"))
        }
        Err(other) => return Err(other.into()),
    };
    let expected = headers
        .get(EXPECTED_USER_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|expected| !expected.is_empty());
    if let Some(expected) = expected {
        if expected != caller.user.id {
            return Err(ApiError::Conflict(IDENTITY_CHANGED.to_owned()));
        }
    }
    Ok(caller)
}

/// The session cookie carrying `token` (http-only, 7 days, SameSite and Secure as configured).
pub fn session_cookie(state: &AppState, token: String) -> Cookie<'static> {
    let config = state.config();
    let mut cookie = Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .path("/")
        .secure(config.cookie_secure)
        .same_site(match config.cookie_same_site {
            SameSitePolicy::Strict => SameSite::Strict,
            SameSitePolicy::Lax => SameSite::Lax,
            SameSitePolicy::None => SameSite::None,
        })
        .build();
    cookie.set_max_age(time_duration(SESSION_TTL));
    cookie
}

/// A cookie that deletes the session cookie.
pub fn cleared_cookie(state: &AppState) -> Cookie<'static> {
    let mut cookie = session_cookie(state, String::new());
    cookie.set_max_age(time_duration(std::time::Duration::ZERO));
    cookie
}

fn time_duration(duration: std::time::Duration) -> time::Duration {
    time::Duration::seconds(duration.as_secs() as i64)
}

impl From<ChatError> for ApiError {
    fn from(err: ChatError) -> ApiError {
        match err {
            ChatError::Invalid(message) | ChatError::UnsupportedImage(message) => {
                ApiError::BadRequest(message)
            }
            ChatError::InvalidCredentials => ApiError::BadRequest("Invalid credentials".to_owned()),
            ChatError::EmailTaken => ApiError::BadRequest("Email already exists".to_owned()),
            ChatError::Unauthorized => ApiError::unauthorized("Unauthorized - Invalid Token"),
            ChatError::NotFound(message) => ApiError::NotFound(message),
            ChatError::Refused(message) => ApiError::Forbidden(message),
            ChatError::TooLarge { .. } | ChatError::TooManyPixels { .. } => {
                ApiError::PayloadTooLarge(err.to_string())
            }
            ChatError::TooManyAttempts { retry_after_secs } => ApiError::TooManyRequests {
                message: "Too many failed login attempts, try again later".to_owned(),
                retry_after_secs,
            },
            ChatError::TooSoon { retry_after_secs } => ApiError::TooManyRequests {
                message: format!("Please wait {retry_after_secs} s before asking again"),
                retry_after_secs,
            },
            ChatError::Store(store) => ApiError::Store(store),
            ChatError::Queue(QueueError::ShuttingDown) => {
                ApiError::Unavailable("service is shutting down".to_owned())
            }
            ChatError::Queue(QueueError::Store(store)) => ApiError::Store(store),
            ChatError::Queue(QueueError::DataTooLarge { .. }) => {
                ApiError::PayloadTooLarge("message is too large".to_owned())
            }
            ChatError::Queue(other) => ApiError::Internal(anyhow::anyhow!(other)),
            ChatError::Internal(message) => ApiError::Internal(anyhow::anyhow!(message)),
        }
    }
}
