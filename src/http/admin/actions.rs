//! The dashboard's API for actions on jobs and queues; each is refused in read-only mode.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::key::Admin;
use super::read::{parse_state, SEARCH_PAGE};
use crate::http::{ApiError, AppState};
use crate::queue::model::JobState;

/// The dashboard's actions.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/api/queues/{queue}/jobs/{id}", delete(remove_job))
        .route("/admin/api/queues/{queue}/jobs/{id}/retry", post(retry_job))
        .route(
            "/admin/api/queues/{queue}/jobs/{id}/promote",
            post(promote_job),
        )
        .route(
            "/admin/api/queues/{queue}/jobs/{id}/cancel",
            post(cancel_job),
        )
        .route("/admin/api/queues/{queue}/retry-failed", post(retry_failed))
        .route(
            "/admin/api/queues/{queue}/promote-delayed",
            post(promote_delayed),
        )
        .route("/admin/api/queues/{queue}/clean", post(clean))
        .route("/admin/api/queues/{queue}/drain", post(drain))
        .route("/admin/api/queues/{queue}/pause", post(pause))
        .route("/admin/api/queues/{queue}/resume", post(resume))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActionBody {
    success: bool,
    queue: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
}

fn done(queue: String, job_id: Option<String>, count: Option<u64>) -> Json<ActionBody> {
    Json(ActionBody {
        success: true,
        queue,
        job_id,
        count,
    })
}

/// An optional JSON body: empty means the defaults.
fn optional_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("invalid request body: {err}")))
}

async fn retry_job(
    admin: Admin,
    State(state): State<AppState>,
    Path((queue_name, id)): Path<(String, String)>,
) -> Result<Json<ActionBody>, ApiError> {
    admin.require_write()?;
    state.queues().queue(&queue_name)?.retry(&id).await?;
    tracing::info!(queue = %queue_name, job = %id, "admin retried a job");
    Ok(done(queue_name, Some(id), None))
}

async fn promote_job(
    admin: Admin,
    State(state): State<AppState>,
    Path((queue_name, id)): Path<(String, String)>,
) -> Result<Json<ActionBody>, ApiError> {
    admin.require_write()?;
    state.queues().queue(&queue_name)?.promote(&id).await?;
    tracing::info!(queue = %queue_name, job = %id, "admin promoted a job");
    Ok(done(queue_name, Some(id), None))
}

#[derive(Deserialize, Default)]
struct CancelBody {
    reason: Option<String>,
}

/// Fails an active job now (its processor is stopped at its next await point).
async fn cancel_job(
    admin: Admin,
    State(state): State<AppState>,
    Path((queue_name, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ActionBody>, ApiError> {
    admin.require_write()?;
    let body: CancelBody = optional_body(&body)?;
    let reason = body
        .reason
        .map(|reason| reason.trim().to_owned())
        .filter(|reason| !reason.is_empty())
        .unwrap_or_else(|| "cancelled by an admin".to_owned());
    state
        .queues()
        .queue(&queue_name)?
        .cancel(&id, &reason)
        .await?;
    tracing::info!(queue = %queue_name, job = %id, "admin cancelled a job");
    Ok(done(queue_name, Some(id), None))
}

async fn remove_job(
    admin: Admin,
    State(state): State<AppState>,
    Path((queue_name, id)): Path<(String, String)>,
) -> Result<Json<ActionBody>, ApiError> {
    admin.require_write()?;
    state.queues().queue(&queue_name)?.remove(&id).await?;
    tracing::info!(queue = %queue_name, job = %id, "admin removed a job");
    Ok(done(queue_name, Some(id), None))
}

async fn retry_failed(
    admin: Admin,
    State(state): State<AppState>,
    Path(queue_name): Path<String>,
) -> Result<Json<ActionBody>, ApiError> {
    admin.require_write()?;
    let count = state
        .queues()
        .queue(&queue_name)?
        .retry_all_failed()
        .await?;
    tracing::info!(queue = %queue_name, count, "admin retried every failed job");
    Ok(done(queue_name, None, Some(count)))
}

/// Runs every delayed job now. Jobs that left `delayed` meanwhile are skipped.
async fn promote_delayed(
    admin: Admin,
    State(state): State<AppState>,
    Path(queue_name): Path<String>,
) -> Result<Json<ActionBody>, ApiError> {
    admin.require_write()?;
    let queue = state.queues().queue(&queue_name)?;
    let mut promoted = 0;
    loop {
        // Promoted jobs leave the list, so the first page is always the next one.
        let page = queue.list(JobState::Delayed, 0, SEARCH_PAGE).await?;
        let mut moved = 0;
        for job in &page.jobs {
            match queue.promote(&job.id).await {
                Ok(()) => moved += 1,
                Err(crate::queue::QueueError::WrongState { .. })
                | Err(crate::queue::QueueError::JobNotFound(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        promoted += moved;
        if moved == 0 || (page.jobs.len() as u64) < SEARCH_PAGE {
            break;
        }
    }
    tracing::info!(queue = %queue_name, count = promoted, "admin promoted every delayed job");
    Ok(done(queue_name, None, Some(promoted)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CleanBody {
    state: String,
    /// Only jobs that entered the state at least this long ago.
    grace_ms: Option<u64>,
    /// At most this many (0 or absent: all).
    limit: Option<u64>,
}

async fn clean(
    admin: Admin,
    State(state): State<AppState>,
    Path(queue_name): Path<String>,
    body: Bytes,
) -> Result<Json<ActionBody>, ApiError> {
    admin.require_write()?;
    let body: CleanBody = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("invalid request body: {err}")))?;
    let job_state = parse_state(&body.state)?;
    let removed = state
        .queues()
        .queue(&queue_name)?
        .clean(
            job_state,
            body.grace_ms.unwrap_or(0),
            body.limit.unwrap_or(0),
        )
        .await?;
    tracing::info!(queue = %queue_name, state = %job_state, count = removed.len(), "admin cleaned jobs");
    Ok(done(queue_name, None, Some(removed.len() as u64)))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DrainBody {
    include_delayed: Option<bool>,
}

/// Removes every waiting job (and delayed ones when asked): bull-board's "empty".
async fn drain(
    admin: Admin,
    State(state): State<AppState>,
    Path(queue_name): Path<String>,
    body: Bytes,
) -> Result<Json<ActionBody>, ApiError> {
    admin.require_write()?;
    let body: DrainBody = optional_body(&body)?;
    let count = state
        .queues()
        .queue(&queue_name)?
        .drain(body.include_delayed.unwrap_or(false))
        .await?;
    tracing::info!(queue = %queue_name, count, "admin drained the queue");
    Ok(done(queue_name, None, Some(count)))
}

async fn pause(
    admin: Admin,
    State(state): State<AppState>,
    Path(queue_name): Path<String>,
) -> Result<Json<ActionBody>, ApiError> {
    admin.require_write()?;
    state.queues().queue(&queue_name)?.pause().await?;
    tracing::info!(queue = %queue_name, "admin paused the queue");
    Ok(done(queue_name, None, None))
}

async fn resume(
    admin: Admin,
    State(state): State<AppState>,
    Path(queue_name): Path<String>,
) -> Result<Json<ActionBody>, ApiError> {
    admin.require_write()?;
    state.queues().queue(&queue_name)?.resume().await?;
    tracing::info!(queue = %queue_name, "admin resumed the queue");
    Ok(done(queue_name, None, None))
}
