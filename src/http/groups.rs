//! `/api/groups/*`: the MERN app's group routes (list, create, search, join, members, details,
//! admin, messages, seen). The rules are the chat domain's (`chat::groups`); to anyone who is not
//! a member a group answers 404 on every route.

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::chat::{history_page, read_send, HistoryQuery};
use super::session::CurrentUser;
use super::wire::{GroupJson, GroupMessageJson};
use super::{ApiError, AppState, JsonBody};
use crate::chat::{GroupDetails, NewGroup};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/groups", get(list).post(create))
        .route("/api/groups/search", get(search))
        .route("/api/groups/{group_id}", put(update))
        .route("/api/groups/{group_id}/join", post(join))
        .route(
            "/api/groups/{group_id}/members",
            post(add_member).delete(remove_member),
        )
        .route("/api/groups/{group_id}/admin", put(set_admin))
        .route("/api/groups/{group_id}/messages", get(history).post(send))
        .route("/api/groups/{group_id}/messages/seen", put(seen))
}

async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<GroupJson>>, ApiError> {
    let groups = state.chat_state()?.chat.groups(&user).await?;
    Ok(Json(groups.iter().map(GroupJson::from).collect()))
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    name: String,
    description: Option<String>,
    #[serde(default)]
    members: Vec<String>,
}

async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let request = NewGroup {
        name: body.name,
        description: body.description,
        members: body.members,
    };
    let group = state
        .chat_state()?
        .chat
        .create_group(&user, request)
        .await?;
    Ok((StatusCode::CREATED, Json(GroupJson::from(&group))))
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

async fn search(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<GroupJson>>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))
    })?;
    let groups = state
        .chat_state()?
        .chat
        .search_groups(&user, &query.q)
        .await?;
    Ok(Json(groups.iter().map(GroupJson::from).collect()))
}

async fn join(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(group_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let group = state
        .chat_state()?
        .chat
        .join_group(&user, &group_id)
        .await?;
    Ok(Json(json!({
        "message": "Joined the group",
        "group": GroupJson::from(&group),
    })))
}

#[derive(Debug, Deserialize)]
struct MemberBody {
    #[serde(rename = "userId")]
    user_id: String,
}

async fn add_member(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(group_id): Path<String>,
    JsonBody(body): JsonBody<MemberBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let group = state
        .chat_state()?
        .chat
        .add_group_member(&user, &group_id, &body.user_id)
        .await?;
    Ok(Json(json!({
        "message": "Member added",
        "group": GroupJson::from(&group),
    })))
}

async fn remove_member(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(group_id): Path<String>,
    JsonBody(body): JsonBody<MemberBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let group = state
        .chat_state()?
        .chat
        .remove_group_member(&user, &group_id, &body.user_id)
        .await?;
    let message = if body.user_id == user.id {
        "Left the group"
    } else {
        "Member removed"
    };
    // The one who left no longer sees the group; the admin who removed someone does.
    let group = group
        .filter(|_| body.user_id != user.id)
        .map(|group| GroupJson::from(&group));
    Ok(Json(json!({ "message": message, "group": group })))
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    name: Option<String>,
    description: Option<String>,
    #[serde(rename = "profilePic")]
    profile_pic: Option<String>,
}

async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(group_id): Path<String>,
    JsonBody(body): JsonBody<UpdateBody>,
) -> Result<Json<GroupJson>, ApiError> {
    let details = GroupDetails {
        name: body.name,
        description: body.description,
        profile_pic: body.profile_pic,
    };
    let group = state
        .chat_state()?
        .chat
        .update_group(&user, &group_id, details)
        .await?;
    Ok(Json(GroupJson::from(&group)))
}

#[derive(Debug, Deserialize)]
struct AdminBody {
    #[serde(rename = "newAdminId")]
    new_admin_id: String,
}

async fn set_admin(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(group_id): Path<String>,
    JsonBody(body): JsonBody<AdminBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let group = state
        .chat_state()?
        .chat
        .set_group_admin(&user, &group_id, &body.new_admin_id)
        .await?;
    Ok(Json(json!({
        "message": "Admin changed",
        "group": GroupJson::from(&group),
    })))
}

async fn history(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(group_id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<GroupMessageJson>>, ApiError> {
    let page = history_page(query)?;
    let messages = state
        .chat_state()?
        .chat
        .group_history(&user, &group_id, page)
        .await?;
    Ok(Json(messages.iter().map(GroupMessageJson::from).collect()))
}

/// The same bodies as a direct send (JSON or multipart), through the same queue and limits.
async fn send(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(group_id): Path<String>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let chat = state.chat_state()?;
    chat.check_send_rate(&user.id)?;
    chat.check_backlog().await?;
    let input = read_send(request, &state).await?;
    let sent = chat.chat.send_to_group(&user, &group_id, input).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "message": "Message queued for processing",
            "messageId": sent.message_id,
            "jobId": sent.job_id,
            "status": "queued",
        })),
    ))
}

async fn seen(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(group_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let up_to_seq = state
        .chat_state()?
        .chat
        .mark_group_seen(&user, &group_id)
        .await?;
    Ok(Json(json!({
        "message": "Messages marked as seen",
        "upToSeq": up_to_seq,
    })))
}
