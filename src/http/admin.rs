//! The admin side: the queue dashboard at `/admin/queues` (static files embedded from
//! `static/admin/`), `GET /admin/queues/info`, the dashboard's JSON API under `/admin/api/`, and
//! a server-sent event stream of queue activity.
//!
//! Who may use it is decided in `key.rs`, by one check that every route taking the admin key
//! shares (the job status route in `chat.rs` too): the `X-Admin-Key` header, compared in
//! constant time, or the `courier_admin` cookie the login form sets, which is a signed session
//! that expires after 12 hours and never holds the key (`cookie.rs`). Failures from one address
//! count together wherever they happen; past `LOGIN_MAX_FAILURES` in 15 minutes the address gets
//! 429 with the remaining wait, even with the right key. `ADMIN_READ_ONLY` lets the key look but
//! refuses every action with 403. Job data is sent as JSON values and rendered by the page as
//! text only.

mod cookie;
mod key;

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::time::Instant;

pub(crate) use key::{admin_from_headers, ClientAddress};
use key::{no_store, session_body};
pub use key::{Admin, AdminAuth};

use super::assets::{Caching, Site};
use super::queue_json::{round, PercentilesBody, QueueCounts};
use super::{ApiError, AppState};
use crate::queue::model::{BackoffKind, Job, JobOptions, JobState, KeepJobs};
use crate::queue::{Queue, QueueEvent};
use crate::time::{iso_time, now_millis};

/// Most jobs one page of the dashboard's job list returns.
const MAX_PAGE: u64 = 100;
/// Most jobs one search reads before it stops and says so.
const MAX_SEARCH_SCAN: u64 = 20_000;
const SEARCH_PAGE: u64 = 500;
/// Longest detail text an event carries (the page fetches the job for more).
const EVENT_DETAIL_CHARS: usize = 200;
/// Events sent per batch of the stream; the rest are counted.
const EVENTS_PER_BATCH: usize = 100;
/// How long the stream gathers events before it sends a batch: bounds its rate under load.
const BATCH_WINDOW: Duration = Duration::from_millis(300);

/// The admin routes: dashboard, info, login and logout, the dashboard's API and its event stream.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/queues") }))
        .route("/admin/queues", get(dashboard))
        .route(
            "/admin/queues/",
            get(|| async { Redirect::to("/admin/queues") }),
        )
        .route("/admin/queues/static/{file}", get(asset))
        .route("/admin/queues/info", get(info))
        .route("/admin/api/queues", get(list_queues))
        .route("/admin/api/events", get(events))
        .route("/admin/api/queues/{queue}/jobs", get(list_jobs))
        .route("/admin/api/queues/{queue}/search", get(search))
        .route("/admin/api/queues/{queue}/metrics", get(queue_metrics))
        .route("/admin/api/queues/{queue}/jobs/{id}", get(job_detail))
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
        .merge(key::router())
}

// ---------------------------------------------------------------------------------------------
// The page and its files

#[derive(rust_embed::Embed)]
#[folder = "static/admin/"]
struct Assets;

/// The page's own scripts and styles only; inline script (and so any injected handler) is
/// refused by the browser even if markup ever slipped through.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

const SITE: Site = Site {
    content_security_policy: CONTENT_SECURITY_POLICY,
};

/// `GET /admin/queues`: the dashboard. The page holds no data (it asks the API, which needs the
/// key), so it is served to anyone; without a session it shows the login form.
async fn dashboard(headers: HeaderMap) -> Response {
    serve_asset("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file == "index.html" {
        return ApiError::not_found("not found").into_response();
    }
    serve_asset(&file, &headers)
}

