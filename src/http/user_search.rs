//! `GET /api/messages/users/search?q=`: other users by name (or exact e-mail address), at most
//! 20, in the sidebar's user shape without the e-mail address (see `chat::user_search`).
//! A static path: axum matches it before `/api/messages/{id}`.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::session::CurrentUser;
use super::wire::PublicUserJson;
use super::{ApiError, AppState};
use crate::chat::user_search::FoundUser;
use crate::time::iso_time;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/messages/users/search", get(search))
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

/// One user found.
#[derive(Debug, Serialize)]
struct FoundUserJson {
    #[serde(flatten)]
    user: PublicUserJson,
    #[serde(rename = "createdAt")]
    created_at: String,
    online: bool,
    #[serde(rename = "lastSeen")]
    last_seen: Option<String>,
}

impl From<&FoundUser> for FoundUserJson {
    fn from(found: &FoundUser) -> FoundUserJson {
        FoundUserJson {
            user: PublicUserJson::from(&found.user),
            created_at: iso_time(found.user.created_at),
            online: found.online,
            last_seen: found.last_seen.map(iso_time),
        }
    }
}

async fn search(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<FoundUserJson>>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))
    })?;
    let found = state
        .chat_state()?
        .chat
        .search_users(
            &user,
            query.q.as_deref().unwrap_or_default(),
            crate::time::now_millis(),
        )
        .await?;
    Ok(Json(found.iter().map(FoundUserJson::from).collect()))
}
