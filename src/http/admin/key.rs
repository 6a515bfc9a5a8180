//! Who may use the admin routes: the admin key from the `X-Admin-Key` header, the dashboard's
//! login cookie, the per-address limit on failed attempts, and the login and logout routes.
//!
//! A leaf of `admin`: the dashboard and the other admin routes import from here, never the
//! other way round.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use tokio::time::Instant;

use crate::http::{ApiError, AppState};

/// Name of the cookie that carries the admin key (hex-encoded) for the dashboard.
pub const ADMIN_COOKIE: &str = "courier_admin";
/// How long a dashboard login lasts.
const SESSION_SECS: u64 = 12 * 60 * 60;
/// The window of the failed-attempt limit (the same 15 minutes as account logins).
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Addresses tracked by the failure limiter before expired entries are swept.
const FAILURE_TABLE_LIMIT: usize = 10_000;

/// `POST /admin/login`, `POST /admin/logout` and `GET /admin/api/session`.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/api/session", get(session))
}

/// Failed admin-key attempts per client address, in fixed 15-minute windows. Past `max`
/// failures an address gets 429 for every attempt, right or wrong, until its window ends:
/// otherwise a guesser would still learn when it guessed right.
pub struct FailedAttempts {
    max: u32,
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedAttempts {
    /// `max` failures per address per 15 minutes; `0` turns the limit off.
    pub fn new(max: u32) -> FailedAttempts {
        FailedAttempts {
            max,
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` while `address` is locked out.
    fn check(&self, address: IpAddr) -> Result<(), u64> {
        if self.max == 0 {
            return Ok(());
        }
        let by_address = self.by_address.lock();
        match by_address.get(&address) {
            Some((since, failures)) if *failures >= self.max => {
                let elapsed = since.elapsed();
                if elapsed < FAILURE_WINDOW {
                    Err((FAILURE_WINDOW - elapsed).as_secs().max(1))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    fn record_failure(&self, address: IpAddr) {
        if self.max == 0 {
            return;
        }
        let mut by_address = self.by_address.lock();
        if by_address.len() >= FAILURE_TABLE_LIMIT {
            by_address.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = by_address
            .entry(address)
            .or_insert_with(|| (Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    fn record_success(&self, address: IpAddr) {
        if self.max > 0 {
            self.by_address.lock().remove(&address);
        }
    }
}

/// Proof that a request carries the admin key. Extracting it answers 401 (no key or a wrong
/// one), 429 (too many failures from this address) or 403 (a cookie-authenticated change sent
/// from another origin).
#[derive(Debug, Clone, Copy)]
pub struct Admin {
    pub(super) read_only: bool,
}

impl Admin {
    /// 403 in read-only mode; call it before any change.
    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.read_only {
            return Err(ApiError::forbidden(
                "the admin key is read-only on this server (ADMIN_READ_ONLY)",
            ));
        }
        Ok(())
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        let address = client_address(parts);
        let (presented, from_cookie) = match header_key(&parts.headers) {
            Some(key) => (Some(key), false),
            None => (cookie_key(&parts.headers), true),
        };
        let limiter = state.admin_failures();
        if let Err(retry_after_secs) = limiter.check(address) {
            return Err(too_many(retry_after_secs));
        }
        let Some(presented) = presented else {
            return Err(ApiError::unauthorized("admin key required"));
        };
        if !key_matches(&presented, &state.secrets().admin_key) {
            limiter.record_failure(address);
            tracing::warn!(%address, "request with a wrong admin key");
            return Err(ApiError::unauthorized("invalid admin key"));
        }
        // SameSite=Strict keeps the cookie off cross-site requests in current browsers; an
        // Origin check covers older ones for anything that changes state.
        if from_cookie && !matches!(parts.method, Method::GET | Method::HEAD) {
            check_same_origin(&parts.headers)?;
        }
        Ok(Admin {
            read_only: state.config().admin_read_only,
        })
    }
}

fn too_many(retry_after_secs: u64) -> ApiError {
    ApiError::TooManyRequests {
        message: "too many failed admin key attempts; try again later".to_owned(),
        retry_after_secs,
    }
}

/// Constant-time comparison: the time taken does not depend on how much of the key matched.
fn key_matches(presented: &str, expected: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

fn header_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-admin-key")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The key from the admin cookie. It is stored hex-encoded, since a configured key may hold
/// characters a cookie cannot.
fn cookie_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == ADMIN_COOKIE)
        .and_then(|(_, value)| hex::decode(value.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

fn check_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, host)| host.trim_end_matches('/'));
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    match (origin_host, host) {
        (Some(origin_host), Some(host)) if origin_host.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(ApiError::forbidden("cross-origin admin request refused")),
    }
}

/// The peer address; forwarded-for headers are not trusted, since anyone can send them.
fn client_address(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The client address as an extractor that never fails.
struct ClientAddress(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientAddress, Infallible> {
        Ok(ClientAddress(client_address(parts)))
    }
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionBody {
    read_only: bool,
    pub(super) queues: Vec<String>,
    version: &'static str,
}

pub(super) fn session_body(state: &AppState) -> SessionBody {
    SessionBody {
        read_only: state.config().admin_read_only,
        queues: state
            .queues()
            .queues()
            .iter()
            .map(|queue| queue.name().to_owned())
            .collect(),
        version: env!("CARGO_PKG_VERSION"),
    }
}

/// `POST /admin/login` with a form field `key`: sets the admin cookie.
async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let limiter = state.admin_failures();
    if let Err(retry_after_secs) = limiter.check(address) {
        return Err(too_many(retry_after_secs));
    }
    let key = form.key.trim();
    if key.is_empty() || !key_matches(key, &state.secrets().admin_key) {
        limiter.record_failure(address);
        tracing::warn!(%address, "dashboard login with a wrong admin key");
        return Err(ApiError::unauthorized("invalid admin key"));
    }
    limiter.record_success(address);
    let cookie = session_cookie(&hex::encode(key), SESSION_SECS, is_https(&headers));
    let mut response = Json(session_body(&state)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie?);
    Ok(response)
}

/// `POST /admin/logout`: clears the admin cookie.
async fn logout(headers: HeaderMap) -> Result<Response, ApiError> {
    let cookie = session_cookie("", 0, is_https(&headers))?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, cookie), no_store()],
    )
        .into_response())
}

/// Behind a TLS-terminating proxy the cookie is also marked `Secure`.
fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

fn session_cookie(value: &str, max_age: u64, secure: bool) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{ADMIN_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .map_err(|err| ApiError::Internal(anyhow::anyhow!("cannot build the admin cookie: {err}")))
}

pub(super) fn no_store() -> (header::HeaderName, HeaderValue) {
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

async fn session(admin: Admin, State(state): State<AppState>) -> Json<SessionBody> {
    let _ = admin;
    Json(session_body(&state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_locks_an_address_out_after_max_failures() {
        let limiter = FailedAttempts::new(2);
        let address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert!(limiter.check(address).is_ok());
        limiter.record_failure(address);
        assert!(limiter.check(address).is_ok());
        limiter.record_failure(address);
        let wait = limiter.check(address).unwrap_err();
        assert!(wait > 0 && wait <= FAILURE_WINDOW.as_secs());
        assert!(limiter.check(other).is_ok());
        let off = FailedAttempts::new(0);
        for _ in 0..100 {
            off.record_failure(address);
        }
        assert!(off.check(address).is_ok());
    }

    #[test]
    fn the_cookie_carries_the_key_hex_encoded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!(
                "jwt=abc; {ADMIN_COOKIE}={}",
                hex::encode("key; with=odd chars")
            ))
            .unwrap(),
        );
        assert_eq!(cookie_key(&headers).as_deref(), Some("key; with=odd chars"));
        assert!(key_matches("abc", "abc"));
        assert!(!key_matches("abd", "abc"));
        assert!(!key_matches("ab", "abc"));
    }

    #[test]
    fn cross_origin_changes_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("localhost:5000"));
        assert!(check_same_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://localhost:5000"),
        );
        assert!(check_same_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.test"),
        );
        assert!(check_same_origin(&headers).is_err());
    }
}