fn serve_asset(name: &str, request_headers: &HeaderMap) -> Response {
    SITE.file::<Assets>(name, Caching::Revalidate, request_headers)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InfoBody {
    message: &'static str,
    queues: Vec<String>,
    read_only: bool,
    endpoints: Endpoints,
    instructions: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Endpoints {
    dashboard: &'static str,
    info: &'static str,
    stats: &'static str,
    health: &'static str,
    metrics: &'static str,
    clear_failed: &'static str,
    retry: &'static str,
    prometheus: &'static str,
    events: &'static str,
    api: &'static str,
}

/// `GET /admin/queues/info`, as the MERN app had it: what the admin side offers.
async fn info(admin: Admin, State(state): State<AppState>) -> Json<InfoBody> {
    let _ = admin;
    Json(InfoBody {
        message: "Courier queue admin",
        queues: session_body(&state).queues,
        read_only: state.config().admin_read_only,
        endpoints: Endpoints {
            dashboard: "GET /admin/queues",
            info: "GET /admin/queues/info",
            stats: "GET /api/messages/queue/stats",
            health: "GET /api/messages/queue/health",
            metrics: "GET /api/messages/queue/metrics",
            clear_failed: "DELETE /api/messages/queue/{queueName}/failed",
            retry: "POST /api/messages/queue/{queueName}/retry",
            prometheus: "GET /metrics",
            events: "GET /admin/api/events",
            api: "/admin/api/queues",
        },
        instructions: vec![
            "Open /admin/queues in a browser and sign in with the admin key (QUEUE_ADMIN_KEY, or the key printed at first start).",
            "API clients send the key in the X-Admin-Key header.",
            "Set ADMIN_READ_ONLY=true to let the key look without changing anything.",
        ],
    })
}

// ---------------------------------------------------------------------------------------------
// The dashboard's API: reading

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueSummary {
    name: String,
    counts: QueueCounts,
    concurrency: usize,
    rate_limit: Option<RateLimitBody>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RateLimitBody {
    max: u32,
    duration: u64,
}

async fn summarize(queue: &Queue) -> Result<QueueSummary, ApiError> {
    let config = queue.config();
    Ok(QueueSummary {
        name: queue.name().to_owned(),
        counts: QueueCounts::new(queue.counts().await?, queue.is_paused().await?),
        concurrency: config.concurrency,
        rate_limit: config.rate_limit.map(|limit| RateLimitBody {
            max: limit.max,
            duration: limit.duration_ms,
        }),
    })
}

async fn summarize_all(state: &AppState) -> Result<Vec<QueueSummary>, ApiError> {
    let mut summaries = Vec::new();
    for queue in state.queues().queues() {
        summaries.push(summarize(&queue).await?);
    }
    Ok(summaries)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueuesBody {
    queues: Vec<QueueSummary>,
    read_only: bool,
    timestamp: String,
}

async fn list_queues(admin: Admin, State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok((
        [no_store()],
        Json(QueuesBody {
            queues: summarize_all(&state).await?,
            read_only: admin.read_only,
            timestamp: iso_time(now_millis()),
        }),
    )
        .into_response())
}

/// A job's JSON text as a value; text that is not JSON stays a string.
fn json_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn preview(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn parse_state(text: &str) -> Result<JobState, ApiError> {
    JobState::parse(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown state {text:?}: expected waiting, delayed, active, completed or failed"
        ))
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobSummary {
    id: String,
    name: String,
    state: &'static str,
    attempts_made: u32,
    attempts: u32,
    progress: Value,
    created_at: String,
    processed_at: Option<String>,
    finished_at: Option<String>,
    failed_reason: Option<String>,
    data_preview: String,
}

impl JobSummary {
    fn new(job: &Job) -> JobSummary {
        JobSummary {
            id: job.id.clone(),
            name: job.spec.name.clone(),
            state: job.status.state.as_str(),
            attempts_made: job.status.attempts_made,
            attempts: job.spec.opts.attempts,
            progress: json_value(&job.status.progress),
            created_at: iso_time(job.spec.created_at),
            processed_at: job.status.processed_at.map(iso_time),
            finished_at: job.status.finished_at.map(iso_time),
            failed_reason: job.status.failed_reason.clone(),
            data_preview: preview(&job.spec.data, 160),
        }
    }
}

#[derive(Deserialize)]
struct JobsQuery {
    state: String,
    offset: Option<u64>,
    limit: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobsBody {
    queue: String,
    state: &'static str,
    jobs: Vec<JobSummary>,
    total: u64,
    offset: u64,
    limit: u64,
}

async fn list_jobs(
    _admin: Admin,
    State(state): State<AppState>,
    Path(queue_name): Path<String>,
    Query(query): Query<JobsQuery>,
) -> Result<Json<JobsBody>, ApiError> {
    let queue = state.queues().queue(&queue_name)?;
    let job_state = parse_state(&query.state)?;
    let offset = query.offset.unwrap_or(0);
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_PAGE);
    let page = queue.list(job_state, offset, limit).await?;
    Ok(Json(JobsBody {
        queue: queue_name,
        state: job_state.as_str(),
        jobs: page.jobs.iter().map(JobSummary::new).collect(),
        total: page.total,
        offset,
        limit,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobDetail {
    id: String,
    queue: String,
    name: String,
    state: &'static str,
    data: Value,
    options: Value,
    attempts_made: u32,
    attempts: u32,
    stalled_count: u32,
    progress: Value,
    failed_reason: Option<String>,
    stacktrace: Vec<String>,
    return_value: Option<Value>,
    logs: Vec<String>,
    timestamps: JobTimestamps,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobTimestamps {
    created_at: String,
    processed_at: Option<String>,
    finished_at: Option<String>,
    /// When the job entered its current state.
    state_since: String,
    /// When a delayed job is due (or a waiting one became ready).
    ready_at: String,
}

fn keep_value(keep: Option<KeepJobs>) -> Value {
    match keep {
        None => Value::Null,
        Some(keep) if keep.keeps_everything() => Value::Bool(false),
        Some(keep) if keep == KeepJobs::NONE => Value::Bool(true),
        Some(keep) => serde_json::json!({
            "count": keep.count,
            "age": keep.age_ms.map(|ms| ms / 1000),
        }),
    }
}

/// The job's options in Bull's spelling, as they were given.
fn options_value(opts: &JobOptions) -> Value {
    serde_json::json!({
        "priority": opts.priority,
        "delay": opts.delay_ms,
        "attempts": opts.attempts,
        "backoff": opts.backoff.map(|backoff| serde_json::json!({
            "type": match backoff.kind {
                BackoffKind::Fixed => "fixed",
                BackoffKind::Exponential => "exponential",
            },
            "delay": backoff.delay,
            "jitter": backoff.jitter,
        })),
        "timeout": opts.timeout_ms,
        "jobId": opts.job_id,
        "lifo": opts.lifo,
        "removeOnComplete": keep_value(opts.remove_on_complete),
        "removeOnFail": keep_value(opts.remove_on_fail),
    })
}

async fn job_detail(
    _admin: Admin,
    State(state): State<AppState>,
    Path((queue_name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let queue = state.queues().queue(&queue_name)?;
    let Some(job) = queue.get(&id).await? else {
        return Err(ApiError::not_found(format!("job {id} not found")));
    };
    let logs = queue.logs(&id).await?;
    let status = &job.status;
    let detail = JobDetail {
        id: job.id.clone(),
        queue: queue_name,
        name: job.spec.name.clone(),
        state: status.state.as_str(),
        data: json_value(&job.spec.data),
        options: options_value(&job.spec.opts),
        attempts_made: status.attempts_made,
        attempts: job.spec.opts.attempts,
        stalled_count: status.stalled_count,
        progress: json_value(&status.progress),
        failed_reason: status.failed_reason.clone(),
        stacktrace: status.stacktrace.clone(),
        return_value: status.return_value.as_deref().map(json_value),
        logs,
        timestamps: JobTimestamps {
            created_at: iso_time(job.spec.created_at),
            processed_at: status.processed_at.map(iso_time),
            finished_at: status.finished_at.map(iso_time),
            state_since: iso_time(status.entered_at),
            ready_at: iso_time(status.ready_at),
        },
    };
    Ok(([no_store()], Json(detail)).into_response())
}

#[derive(Deserialize)]
struct SearchQuery {
    q: String,
    /// One state, or every state when absent (or `all`).
    state: Option<String>,
    limit: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SearchBody {
    queue: String,
    query: String,
    jobs: Vec<JobSummary>,
    /// Jobs read to answer; `truncated` when the scan stopped at its limit.
    scanned: u64,
    truncated: bool,
}

/// Finds jobs by exact id, or by text (case-insensitive) in their name, data or failed reason.
/// Reads the queue's jobs page by page, newest first, so its cost is bounded by
/// [`MAX_SEARCH_SCAN`], which the answer reports when reached.
async fn search(
    _admin: Admin,
    State(state): State<AppState>,
    Path(queue_name): Path<String>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<SearchBody>, ApiError> {
    let queue = state.queues().queue(&queue_name)?;
    let needle = query.q.trim().to_owned();
    if needle.is_empty() {
        return Err(ApiError::bad_request("search text is empty"));
    }
    let states = match query.state.as_deref() {
        None | Some("") | Some("all") => JobState::ALL.to_vec(),
        Some(text) => vec![parse_state(text)?],
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 200) as usize;
    let lowered = needle.to_lowercase();
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    if let Some(job) = queue.get(&needle).await? {
        if states.contains(&job.status.state) {
            seen.insert(job.id.clone());
            found.push(JobSummary::new(&job));
        }
    }
    let mut scanned = 0u64;
    let mut truncated = false;
    'states: for job_state in states {
        let mut offset = 0;
        loop {
            if found.len() >= limit {
                break 'states;
            }
            if scanned >= MAX_SEARCH_SCAN {
                truncated = true;
                break 'states;
            }
            let page = queue.list(job_state, offset, SEARCH_PAGE).await?;
            let read = page.jobs.len() as u64;
            for job in &page.jobs {
                scanned += 1;
                let matches = job.spec.name.to_lowercase().contains(&lowered)
                    || job.spec.data.to_lowercase().contains(&lowered)
                    || job
                        .status
                        .failed_reason
                        .as_deref()
                        .is_some_and(|reason| reason.to_lowercase().contains(&lowered));
                if matches && found.len() < limit && seen.insert(job.id.clone()) {
                    found.push(JobSummary::new(job));
                }
            }
            if read < SEARCH_PAGE {
                break;
            }
            offset += read;
        }
    }
    Ok(Json(SearchBody {
        queue: queue_name,
        query: needle,
        jobs: found,
        scanned,
        truncated,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MinuteBody {
    at: String,
    completed: u64,
    failed: u64,
    /// Processing time of the attempts that finished in this minute; `None` when none did.
    processing_time_ms: Option<PercentilesBody>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WindowBody {
    minutes: usize,
    processing_time_ms: PercentilesBody,
    wait_time_ms: PercentilesBody,
    jobs: u64,
    error_rate: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueMetricsBody {
    queue: String,
    /// The last hour, oldest minute first.
    per_minute: Vec<MinuteBody>,
    /// Percentiles over the last 5, 15 and 60 minutes.
    windows: Vec<WindowBody>,
    oldest_waiting_ms: u64,
    completed_total: u64,
    failed_total: u64,
}

/// The dashboard's charts: completed and failed jobs and processing time percentiles per minute
/// for the last hour, and processing and wait time percentiles over three windows.
async fn queue_metrics(
    _admin: Admin,
    State(state): State<AppState>,
    Path(queue_name): Path<String>,
) -> Result<Json<QueueMetricsBody>, ApiError> {
    let queue = state.queues().queue(&queue_name)?;
    let hour = queue.metrics(60);
    let windows = [5, 15, 60]
        .into_iter()
        .map(|minutes| {
            let snapshot = if minutes == 60 {
                hour.clone()
            } else {
                queue.metrics(minutes)
            };
            WindowBody {
                minutes,
                processing_time_ms: PercentilesBody::new(&snapshot.processing_ms),
                wait_time_ms: PercentilesBody::new(&snapshot.wait_ms),
                jobs: snapshot.processing_ms.count,
                error_rate: round(snapshot.error_rate, 4),
            }
        })
        .collect();
    Ok(Json(QueueMetricsBody {
        queue: queue_name,
        per_minute: hour
            .per_minute
            .iter()
            .map(|minute| MinuteBody {
                at: iso_time(minute.at),
                completed: minute.completed,
                failed: minute.failed,
                processing_time_ms: (minute.processing_ms.count > 0)
                    .then(|| PercentilesBody::new(&minute.processing_ms)),
            })
            .collect(),
        windows,
        oldest_waiting_ms: queue.oldest_waiting_ms().await?.unwrap_or(0),
        completed_total: hour.completed_total,
        failed_total: hour.failed_total,
    }))
}

// ---------------------------------------------------------------------------------------------
// The dashboard's API: actions (each refused in read-only mode)

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

// ---------------------------------------------------------------------------------------------
// The live event stream

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventBody {
    queue: String,
    kind: &'static str,
    job_id: Option<String>,
    detail: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    queues: Vec<QueueSummary>,
    events: Vec<EventBody>,
    /// Events that happened but are not listed (over the batch size, or lost by a lagging
    /// subscription); the page refreshes what it shows when this is not zero.
    unlisted: u64,
}

struct StreamState {
    state: AppState,
    events: broadcast::Receiver<QueueEvent>,
    started: bool,
}

/// `GET /admin/api/events`: server-sent `update` events. The first one comes at once with every
/// queue's counts; after that one per batch of queue events (gathered for up to 300 ms, so the
/// rate stays bounded under load), with fresh counts and the events themselves. The stream ends
/// when the server begins to shut down.
async fn events(
    _admin: Admin,
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = state.queues().hub().subscribe();
    let stream = futures_util::stream::unfold(
        StreamState {
            state,
            events,
            started: false,
        },
        next_update,
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn next_update(mut stream: StreamState) -> Option<(Result<Event, Infallible>, StreamState)> {
    let mut listed = Vec::new();
    let mut unlisted = 0u64;
    if stream.started {
        let first = tokio::select! {
            () = stream.state.shutdown_started() => return None,
            first = receive(&mut stream.events, &mut unlisted) => first?,
        };
        listed.extend(first);
        let deadline = Instant::now() + BATCH_WINDOW;
        loop {
            tokio::select! {
                () = stream.state.shutdown_started() => return None,
                () = tokio::time::sleep_until(deadline) => break,
                next = receive(&mut stream.events, &mut unlisted) => match next? {
                    Some(event) if listed.len() < EVENTS_PER_BATCH => listed.push(event),
                    Some(_) => unlisted += 1,
                    None => {}
                },
            }
        }
    }
    stream.started = true;
    let queues = match summarize_all(&stream.state).await {
        Ok(queues) => queues,
        Err(err) => {
            tracing::warn!(error = %err, "event stream cannot read the queues");
            Vec::new()
        }
    };
    let update = UpdateBody {
        queues,
        events: listed
            .into_iter()
            .map(|event| EventBody {
                queue: event.queue.to_string(),
                kind: event.kind.as_str(),
                job_id: event.job_id.map(|id| id.to_string()),
                detail: event
                    .detail
                    .map(|detail| preview(&detail, EVENT_DETAIL_CHARS)),
            })
            .collect(),
        unlisted,
    };
    let event = match Event::default().event("update").json_data(&update) {
        Ok(event) => event,
        Err(err) => {
            tracing::error!(error = %err, "cannot encode an admin event");
            Event::default().comment("unencodable update skipped")
        }
    };
    Some((Ok(event), stream))
}

/// The next hub event: `Some(None)` after a lag (counted in `unlisted`), `None` once the hub is
/// gone.
async fn receive(
    events: &mut broadcast::Receiver<QueueEvent>,
    unlisted: &mut u64,
) -> Option<Option<QueueEvent>> {
    match events.recv().await {
        Ok(event) => Some(Some(event)),
        Err(broadcast::error::RecvError::Lagged(missed)) => {
            *unlisted += missed;
            Some(None)
        }
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_cut_on_character_boundaries() {
        assert_eq!(preview("héllo", 2), "hé…");
        assert_eq!(preview("hi", 5), "hi");
    }
}
