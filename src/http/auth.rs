//! `/api/auth/*`: sign-up, login, logout, check, profile updates, the session list ("sign out
//! everywhere else", ending one session) and password changes.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::session::{cleared_cookie, request_token, session_cookie, CurrentSession, CurrentUser};
use super::wire::UserJson;
use super::{ApiError, AppState, JsonBody};
use crate::chat::{images, ChatError, ClientInfo, SessionInfo, Signup};
use crate::time::iso_time;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/check", get(check))
        .route("/api/auth/update-profile", put(update_profile))
        .route("/api/auth/updateProfile", put(update_profile))
        .route("/api/auth/sessions", get(list_sessions))
        .route("/api/auth/sessions/{id}", delete(end_session))
        .route("/api/auth/logout-all", post(logout_others))
        .route("/api/auth/password", put(change_password))
        .route("/api/auth/signup-mode", get(signup_mode))
        .route("/api/auth/oauth/providers", get(oauth_providers))
}

/// `GET /api/auth/oauth/providers`: no sign-in provider is configured (Courier has none), in the
/// shape the stock front end's login page reads; `setupRequired: false` keeps it from asking
/// for a setup that does not exist.
async fn oauth_providers() -> Json<serde_json::Value> {
    Json(json!({
        "success": true,
        "providers": {},
        "configured": false,
        "setupRequired": false,
        "message": "Sign-in with other providers is not available on this server",
    }))
}

/// `GET /api/auth/signup-mode`: `{signupMode}` (`open`, `invite` or `closed`), so the sign-in
/// page offers what this server allows.
async fn signup_mode(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = &state.chat_state()?.chat;
    Ok(Json(json!({ "signupMode": chat.signup_mode() })))
}

/// Who is signing in, for the session list.
fn client_info(headers: &HeaderMap, ip: std::net::IpAddr) -> ClientInfo {
    ClientInfo {
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        address: ip,
    }
}

