//! `/api/auth/*`: sign-up, login, logout, check, and profile updates.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use serde_json::json;

use super::session::{cleared_cookie, session_cookie, CurrentUser};
use super::wire::UserJson;
use super::{ApiError, AppState, JsonBody};
use crate::chat::{images, Signup};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/check", get(check))
        .route("/api/auth/update-profile", put(update_profile))
        .route("/api/auth/updateProfile", put(update_profile))
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
    jar: CookieJar,
    JsonBody(body): JsonBody<SignupBody>,
) -> Result<impl IntoResponse, ApiError> {
    let chat = state.chat_state()?;
    chat.check_auth_rate(ip)?;
    let user = chat
        .chat
        .accounts()
        .signup(Signup {
            full_name: body.full_name,
            email: body.email,
            password: body.password,
        })
        .await?;
    // The account exists either way; a link that failed to queue can be asked for again.
    if let Err(err) = chat.chat.send_verification(&user).await {
        tracing::error!(user = %user.id, error = %err, "cannot queue the verification e-mail");
    }
    let token = chat.chat.accounts().issue_token(&user.id)?;
    let jar = jar.add(session_cookie(&state, token));
    Ok((StatusCode::CREATED, jar, Json(UserJson::from(&user))))
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    jar: CookieJar,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<impl IntoResponse, ApiError> {
    let chat = state.chat_state()?;
    chat.check_auth_rate(ip)?;
    let user = chat
        .chat
        .accounts()
        .login(body.email, body.password)
        .await?;
    let token = chat.chat.accounts().issue_token(&user.id)?;
    // The token travels only in the http-only cookie, never in the body.
    let jar = jar.add(session_cookie(&state, token));
    Ok((jar, Json(UserJson::from(&user))))
}

async fn logout(State(state): State<AppState>, jar: CookieJar) -> impl IntoResponse {
    let jar = jar.add(cleared_cookie(&state));
    (jar, Json(json!({ "message": "Logged out successfully" })))
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
