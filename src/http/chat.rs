//! `/api/messages/*` (sidebar, history, send, job status, edit, delete, reactions) and
//! `/uploads/<hash>`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::json;

use super::admin::{admin_from_headers, ClientAddress};
use super::session::{authenticate, CurrentUser};
use super::wire::{MessageJson, ReactionJson, SidebarUserJson};
use super::{ApiError, AppState, JsonBody};
use crate::chat::images::ImageKind;
use crate::chat::{AttachmentInput, Chat, ImageInput, SendInput, DEFAULT_PAGE, MAX_PAGE};
use crate::config::Config;
use crate::store::chat::HistoryPage;
use crate::time::iso_time;

/// The chat domain plus the HTTP-level limits in front of it.
pub struct ChatState {
    pub chat: Arc<Chat>,
    pub hub: crate::ws::Hub,
    auth_limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    send_limiter: Option<DefaultKeyedRateLimiter<String>>,
    search_limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// Messages waiting to be processed at which sends are refused; 0: no limit.
    send_backlog_limit: u64,
}

fn per_minute<K: std::hash::Hash + Eq + Clone>(limit: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(limit).map(|limit| RateLimiter::keyed(Quota::per_minute(limit)))
}

fn limited<K: std::hash::Hash + Eq + Clone>(
    limiter: &Option<DefaultKeyedRateLimiter<K>>,
    key: &K,
    message: &str,
) -> Result<(), ApiError> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter
        .check_key(key)
        .map_err(|not_until| ApiError::TooManyRequests {
            message: message.to_owned(),
            retry_after_secs: crate::chat::lockout::whole_seconds(
                not_until.wait_time_from(DefaultClock::default().now()),
            ),
        })
}

impl ChatState {
    pub fn new(chat: Arc<Chat>, hub: crate::ws::Hub, config: &Config) -> ChatState {
        ChatState {
            chat,
            hub,
            auth_limiter: per_minute(config.rate_limit_auth),
            send_limiter: per_minute(config.rate_limit_send),
            search_limiter: per_minute(config.rate_limit_search),
            send_backlog_limit: config.send_backlog_limit,
        }
    }

    /// Sign-up and login attempts per IP.
    pub fn check_auth_rate(&self, ip: IpAddr) -> Result<(), ApiError> {
        limited(
            &self.auth_limiter,
            &ip,
            "Too many attempts, try again later",
        )
    }

    pub(super) fn check_send_rate(&self, user_id: &str) -> Result<(), ApiError> {
        limited(
            &self.send_limiter,
            &user_id.to_owned(),
            "Too many messages, slow down",
        )
    }

    pub(super) fn check_search_rate(&self, user_id: &str) -> Result<(), ApiError> {
        limited(
            &self.search_limiter,
            &user_id.to_owned(),
            "Too many searches, slow down",
        )
    }