/// Ends the session the request's token names, if it still is one: at logout, and at a login
/// that replaces it (the browser can no longer use it, and a tab still holding its socket
/// must learn that it is signed out).
async fn end_request_session(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = request_token(headers) else {
        return Ok(());
    };
    let chat = &state.chat_state()?.chat;
    match chat.accounts().authenticate(&token).await {
        Ok(caller) => {
            chat.end_sessions(&caller.user.id, &[caller.session_id])
                .await?;
            Ok(())
        }
        Err(ChatError::Unauthorized) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

/// The peer address (no proxy headers are trusted).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |info| info.0.ip());
        Ok(ClientIp(ip))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignupBody {
    full_name: Option<String>,
    email: Option<String>,
    password: Option<String>,
    /// The secret of an invitation link (needed when `SIGNUP_MODE=invite`).
    invite: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoginBody {
    email: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileBody {
    profile_pic: Option<String>,
    full_name: Option<String>,
}

async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    JsonBody(body): JsonBody<SignupBody>,
) -> Result<impl IntoResponse, ApiError> {
    let chat = state.chat_state()?;
    chat.check_auth_rate(ip)?;
    let signup = Signup {
        full_name: body.full_name,
        email: body.email,
        password: body.password,
    };
    let user = chat.chat.signup(signup, body.invite).await?;
    // The account exists either way; a link that failed to queue can be asked for again.
    if let Err(err) = chat.chat.send_verification(&user).await {
        tracing::error!(user = %user.id, error = %err, "cannot queue the verification e-mail");
    }
    end_request_session(&state, &headers).await?;
    let token = chat.chat.sign_in(&user, &client_info(&headers, ip)).await?;
    let jar = jar.add(session_cookie(&state, token));
    Ok((StatusCode::CREATED, jar, Json(UserJson::from(&user))))
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<impl IntoResponse, ApiError> {
    let chat = state.chat_state()?;
    chat.check_auth_rate(ip)?;
    let user = chat
        .chat
        .accounts()
        .login(body.email, body.password, ip)
        .await?;
    end_request_session(&state, &headers).await?;
    let token = chat.chat.sign_in(&user, &client_info(&headers, ip)).await?;
    // The token travels only in the http-only cookie, never in the body.
    let jar = jar.add(session_cookie(&state, token));
    Ok((jar, Json(UserJson::from(&user))))
}

/// `POST /api/auth/logout`: ends the session (its token stops working everywhere, its sockets
/// close) and clears the cookie. Answers the same with no session or an ended one.
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    end_request_session(&state, &headers).await?;
    let jar = jar.add(cleared_cookie(&state));
    Ok((jar, Json(json!({ "message": "Logged out successfully" }))))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionJson {
    id: String,
    created_at: String,
    last_seen_at: String,
    expires_at: String,
    user_agent: String,
    address: String,
    /// Whether this is the session of the request.
    current: bool,
}

impl SessionJson {
    fn new(session: &SessionInfo, current: &str) -> SessionJson {
        SessionJson {
            id: session.id.clone(),
            created_at: iso_time(session.record.created_at),
            last_seen_at: iso_time(session.record.last_seen_at),
            expires_at: iso_time(session.record.expires_at),
            user_agent: session.record.user_agent.clone(),
            address: session.record.address.clone(),
            current: session.id == current,
        }
    }
}

/// `GET /api/auth/sessions`: the caller's sessions, newest first.
async fn list_sessions(
    State(state): State<AppState>,
    CurrentSession(caller): CurrentSession,
) -> Result<Json<Vec<SessionJson>>, ApiError> {
    let chat = &state.chat_state()?.chat;
    let sessions = chat.sessions(&caller.user.id).await?;
    Ok(Json(
        sessions
            .iter()
            .map(|session| SessionJson::new(session, &caller.session_id))
            .collect(),
    ))
}

/// `DELETE /api/auth/sessions/:id`: ends one of the caller's sessions (the current one too,
/// which also clears the cookie). 404 for a session that is not the caller's.
async fn end_session(
    State(state): State<AppState>,
    CurrentSession(caller): CurrentSession,
    Path(id): Path<String>,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    let chat = &state.chat_state()?.chat;
    let ended = chat
        .end_sessions(&caller.user.id, std::slice::from_ref(&id))
        .await?;
    if ended == 0 {
        return Err(ApiError::not_found("Session not found"));
    }
    let jar = if id == caller.session_id {
        jar.add(cleared_cookie(&state))
    } else {
        jar
    };
    Ok((jar, Json(json!({ "message": "Session ended" }))))
}

/// `POST /api/auth/logout-all`: ends every session of the caller but this one.
async fn logout_others(
    State(state): State<AppState>,
    CurrentSession(caller): CurrentSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = &state.chat_state()?.chat;
    let ended = chat
        .end_other_sessions(&caller.user.id, Some(&caller.session_id))
        .await?;
    tracing::info!(user = %caller.user.id, sessions_ended = ended, "signed out everywhere else");
    Ok(Json(json!({
        "message": "Signed out everywhere else",
        "sessionsEnded": ended,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasswordBody {
    current_password: Option<String>,
    new_password: Option<String>,
}

/// `PUT /api/auth/password {currentPassword, newPassword}`: every other session ends; this one
/// stays signed in.
async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    CurrentSession(caller): CurrentSession,
    JsonBody(body): JsonBody<PasswordBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = state.chat_state()?;
    chat.check_auth_rate(ip)?;
    let ended = chat
        .chat
        .change_password(
            &caller.user,
            body.current_password,
            body.new_password,
            &caller.session_id,
            ip,
        )
        .await?;
    Ok(Json(json!({
        "message": "Password changed",
        "sessionsEnded": ended,
    })))
}

async fn check(CurrentUser(user): CurrentUser) -> Json<UserJson> {
    Json(UserJson::from(&user))
}

/// `PUT /api/auth/update-profile {profilePic?, fullName?}`: a new picture (a data URL, as the
/// MERN front end sends it), a new name, or both.
async fn update_profile(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    JsonBody(body): JsonBody<ProfileBody>,
) -> Result<Json<UserJson>, ApiError> {
    let chat = state.chat_state()?;
    let picture = body.profile_pic.filter(|url| !url.is_empty());
    if picture.is_none() && body.full_name.is_none() {
        return Err(ApiError::bad_request("Profile pic is required"));
    }
    // Both are checked before either is saved, so a bad one changes nothing.
    let picture = picture
        .map(|url| images::decode_data_url(&url))
        .transpose()?;
    let name = body
        .full_name
        .map(|name| crate::chat::names::check(&name).map_err(ApiError::BadRequest))
        .transpose()?;
    let mut updated = user;
    if let Some(name) = name {
        updated = chat.chat.rename(&updated.id, name).await?;
    }
    if let Some((bytes, _kind)) = picture {
        updated = chat
            .chat
            .accounts()
            .update_profile_pic(&updated.id, bytes)
            .await?;
    }
    Ok(Json(UserJson::from(&updated)))
}
