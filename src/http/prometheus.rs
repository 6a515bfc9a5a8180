//! `GET /metrics` in the Prometheus text format, and the middleware that counts and times every
//! HTTP request by its matched route.
//!
//! Queue, health and storage gauges are read when Prometheus scrapes (the engine keeps the
//! numbers; copying them on every job would only add work); request metrics are recorded as
//! requests finish. Metric names live in [`crate::telemetry`].

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::{counter, gauge, histogram};

use super::{error_response, AppState};
use crate::alerts::Status;
use crate::queue::model::JobState;
use crate::telemetry;

/// The `/metrics` route.
pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// Counts and times one request. Installed with `Router::layer`, which wraps each route after
/// routing, so the matched route pattern (`/api/messages/{id}`, not the path) is the label and
/// label values stay bounded; requests no route matched share `route="unmatched"`.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    counter!(telemetry::HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    histogram!(telemetry::HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Methods outside the usual set share one label value, so a client cannot grow the series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_value(status: Status) -> f64 {
    match status {
        Status::Healthy => 0.0,
        Status::Degraded => 1.0,
        Status::Unhealthy => 2.0,
    }
}

async fn scrape(State(state): State<AppState>) -> Response {
    let Some(handle) = telemetry::handle() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not available in this process",
        );
    };
    let queues = state.queues();
    if let Ok((_, hub)) = state.realtime() {
        telemetry::set_ws_connections(hub.connection_count());
    }
    let report = state.health_monitor().check(queues).await;
    gauge!(telemetry::HEALTH_STATUS, "scope" => "overall").set(status_value(report.overall));
    gauge!(telemetry::HEALTH_STATUS, "scope" => "storage").set(status_value(report.storage.status));
    for health in &report.queues {
        let name = health.name.clone();
        gauge!(telemetry::HEALTH_STATUS, "scope" => name.clone()).set(status_value(health.status));
        for job_state in JobState::ALL {
            gauge!(telemetry::QUEUE_JOBS, "queue" => name.clone(), "state" => job_state.as_str())
                .set(health.counts.get(job_state) as f64);
        }
        gauge!(telemetry::QUEUE_PAUSED, "queue" => name.clone()).set(if health.paused {
            1.0
        } else {
            0.0
        });
    }
    for queue in queues.queues() {
        let name = queue.name().to_owned();
        let metrics = queue.metrics(crate::alerts::WINDOW_MINUTES);
        counter!(telemetry::JOBS_COMPLETED, "queue" => name.clone())
            .absolute(metrics.completed_total);
        counter!(telemetry::JOBS_FAILED, "queue" => name.clone()).absolute(metrics.failed_total);
        gauge!(telemetry::ERROR_RATE, "queue" => name.clone()).set(metrics.error_rate);
        for (quantile, millis) in [
            ("0.5", metrics.processing_ms.p50),
            ("0.95", metrics.processing_ms.p95),
            ("0.99", metrics.processing_ms.p99),
        ] {
            gauge!(telemetry::PROCESSING_TIME, "queue" => name.clone(), "quantile" => quantile)
                .set(millis / 1000.0);
        }
        match queue.oldest_waiting_ms().await {
            Ok(oldest) => gauge!(telemetry::OLDEST_WAITING, "queue" => name)
                .set(oldest.unwrap_or(0) as f64 / 1000.0),
            Err(err) => {
                tracing::warn!(queue = %name, error = %err, "cannot read the oldest waiting job")
            }
        }
    }
    if let Some(size) = report.storage.size_on_disk {
        gauge!(telemetry::STORAGE_SIZE).set(size as f64);
    }
    let activity = queues
        .store()
        .stats()
        .map(|stats| stats.activity())
        .unwrap_or_default();
    for (name, value) in [
        (telemetry::STORAGE_COMMITS, activity.commits),
        (telemetry::STORAGE_CHECKPOINTS, activity.checkpoints),
        (telemetry::STORAGE_ERRORS, activity.errors),
    ] {
        if let Some(value) = value {
            counter!(name).absolute(value);
        }
    }
    if let Some(free) = report.storage.free_bytes {
        gauge!(telemetry::DATA_DIR_FREE).set(free as f64);
    }
    gauge!(telemetry::UPTIME).set(state.started_at().elapsed().as_secs_f64());
    telemetry::collect_process_metrics();

    handle.run_upkeep();
    let body = handle.render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}
