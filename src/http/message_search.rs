//! `GET /api/messages/search?q=&userId=|groupId=&sender=&messageType=&dateRange=&page=&limit=`:
//! the caller's messages containing words that start with each word of `q`, newest first, as
//! `{messages, pagination}` (see `chat::message_search`). A static path: axum matches it before
//! `/api/messages/{id}`.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::session::CurrentUser;
use super::wire::GroupMessageJson;
use super::{ApiError, AppState};
use crate::chat::message_search::MessageSearch;
use crate::store::search::MessageKind;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Page size when the query names none.
const DEFAULT_LIMIT: usize = 20;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/messages/search", get(search))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchParams {
    q: Option<String>,
    user_id: Option<String>,
    group_id: Option<String>,
    sender: Option<String>,
    message_type: Option<String>,
    date_range: Option<String>,
    page: Option<usize>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Pagination {
    current_page: usize,
    total_pages: usize,
    total_messages: usize,
    limit: usize,
    has_more: bool,
}

#[derive(Debug, Serialize)]
struct SearchAnswer {
    messages: Vec<GroupMessageJson>,
    pagination: Pagination,
}

/// A parameter the stock front end sends as `""` or `"all"` when it means no filter.
fn filter(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty() && value != "all")
}

fn kind(value: Option<String>) -> Result<Option<MessageKind>, ApiError> {
    Ok(match filter(value).as_deref() {
        None => None,
        Some("text") => Some(MessageKind::Text),
        Some("image") => Some(MessageKind::Image),
        Some("file") => Some(MessageKind::File),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "messageType {other:?} is not one of all, text, image, file"
            )))
        }
    })
}

/// The start of a `dateRange`: `today` (since midnight UTC), `week`, `month`, `year` (the last
/// 7, 30, 365 days) or `all`.
fn since(value: Option<String>, now: u64) -> Result<Option<u64>, ApiError> {
    let days = match filter(value).as_deref() {
        None => return Ok(None),
        Some("today") => return Ok(Some(now - now % DAY_MS)),
        Some("week") => 7,
        Some("month") => 30,
        Some("year") => 365,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dateRange {other:?} is not one of all, today, week, month, year"
            )))
        }
    };
    Ok(Some(now.saturating_sub(days * DAY_MS)))
}

async fn search(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchAnswer>, ApiError> {
    let Query(params) = params.map_err(|rejection| {
        ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))
    })?;
    let chat_state = state.chat_state()?;
    chat_state.check_search_rate(&user.id)?;
    let now = crate::time::now_millis();
    let page = params.page.unwrap_or(1);
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let search = MessageSearch {
        text: params.q.unwrap_or_default(),
        with_user: filter(params.user_id),
        group: filter(params.group_id),
        sender: filter(params.sender),
        kind: kind(params.message_type)?,
        since: since(params.date_range, now)?,
        until: None,
        page,
        limit,
    };
    let found = chat_state.chat.search_messages(&user, search).await?;
    let total_pages = found.total.div_ceil(limit);
    Ok(Json(SearchAnswer {
        messages: found.messages.iter().map(GroupMessageJson::from).collect(),
        pagination: Pagination {
            current_page: page,
            total_pages,
            total_messages: found.total,
            limit,
            has_more: page < total_pages,
        },
    }))
}
