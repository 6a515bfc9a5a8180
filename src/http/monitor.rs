//! Queue monitoring routes under `/api/messages/queue/`: `stats`, `health` and `metrics` (public,
//! read-only), and the two admin actions of the MERN app's API, clearing failed jobs
//! (`DELETE /{queueName}/failed`) and retrying them (`POST /{queueName}/retry`), which need the
//! admin key (see `admin.rs`) and are refused in read-only mode.
//!
//! Owns the wire shapes of these routes; the numbers come from the queue engine and the health
//! checks in [`crate::alerts`].

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize, Serializer};

use super::admin::Admin;
use super::{ApiError, AppState};
use crate::alerts::{HealthReport, Issue, QueueHealth, StorageHealth};
use crate::queue::metrics::{MetricsSnapshot, MINUTES_KEPT};
use crate::time::{iso_time, now_millis};

use super::queue_json::{round, PercentilesBody, QueueCounts};

/// The monitoring routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/messages/queue/stats", get(stats))
        .route("/api/messages/queue/health", get(health))
        .route("/api/messages/queue/metrics", get(metrics))
        .route(
            "/api/messages/queue/{queue_name}/failed",
            delete(clear_failed),
        )
        .route("/api/messages/queue/{queue_name}/retry", post(retry))
}

/// A JSON object whose keys keep the order they were pushed in (queues in registration order,
/// `message` first), without pulling in an ordered map type.
#[derive(Debug)]
pub(crate) struct Ordered<T>(pub Vec<(String, T)>);

impl<T: Serialize> Serialize for Ordered<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, value)| (key, value)))
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    queues: Ordered<QueueCounts>,
    totals: Totals,
    uptime_seconds: u64,
    timestamp: String,
}

/// Jobs finished since the server started: `processed` counts completed and failed ones.
#[derive(Debug, Serialize)]
struct Totals {
    processed: u64,
    failed: u64,
}

async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let mut queues = Vec::new();
    let mut totals = Totals {
        processed: 0,
        failed: 0,
    };
    for queue in state.queues().queues() {
        let counts = queue.counts().await?;
        let paused = queue.is_paused().await?;
        let metrics = queue.metrics(1);
        totals.processed += metrics.completed_total + metrics.failed_total;
        totals.failed += metrics.failed_total;
        queues.push((queue.name().to_owned(), QueueCounts::new(counts, paused)));
    }
    Ok(Json(Stats {
        queues: Ordered(queues),
        totals,
        uptime_seconds: state.started_at().elapsed().as_secs(),
        timestamp: iso_time(now_millis()),
    }))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IssueBody {
    check: &'static str,
    status: &'static str,
    message: String,
    value: f64,
    threshold: f64,
}

