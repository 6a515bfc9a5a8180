//! `/api/users/*`: blocking. `POST /api/users/:id/block` and `DELETE /api/users/:id/block`
//! block and unblock (both idempotent, 204); `GET /api/users/blocked` lists whom the caller
//! blocks.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::session::CurrentUser;
use super::wire::PublicUserJson;
use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users/blocked", get(blocked))
        .route("/api/users/{id}/block", post(block).delete(unblock))
}

async fn block(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(other_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.chat_state()?.chat.block(&user, &other_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unblock(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(other_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.chat_state()?.chat.unblock(&user, &other_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn blocked(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<PublicUserJson>>, ApiError> {
    let users = state.chat_state()?.chat.blocked_users(&user).await?;
    Ok(Json(users.iter().map(PublicUserJson::from).collect()))
}
