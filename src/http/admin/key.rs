//! Who may use the admin routes: the admin key from the `X-Admin-Key` header, the dashboard's
//! session cookie (made and checked in `cookie.rs`), the per-address limit on failed attempts,
//! and the login and logout routes.
//!
//! Every route that takes the key (these, the dashboard's API, the MERN app's queue actions and
//! the admin view of `GET /api/messages/status/:jobId`) goes through one check, `authenticate`,
//! so a failure anywhere counts everywhere and a lockout holds everywhere.
//!
//! A leaf of `admin`: the dashboard, `monitor.rs` and `chat.rs` import from here; it imports
//! only `cookie.rs` of the admin side.

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

use super::cookie::DashboardSessions;
use crate::http::{ApiError, AppState};
use crate::time::now_millis;

/// Name of the dashboard's session cookie (see `cookie.rs`; it does not hold the key).
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

/// What the admin check keeps between requests: failed attempts per address, and the
/// dashboard's sessions (signed with a key derived from the admin key).
pub struct AdminAuth {
    failures: FailedAttempts,
    sessions: DashboardSessions,
}

impl AdminAuth {
    /// `max_failures` per address per 15 minutes (`0`: no limit); sessions for `admin_key`.
    pub fn new(max_failures: u32, admin_key: &str) -> AdminAuth {
        AdminAuth {
            failures: FailedAttempts::new(max_failures),
            sessions: DashboardSessions::new(admin_key),
        }
    }
}

/// Failed admin-key attempts per client address, in fixed 15-minute windows. Past `max`
/// failures an address gets 429 for every attempt, right or wrong, until its window ends:
/// otherwise a guesser would still learn when it guessed right.
struct FailedAttempts {
    max: u32,
    by_address: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedAttempts {
    /// `max` failures per address per 15 minutes; `0` turns the limit off.
    fn new(max: u32) -> FailedAttempts {
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
                    Err(crate::chat::lockout::whole_seconds(
                        FAILURE_WINDOW - elapsed,
                    ))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure; `true` when it is the one that locks `address` out.
    fn record_failure(&self, address: IpAddr) -> bool {
        if self.max == 0 {
            return false;
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
        entry.1 == self.max
    }

    fn record_success(&self, address: IpAddr) {
        if self.max > 0 {
            self.by_address.lock().remove(&address);
        }
    }
}

/// What a request presented to prove it may use the admin routes.
#[derive(Clone, Copy)]
enum Credential<'a> {
    /// The key itself, from the `X-Admin-Key` header.
    Header(&'a [u8]),
    /// The key itself, typed into the dashboard's login form.
    LoginForm(&'a [u8]),
    /// The dashboard's session cookie.
    Cookie(&'a str),
}

impl Credential<'_> {
    /// For the logs: where the credential came from (never what it was).
    fn source(&self) -> &'static str {
        match self {
            Credential::Header(_) => "X-Admin-Key header",
            Credential::LoginForm(_) => "login form",
            Credential::Cookie(_) => "dashboard cookie",
        }
    }

    fn is_valid(&self, state: &AppState) -> bool {
        match self {
            Credential::Header(key) | Credential::LoginForm(key) => {
                key_matches(key, &state.secrets().admin_key)
            }
            Credential::Cookie(value) => state
                .admin_auth()
                .sessions
                .check(value, now_secs())
                .is_some(),
        }
    }
}

/// The one admin check: every route that takes the admin key, in whatever form, comes through
/// here. A locked-out address gets 429 (with the real remaining wait) whatever it presents, the
/// right key included; a wrong credential gets 401 and counts as a failure. Failures and
/// lockouts are logged with the address, never with what was presented.
fn authenticate(
    state: &AppState,
    address: IpAddr,
    credential: Credential<'_>,
) -> Result<Admin, ApiError> {
    let limiter = &state.admin_auth().failures;
    if let Err(retry_after_secs) = limiter.check(address) {
        tracing::warn!(
            %address,
            retry_after_secs,
            source = credential.source(),
            "admin credential refused: the address is locked out"
        );
        return Err(too_many(retry_after_secs));
    }
    if !credential.is_valid(state) {
        tracing::warn!(
            %address,
            source = credential.source(),
            "wrong admin credential"
        );
        if limiter.record_failure(address) {
            tracing::warn!(
                %address,
                window_secs = FAILURE_WINDOW.as_secs(),
                "too many wrong admin credentials: the address is locked out of the admin routes"
            );
        }
        return Err(match credential {
            Credential::Cookie(_) => ApiError::unauthorized("invalid admin session; sign in again"),
            _ => ApiError::unauthorized("invalid admin key"),
        });
    }
    Ok(Admin {
        read_only: state.config().admin_read_only,
    })
}

/// The admin check for routes that also serve users: `Ok(None)` when the request carries no
/// `X-Admin-Key` (the route then falls back to the user's session), otherwise the shared check
/// (429 while `address` is locked out, 401 on a wrong key, counted).
pub(crate) fn admin_from_headers(
    state: &AppState,
    address: IpAddr,
    headers: &HeaderMap,
) -> Result<Option<Admin>, ApiError> {
    match header_key(headers) {
        Some(key) => authenticate(state, address, Credential::Header(key)).map(Some),
        None => Ok(None),
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
        if let Some(admin) = admin_from_headers(state, address, &parts.headers)? {
            return Ok(admin);
        }
        let Some(cookie) = cookie_value(&parts.headers) else {
            return Err(ApiError::unauthorized("admin key required"));
        };
        let admin = authenticate(state, address, Credential::Cookie(cookie))?;
        // SameSite=Strict keeps the cookie off cross-site requests in current browsers; an
        // Origin check covers older ones for anything that changes state.
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            check_same_origin(&parts.headers)?;
        }
        Ok(admin)
    }
}

fn too_many(retry_after_secs: u64) -> ApiError {
    ApiError::TooManyRequests {
        message: "too many failed admin key attempts; try again later".to_owned(),
        retry_after_secs,
    }
}

/// Constant-time comparison: the time taken does not depend on how much of the key matched.
fn key_matches(presented: &[u8], expected: &str) -> bool {
    bool::from(presented.ct_eq(expected.as_bytes()))
}

/// The `X-Admin-Key` header, as bytes: a value that is not valid text is still a presented key
/// (a wrong one), not an absent one. Blank counts as absent, as proxies may add empty headers.
fn header_key(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get("x-admin-key")
        .map(|value| value.as_bytes().trim_ascii())
        .filter(|value| !value.is_empty())
}

/// The raw value of the admin cookie.
fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == ADMIN_COOKIE)
        .map(|(_, value)| value.trim())
}