impl IssueBody {
    fn new(issue: &Issue) -> IssueBody {
        IssueBody {
            check: issue.check.as_str(),
            status: issue.status.as_str(),
            message: issue.message.clone(),
            value: round(issue.value, 4),
            threshold: issue.threshold,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueHealthBody {
    name: String,
    healthy: bool,
    status: &'static str,
    counts: QueueCounts,
    issues: Vec<IssueBody>,
}

impl QueueHealthBody {
    pub fn new(health: &QueueHealth) -> QueueHealthBody {
        QueueHealthBody {
            name: health.name.clone(),
            healthy: health.status == crate::alerts::Status::Healthy,
            status: health.status.as_str(),
            counts: QueueCounts::new(health.counts, health.paused),
            issues: health.issues.iter().map(IssueBody::new).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StorageHealthBody {
    healthy: bool,
    status: &'static str,
    size_on_disk: Option<u64>,
    /// Only for a store whose server decides it (Redis's `appendfsync`).
    #[serde(skip_serializing_if = "Option::is_none")]
    durability: Option<&'static str>,
    free_bytes: Option<u64>,
    issues: Vec<IssueBody>,
}

impl StorageHealthBody {
    fn new(storage: &StorageHealth) -> StorageHealthBody {
        StorageHealthBody {
            healthy: storage.status == crate::alerts::Status::Healthy,
            status: storage.status.as_str(),
            size_on_disk: storage.size_on_disk,
            durability: storage.durability,
            free_bytes: storage.free_bytes,
            issues: storage.issues.iter().map(IssueBody::new).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
struct HealthBody {
    overall: &'static str,
    queues: Ordered<QueueHealthBody>,
    storage: StorageHealthBody,
    timestamp: String,
}

impl HealthBody {
    fn new(report: &HealthReport) -> HealthBody {
        HealthBody {
            overall: report.overall.as_str(),
            queues: Ordered(
                report
                    .queues
                    .iter()
                    .map(|queue| (queue.name.clone(), QueueHealthBody::new(queue)))
                    .collect(),
            ),
            storage: StorageHealthBody::new(&report.storage),
            timestamp: iso_time(now_millis()),
        }
    }
}

/// 200 while healthy or degraded, 503 when unhealthy (so a load balancer or an uptime checker
/// can act on the status alone); the body says why either way.
async fn health(State(state): State<AppState>) -> Response {
    let report = state.health_monitor().check(state.queues()).await;
    let status = if report.overall == crate::alerts::Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(HealthBody::new(&report))).into_response()
}

#[derive(Debug, Deserialize)]
struct MetricsQuery {
    /// Minutes the throughput and percentiles cover (1 to 120, default 60).
    window: Option<usize>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Throughput {
    completed_per_minute: f64,
    failed_per_minute: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueMetricsBody {
    counts: QueueCounts,
    throughput: Throughput,
    processing_time_ms: PercentilesBody,
    wait_time_ms: PercentilesBody,
    error_rate: f64,
    oldest_waiting_ms: u64,
    /// Jobs behind the figures above: completed and failed (for good) in the window.
    completed: u64,
    failed: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricsBody {
    queues: Ordered<QueueMetricsBody>,
    window_minutes: usize,
    timestamp: String,
}

async fn metrics(
    State(state): State<AppState>,
    Query(query): Query<MetricsQuery>,
) -> Result<Json<MetricsBody>, ApiError> {
    let window = query.window.unwrap_or(60);
    if !(1..=MINUTES_KEPT).contains(&window) {
        return Err(ApiError::bad_request(format!(
            "window must be 1 to {MINUTES_KEPT} minutes"
        )));
    }
    let uptime_ms = state.started_at().elapsed().as_millis() as u64;
    let mut queues = Vec::new();
    for queue in state.queues().queues() {
        let counts = queue.counts().await?;
        let paused = queue.is_paused().await?;
        let oldest = queue.oldest_waiting_ms().await?.unwrap_or(0);
        let snapshot = queue.metrics(window);
        let minutes = covered_minutes(&snapshot, window, queue.now(), uptime_ms);
        queues.push((
            queue.name().to_owned(),
            QueueMetricsBody {
                counts: QueueCounts::new(counts, paused),
                throughput: Throughput {
                    completed_per_minute: round(snapshot.completed_in_window as f64 / minutes, 2),
                    failed_per_minute: round(snapshot.failed_in_window as f64 / minutes, 2),
                },
                processing_time_ms: PercentilesBody::new(&snapshot.processing_ms),
                wait_time_ms: PercentilesBody::new(&snapshot.wait_ms),
                error_rate: round(snapshot.error_rate, 4),
                oldest_waiting_ms: oldest,
                completed: snapshot.completed_in_window,
                failed: snapshot.failed_in_window,
            },
        ));
    }
    Ok(Json(MetricsBody {
        queues: Ordered(queues),
        window_minutes: window,
        timestamp: iso_time(now_millis()),
    }))
}

/// How many minutes the window really spans: its full minutes, the elapsed part of the current
/// one, and no more than the server has been up; at least one, so a burst in the first seconds
/// reads as jobs per minute rather than an extrapolation.
fn covered_minutes(snapshot: &MetricsSnapshot, window: usize, now: u64, uptime_ms: u64) -> f64 {
    let full = snapshot.per_minute.len().min(window).saturating_sub(1) as u64 * 60_000;
    let covered = (full + now % 60_000).min(uptime_ms);
    (covered as f64 / 60_000.0).max(1.0)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Cleared {
    success: bool,
    cleared_count: u64,
    queue: String,
}

/// Removes every failed job of the queue (the MERN app's "clear failed jobs").
async fn clear_failed(
    admin: Admin,
    State(state): State<AppState>,
    Path(queue_name): Path<String>,
) -> Result<Json<Cleared>, ApiError> {
    admin.require_write()?;
    let queue = state.queues().queue(&queue_name)?;
    let removed = queue
        .clean(crate::queue::model::JobState::Failed, 0, 0)
        .await?;
    tracing::info!(queue = %queue_name, count = removed.len(), "admin cleared failed jobs");
    Ok(Json(Cleared {
        success: true,
        cleared_count: removed.len() as u64,
        queue: queue_name,
    }))
}

/// A job id as the MERN front end may send it: Bull's ids were numbers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JobIdValue {
    Text(String),
    Number(u64),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetryBody {
    job_id: Option<JobIdValue>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Retried {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    retried_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retried_job: Option<String>,
    queue: String,
}

/// Retries one failed job (`{"jobId": ...}`) or, without a body, every failed job.
async fn retry(
    admin: Admin,
    State(state): State<AppState>,
    Path(queue_name): Path<String>,
    body: Bytes,
) -> Result<Json<Retried>, ApiError> {
    admin.require_write()?;
    let queue = state.queues().queue(&queue_name)?;
    let job_id = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let body: RetryBody = serde_json::from_slice(&body)
            .map_err(|err| ApiError::bad_request(format!("invalid request body: {err}")))?;
        body.job_id.map(|id| match id {
            JobIdValue::Text(text) => text,
            JobIdValue::Number(number) => number.to_string(),
        })
    };
    let retried = match job_id {
        Some(id) => {
            queue.retry(&id).await?;
            tracing::info!(queue = %queue_name, job = %id, "admin retried a failed job");
            Retried {
                success: true,
                retried_count: None,
                retried_job: Some(id),
                queue: queue_name,
            }
        }
        None => {
            let count = queue.retry_all_failed().await?;
            tracing::info!(queue = %queue_name, count, "admin retried every failed job");
            Retried {
                success: true,
                retried_count: Some(count),
                retried_job: None,
                queue: queue_name,
            }
        }
    };
    Ok(Json(retried))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_maps_keep_their_order() {
        let map = Ordered(vec![("b".to_owned(), 1), ("a".to_owned(), 2)]);
        assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"b":1,"a":2}"#);
    }
}
