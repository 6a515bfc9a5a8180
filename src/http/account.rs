//! `/api/auth/*` routes of the account's e-mail: verifying the address, asking for another
//! link, the notification e-mail setting, unsubscribe links (including mail clients'
//! one-click unsubscribe, RFC 8058), and password reset by e-mail.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::ClientIp;
use super::session::CurrentUser;
use super::{ApiError, AppState, JsonBody};
use crate::store::accounts::AccountState;
use crate::store::chat::UserRecord;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/verify-email", post(verify_email))
        .route("/api/auth/resend-verification", post(resend_verification))
        .route("/api/auth/settings", get(settings).put(update_settings))
        .route("/api/auth/unsubscribe", post(unsubscribe))
        .route("/api/auth/forgot-password", post(forgot_password))
        .route("/api/auth/reset-password", post(reset_password))
}

#[derive(Debug, Deserialize)]
struct ForgotBody {
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ResetBody {
    token: Option<String>,
    password: Option<String>,
}

/// `POST /api/auth/forgot-password {email}`: e-mails a reset link if an account has the
/// address. The answer is the same either way, so it tells nobody which addresses have one.
async fn forgot_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<ForgotBody>,
) -> Result<impl IntoResponse, ApiError> {
    let chat = state.chat_state()?;
    chat.check_auth_rate(ip)?;
    chat.chat.request_password_reset(body.email).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "message": "If an account has this address, we sent it a link to reset the password"
        })),
    ))
}

/// `POST /api/auth/reset-password {token, password}`: the page a reset link opens posts the
/// link's secret and the new password. Every session of the account ends; the user signs in
/// again with the new password.
async fn reset_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<ResetBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = state.chat_state()?;
    chat.check_auth_rate(ip)?;
    chat.chat.reset_password(body.token, body.password).await?;
    Ok(Json(json!({
        "message": "Your password is changed: sign in with the new one"
    })))
}

#[derive(Debug, Deserialize)]
struct TokenBody {
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettingsBody {
    email_notifications: Option<bool>,
}

/// The account's e-mail settings, as the profile page shows them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SettingsJson {
    email: String,
    email_verified: bool,
    email_notifications: bool,
}

impl SettingsJson {
    fn new(user: &UserRecord, state: &AccountState) -> SettingsJson {
        SettingsJson {
            email: user.email.clone(),
            email_verified: state.has_verified(&user.email),
            email_notifications: state.email_notifications,
        }
    }
}

/// `POST /api/auth/verify-email {token}`: the page a verification link opens posts its secret
/// here. No session is needed: the secret is the proof.
async fn verify_email(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = state.chat_state()?;
    chat.check_auth_rate(ip)?;
    let token = body.token.unwrap_or_default();
    chat.chat.verify_email(&token).await?;
    Ok(Json(
        json!({ "message": "Email verified", "emailVerified": true }),
    ))
}

/// `POST /api/auth/resend-verification`: another verification e-mail (one a minute).
async fn resend_verification(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<impl IntoResponse, ApiError> {
    let chat = state.chat_state()?;
    chat.chat.resend_verification(&user).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "message": "Verification email sent" })),
    ))
}

async fn settings(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<SettingsJson>, ApiError> {
    let chat = state.chat_state()?;
    let account = chat.chat.account_state(&user.id).await?;
    Ok(Json(SettingsJson::new(&user, &account)))
}

/// `PUT /api/auth/settings {emailNotifications}`.
async fn update_settings(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    JsonBody(body): JsonBody<SettingsBody>,
) -> Result<Json<SettingsJson>, ApiError> {
    let chat = state.chat_state()?;
    let Some(wanted) = body.email_notifications else {
        return Err(ApiError::bad_request(
            "emailNotifications (true or false) is required",
        ));
    };
    let account = chat.chat.set_email_notifications(&user.id, wanted).await?;
    Ok(Json(SettingsJson::new(&user, &account)))
}

#[derive(Debug, Deserialize)]
struct UnsubscribeQuery {
    token: Option<String>,
}

/// `POST /api/auth/unsubscribe`: the token in the query (a mail client's one-click post, whose
/// body is `List-Unsubscribe=One-Click`) or in a JSON body `{token}` (the unsubscribe page).
async fn unsubscribe(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<UnsubscribeQuery>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = state.chat_state()?;
    chat.check_auth_rate(ip)?;
    let token = match query.token {
        Some(token) => token,
        None => serde_json::from_slice::<TokenBody>(&body)
            .ok()
            .and_then(|body| body.token)
            .ok_or_else(|| ApiError::bad_request("token is required"))?,
    };
    chat.chat.unsubscribe(&token).await?;
    Ok(Json(json!({
        "message": "You will get no more notification emails",
        "emailNotifications": false,
    })))
}