/// Wall-clock seconds: sessions must outlive a restart, so they cannot use the monotonic clock.
fn now_secs() -> u64 {
    now_millis() / 1000
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

/// The client address as an extractor that never fails: the peer address, or `0.0.0.0` when the
/// server was started without connection info.
pub(crate) struct ClientAddress(pub(crate) IpAddr);

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

/// `POST /admin/login` with a form field `key`: sets the session cookie, good for 12 hours.
async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ApiError> {
    let key = form.key.trim();
    authenticate(&state, address, Credential::LoginForm(key.as_bytes()))?;
    let auth = state.admin_auth();
    auth.failures.record_success(address);
    let session = auth.sessions.sign_in(now_secs(), SESSION_SECS);
    let cookie = session_cookie(&session, SESSION_SECS, is_https(&headers));
    let mut response = Json(session_body(&state)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie?);
    Ok(response)
}

/// `POST /admin/logout`: clears the session cookie, and remembers the session as ended so a copy
/// of the cookie is refused too (until a restart; see [`DashboardSessions`]). It checks nothing
/// and counts nothing: signing out needs no proof.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(value) = cookie_value(&headers) {
        state.admin_auth().sessions.sign_out(value, now_secs());
    }
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
        assert!(!limiter.record_failure(address));
        assert!(limiter.check(address).is_ok());
        assert!(limiter.record_failure(address), "the second failure locks");
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
    fn the_cookie_is_a_signed_session_not_the_key() {
        let admin_key = "key; with=odd chars, long enough to be accepted";
        let sessions = DashboardSessions::new(admin_key);
        let session = sessions.sign_in(now_secs(), SESSION_SECS);
        let cookie = session_cookie(&session, SESSION_SECS, true).unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(!cookie.contains(admin_key) && !cookie.contains(&hex::encode(admin_key)));
        for attribute in [
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=43200",
            "Secure",
            "Path=/",
        ] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("jwt=abc; {ADMIN_COOKIE}={session}")).unwrap(),
        );
        let value = cookie_value(&headers).unwrap();
        assert_eq!(value, session);
        assert!(sessions.check(value, now_secs()).is_some());
        assert!(key_matches(b"abc", "abc"));
        assert!(!key_matches(b"abd", "abc"));
        assert!(!key_matches(b"ab", "abc"));
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