    /// Refuses a send while the message queue's backlog is at its limit: past its capacity the
    /// server answers at once with 503 and `Retry-After` instead of accepting work it cannot
    /// deliver for seconds, and the messages it does accept keep their latency.
    pub(super) async fn check_backlog(&self) -> Result<(), ApiError> {
        if self.send_backlog_limit == 0 {
            return Ok(());
        }
        let backlog = self.chat.backlog().await?;
        if backlog < self.send_backlog_limit {
            return Ok(());
        }
        metrics::counter!(crate::telemetry::SENDS_REFUSED_BUSY).increment(1);
        Err(ApiError::Busy {
            message: "The server is busy, try again shortly".to_owned(),
            retry_after_secs: 1,
        })
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/messages/users", get(sidebar))
        .route("/api/messages/{id}", get(history).delete(delete_message))
        .route("/api/messages/edit/{message_id}", put(edit_message))
        .route(
            "/api/messages/reaction/{message_id}",
            get(list_reactions)
                .post(add_reaction)
                .delete(remove_reaction),
        )
        .route("/api/messages/send/{id}", post(send))
        .route("/api/messages/status/{job_id}", get(status))
        .route("/uploads/{hash}", get(upload))
}

async fn sidebar(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<SidebarUserJson>>, ApiError> {
    let entries = state.chat_state()?.chat.sidebar(&user).await?;
    Ok(Json(entries.iter().map(SidebarUserJson::from).collect()))
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    before: Option<u64>,
    after: Option<u64>,
    /// A `changeSeq`: the messages saved or changed after it, in change order.
    #[serde(rename = "updatedAfter")]
    updated_after: Option<u64>,
    limit: Option<usize>,
}

async fn history(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(other_id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<MessageJson>>, ApiError> {
    let page = history_page(query)?;
    let messages = state
        .chat_state()?
        .chat
        .history(&user, &other_id, page)
        .await?;
    Ok(Json(messages.iter().map(MessageJson::from).collect()))
}

/// The page a history query asks for (direct and group history alike).
pub(super) fn history_page(
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<HistoryPage, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!("invalid query: {}", rejection.body_text()))
    })?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(match (query.before, query.after, query.updated_after) {
        (Some(seq), None, None) => HistoryPage::Before { seq, limit },
        (None, Some(seq), None) => HistoryPage::After { seq, limit },
        (None, None, Some(change)) => HistoryPage::ChangedAfter { change, limit },
        (None, None, None) => HistoryPage::Latest { limit },
        _ => {
            return Err(ApiError::bad_request(
                "use one of before, after and updatedAfter",
            ))
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendBody {
    text: Option<String>,
    image: Option<String>,
    client_message_id: Option<String>,
    reply_to: Option<String>,
    file_url: Option<String>,
    file_name: Option<String>,
    file_size: Option<u64>,
    file_type: Option<String>,
    mime_type: Option<String>,
}

/// Reads a send from JSON (`{text, image: dataURL}`) or multipart (`text` field, `image` file).
/// A field given twice, or a file under another name, is refused rather than dropped: a message
/// carries one image, and the sender should learn that a second one did not go.
pub(super) async fn read_send(request: Request, state: &AppState) -> Result<SendInput, ApiError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("multipart/form-data"));
    if !is_multipart {
        let JsonBody(body) = JsonBody::<SendBody>::from_request(request, state).await?;
        return Ok(SendInput {
            text: body.text,
            image: body.image.map(ImageInput::DataUrl),
            client_key: body.client_message_id,
            reply_to: body.reply_to,
            attachment: AttachmentInput {
                url: body.file_url,
                name: body.file_name,
                size: body.file_size,
                file_type: body.file_type,
                mime_type: body.mime_type,
            },
        });
    }
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let mut input = SendInput {
        text: None,
        image: None,
        client_key: None,
        reply_to: None,
        attachment: AttachmentInput::default(),
    };
    while let Some(field) = multipart.next_field().await.map_err(|err| {
        ApiError::bad_request(format!("malformed multipart body: {}", err.body_text()))
    })? {
        let given_twice = match field.name() {
            Some("text") => input.text.is_some(),
            Some("clientMessageId") => input.client_key.is_some(),
            Some("image") => input.image.is_some(),
            Some("replyTo") => input.reply_to.is_some(),
            Some("fileUrl") => input.attachment.url.is_some(),
            Some("fileName") => input.attachment.name.is_some(),
            Some("fileSize") => input.attachment.size.is_some(),
            Some("fileType") => input.attachment.file_type.is_some(),
            Some("mimeType") => input.attachment.mime_type.is_some(),
            _ => false,
        };
        if given_twice {
            return Err(ApiError::bad_request(match field.name() {
                Some("image") => "a message can carry only one image".to_owned(),
                other => format!("the field {} is given twice", other.unwrap_or_default()),
            }));
        }
        match field.name() {
            Some("text") => {
                input.text = Some(
                    field
                        .text()
                        .await
                        .map_err(|err| ApiError::bad_request(err.body_text()))?,
                );
            }
            Some("clientMessageId") => {
                input.client_key = Some(
                    field
                        .text()
                        .await
                        .map_err(|err| ApiError::bad_request(err.body_text()))?,
                );
            }
            Some(
                name @ ("replyTo" | "fileUrl" | "fileName" | "fileSize" | "fileType" | "mimeType"),
            ) if field.file_name().is_none() => {
                let name = name.to_owned();
                let value = field
                    .text()
                    .await
                    .map_err(|err| ApiError::bad_request(err.body_text()))?;
                let attachment = &mut input.attachment;
                match name.as_str() {
                    "replyTo" => input.reply_to = Some(value),
                    "fileUrl" => attachment.url = Some(value),
                    "fileName" => attachment.name = Some(value),
                    "fileType" => attachment.file_type = Some(value),
                    "mimeType" => attachment.mime_type = Some(value),
                    _ => {
                        attachment.size = Some(value.trim().parse().map_err(|_| {
                            ApiError::bad_request("fileSize must be a whole number of bytes")
                        })?);
                    }
                }
            }
            Some("image") => {
                let bytes: Bytes = field.bytes().await.map_err(|err| {
                    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge("request body is too large".to_owned())
                    } else {
                        ApiError::bad_request(err.body_text())
                    }
                })?;
                input.image = Some(ImageInput::Bytes(bytes.to_vec()));
            }
            name if field.file_name().is_some() => {
                return Err(ApiError::bad_request(format!(
                    "unexpected file field {}: send one image as the image field",
                    name.unwrap_or_default()
                )));
            }
            _ => {}
        }
    }
    Ok(input)
}

async fn send(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(receiver_id): Path<String>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let chat = state.chat_state()?;
    chat.check_send_rate(&user.id)?;
    chat.check_backlog().await?;
    let input = read_send(request, &state).await?;
    let sent = chat.chat.send(&user, &receiver_id, input).await?;
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

#[derive(Debug, Deserialize)]
struct EditBody {
    text: String,
}

async fn edit_message(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(message_id): Path<String>,
    JsonBody(body): JsonBody<EditBody>,
) -> Result<Json<MessageJson>, ApiError> {
    let chat = &state.chat_state()?.chat;
    let view = chat.edit_message(&user, &message_id, &body.text).await?;
    Ok(Json(MessageJson::from(&view)))
}

async fn delete_message(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(message_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = &state.chat_state()?.chat;
    let message = chat.delete_message(&user, &message_id).await?;
    Ok(Json(json!({
        "message": "Message deleted",
        "messageId": message.id,
        "isDeleted": message.is_deleted(),
        "deletedAt": message.deleted_at.map(iso_time),
    })))
}

#[derive(Debug, Deserialize)]
struct ReactionBody {
    reaction: String,
}

fn reactions_json(
    message_id: &str,
    reactions: &[crate::store::chat::Reaction],
) -> serde_json::Value {
    let reactions: Vec<ReactionJson> = reactions.iter().map(ReactionJson::from).collect();
    json!({ "messageId": message_id, "reactions": reactions })
}

async fn add_reaction(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(message_id): Path<String>,
    JsonBody(body): JsonBody<ReactionBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = &state.chat_state()?.chat;
    let reactions = chat.react(&user, &message_id, &body.reaction, true).await?;
    Ok(Json(reactions_json(&message_id, &reactions)))
}

async fn remove_reaction(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(message_id): Path<String>,
    JsonBody(body): JsonBody<ReactionBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = &state.chat_state()?.chat;
    let reactions = chat
        .react(&user, &message_id, &body.reaction, false)
        .await?;
    Ok(Json(reactions_json(&message_id, &reactions)))
}

async fn list_reactions(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(message_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = &state.chat_state()?.chat;
    let reactions = chat.reactions(&user, &message_id).await?;
    Ok(Json(reactions_json(&message_id, &reactions)))
}

/// A job's status, for its sender or for the admin key. The key goes through the same check as
/// every admin route (a wrong one counts toward the lockout, and a locked-out address is refused
/// even with the right one); without the header the user's session decides.
async fn status(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chat = &state.chat_state()?.chat;
    let viewer = match admin_from_headers(&state, address, &headers)? {
        Some(_admin) => None,
        None => Some(authenticate(&state, &headers).await?.user.id),
    };
    // Someone else's job is indistinguishable from no job.
    let job = chat
        .job_status(viewer.as_deref(), &job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Job not found"))?;
    let status = &job.status;
    let parse = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text).unwrap_or(serde_json::Value::Null)
    };
    Ok(Json(json!({
        "jobId": job.id,
        "queue": job.queue,
        "name": job.spec.name,
        "state": status.state.as_str(),
        "progress": parse(&status.progress),
        "attempts": job.spec.opts.attempts,
        "attemptsMade": status.attempts_made,
        "result": status.return_value.as_deref().map(parse),
        "failedReason": status.failed_reason,
        "timestamps": {
            "createdAt": iso_time(job.spec.created_at),
            "processedAt": status.processed_at.map(iso_time),
            "finishedAt": status.finished_at.map(iso_time),
        },
    })))
}

async fn upload(
    State(state): State<AppState>,
    Path(hash): Path<String>,
) -> Result<Response, ApiError> {
    let chat = &state.chat_state()?.chat;
    let bytes = chat
        .uploads()
        .read(&hash)
        .await?
        .ok_or_else(|| ApiError::not_found("not found"))?;
    // Only checked images are ever stored, but the type is decided by the bytes, never a name.
    let kind = ImageKind::sniff(&bytes).ok_or_else(|| ApiError::not_found("not found"))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(kind.content_type()),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response())
}
