//! The dashboard's API for reading: queues, job lists and details, search, and the charts' metrics.

use std::collections::HashSet;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::key::{no_store, Admin};
use crate::http::queue_json::{round, PercentilesBody, QueueCounts};
use crate::http::{ApiError, AppState};
use crate::queue::model::{BackoffKind, Job, JobOptions, JobState, KeepJobs};
use crate::queue::Queue;
use crate::time::{iso_time, now_millis};

/// The dashboard's reading API.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/api/queues", get(list_queues))
        .route("/admin/api/queues/{queue}/jobs", get(list_jobs))
        .route("/admin/api/queues/{queue}/search", get(search))
        .route("/admin/api/queues/{queue}/metrics", get(queue_metrics))
        .route("/admin/api/queues/{queue}/jobs/{id}", get(job_detail))
}

/// Most jobs one page of the dashboard's job list returns.
const MAX_PAGE: u64 = 100;
/// Most jobs one search reads before it stops and says so.
const MAX_SEARCH_SCAN: u64 = 20_000;
pub(super) const SEARCH_PAGE: u64 = 500;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct QueueSummary {
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

pub(super) async fn summarize(queue: &Queue) -> Result<QueueSummary, ApiError> {
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

pub(super) async fn summarize_all(state: &AppState) -> Result<Vec<QueueSummary>, ApiError> {
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
pub(super) fn json_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

pub(super) fn preview(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

pub(super) fn parse_state(text: &str) -> Result<JobState, ApiError> {
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
        // BullMQ Pro's spelling of a job group.
        "group": opts.group.as_ref().map(|id| serde_json::json!({ "id": id })),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_cut_on_character_boundaries() {
        assert_eq!(preview("héllo", 2), "hé…");
        assert_eq!(preview("hi", 5), "hi");
    }
}
