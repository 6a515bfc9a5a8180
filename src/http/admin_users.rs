//! The admin's account routes, under `/admin/api/` like the rest of the dashboard's API and
//! behind the same [`Admin`] check (every change also needs a writable key):
//!
//! - `GET /admin/api/users?q=&offset=&limit=`: `{users, total, signupMode}`, newest first;
//! - `POST /admin/api/users/:id/disable` and `…/enable`;
//! - `POST /admin/api/users/:id/sessions/end`: `{sessionsEnded}`;
//! - `DELETE /admin/api/users/:id`: the account and its conversations, `{messagesDeleted}`;
//! - `POST /admin/api/invites {email?, days?}`: 201 `{url, expiresAt, email}`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::admin::Admin;
use super::{ApiError, AppState};
use crate::chat::{AccountSummary, SignupMode};
use crate::time::iso_time;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/api/users", get(list))
        .route("/admin/api/users/{id}", delete(remove))
        .route("/admin/api/users/{id}/disable", post(disable))
        .route("/admin/api/users/{id}/enable", post(enable))
        .route("/admin/api/users/{id}/sessions/end", post(end_sessions))
        .route("/admin/api/invites", post(invite))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    q: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// An account for the admin: the e-mail address included (the admin is the one other party who
/// sees it).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountJson {
    #[serde(rename = "_id")]
    id: String,
    full_name: String,
    email: String,
    email_verified: bool,
    created_at: String,
    disabled_at: Option<String>,
    sessions: usize,
    online: bool,
}

impl From<&AccountSummary> for AccountJson {
    fn from(account: &AccountSummary) -> AccountJson {
        AccountJson {
            id: account.user.id.clone(),
            full_name: crate::chat::names::clean(&account.user.full_name),
            email: account.user.email.clone(),
            email_verified: account.email_verified,
            created_at: iso_time(account.user.created_at),
            disabled_at: account.disabled_at.map(iso_time),
            sessions: account.sessions,
            online: account.online,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListJson {
    users: Vec<AccountJson>,
    total: usize,
    signup_mode: SignupMode,
}

async fn list(
    _admin: Admin,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ListJson>, ApiError> {
    let (chat, _) = state.realtime()?;
    let (accounts, total) = chat
        .list_accounts(
            query.q.as_deref().unwrap_or_default(),
            query.offset.unwrap_or(0),
            query.limit.unwrap_or(50),
        )
        .await?;
    Ok(Json(ListJson {
        users: accounts.iter().map(AccountJson::from).collect(),
        total,
        signup_mode: chat.signup_mode(),
    }))
}

async fn disable(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin.require_write()?;
    let (chat, _) = state.realtime()?;
    chat.set_account_disabled(&id, true).await?;
    Ok(Json(
        json!({ "message": "Account disabled", "disabled": true }),
    ))
}

async fn enable(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin.require_write()?;
    let (chat, _) = state.realtime()?;
    chat.set_account_disabled(&id, false).await?;
    Ok(Json(
        json!({ "message": "Account enabled", "disabled": false }),
    ))
}

async fn end_sessions(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin.require_write()?;
    let (chat, _) = state.realtime()?;
    let ended = chat.end_account_sessions(&id).await?;
    Ok(Json(
        json!({ "message": "Sessions ended", "sessionsEnded": ended }),
    ))
}

async fn remove(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin.require_write()?;
    let (chat, _) = state.realtime()?;
    let messages = chat.delete_account(&id).await?;
    Ok(Json(json!({
        "message": "Account deleted with its conversations",
        "messagesDeleted": messages,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    email: Option<String>,
    days: Option<u64>,
}

async fn invite(
    admin: Admin,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    admin.require_write()?;
    let body: InviteBody = if body.iter().all(u8::is_ascii_whitespace) {
        InviteBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))?
    };
    let (chat, _) = state.realtime()?;
    let invitation = chat.create_invitation(body.email, body.days).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "url": invitation.url,
            "expiresAt": iso_time(invitation.expires_at),
            "email": invitation.email,
        })),
    ))
}
