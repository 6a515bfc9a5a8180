//! Prometheus metrics for the whole process: the recorder behind the `metrics` macros, every
//! metric's name, and the setters other layers call (the WebSocket layer reports its open
//! connections with [`set_ws_connections`]).
//!
//! The recorder is global (the `metrics` facade has one per process) and installed once, by
//! [`init`]; `GET /metrics` (`http/prometheus.rs`) renders it. Knows nothing of HTTP or storage.

use std::sync::{LazyLock, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests by `method`, `route` (the matched route pattern, so label values stay bounded) and
/// `status`.
pub const HTTP_REQUESTS: &str = "courier_http_requests_total";
/// Time to the response head, by `method` and `route`.
pub const HTTP_DURATION: &str = "courier_http_request_duration_seconds";
/// Open WebSocket connections (set by the WebSocket layer).
pub const WS_CONNECTIONS: &str = "courier_ws_connections";
/// Jobs by `queue` and `state` (waiting, delayed, active, completed, failed).
pub const QUEUE_JOBS: &str = "courier_queue_jobs";
/// 1 when the `queue` is paused.
pub const QUEUE_PAUSED: &str = "courier_queue_paused";
/// Jobs completed / failed for good since the process started, by `queue`.
pub const JOBS_COMPLETED: &str = "courier_queue_jobs_completed_total";
pub const JOBS_FAILED: &str = "courier_queue_jobs_failed_total";
pub const SENDS_REFUSED_BUSY: &str = "courier_sends_refused_busy_total";
/// Age of the oldest waiting job, by `queue`.
pub const OLDEST_WAITING: &str = "courier_queue_oldest_waiting_seconds";
/// Processing time percentiles over the last five minutes, by `queue` and `quantile`.
pub const PROCESSING_TIME: &str = "courier_queue_processing_time_seconds";
/// Share of attempts that failed in the last five minutes, by `queue`.
pub const ERROR_RATE: &str = "courier_queue_error_rate";
/// Health: 0 healthy, 1 degraded, 2 unhealthy; by `scope` (`overall`, a queue name, `storage`).
pub const HEALTH_STATUS: &str = "courier_health_status";
/// Bytes the job store occupies on disk.
pub const STORAGE_SIZE: &str = "courier_storage_size_bytes";
/// Durable commits of the store since start-up (one log write and one sync each, shared by
/// every operation that arrived meanwhile); compare with the operations to see group commit work.
pub const STORAGE_COMMITS: &str = "courier_storage_commits_total";
/// Checkpoints of the store since start-up (database flushed and synced, a log emptied).
pub const STORAGE_CHECKPOINTS: &str = "courier_storage_checkpoints_total";
/// Store commits or checkpoints that failed since start-up.
pub const STORAGE_ERRORS: &str = "courier_storage_errors_total";
/// Time to write and sync one commit's log entry: the disk's share of the latency of every
/// durable operation (a send's `202` waits for one or two of these).
pub const STORAGE_COMMIT_DURATION: &str = "courier_storage_commit_duration_seconds";
/// Bytes free for the data directory.
pub const DATA_DIR_FREE: &str = "courier_data_dir_free_bytes";
/// Seconds since the server started.
pub const UPTIME: &str = "courier_uptime_seconds";

/// Bucket bounds of the request latency histogram, in seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds of the commit (log write + sync) histogram, in seconds: a good disk syncs in
/// tens to hundreds of microseconds, a struggling one in tens of milliseconds.
const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The standard process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
/// `process_open_fds`, `process_threads`, ...), read from the OS at each scrape.
static PROCESS: LazyLock<metrics_process::Collector> =
    LazyLock::new(metrics_process::Collector::default);

/// Updates the process metrics; called by each scrape.
pub fn collect_process_metrics() {
    PROCESS.collect();
}

/// Installs the Prometheus recorder (once per process; later calls do nothing). When another
/// recorder is already installed (an embedding program's), Courier's metrics go to that one and
/// `/metrics` answers 503.
pub fn init() {
    handle();
}

/// The installed recorder's handle, installing it on first use.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(install).as_ref()
}

fn install() -> Option<PrometheusHandle> {
    let installed = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), HTTP_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(STORAGE_COMMIT_DURATION.to_owned()),
                COMMIT_BUCKETS,
            )
        })
        .and_then(|builder| builder.install_recorder());
    match installed {
        Ok(handle) => {
            describe();
            PROCESS.describe();
            Some(handle)
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot install the Prometheus recorder; /metrics is off");
            None
        }
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by method, matched route and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "time to the response head by method and matched route"
    );
    describe_gauge!(WS_CONNECTIONS, "open WebSocket connections");
    describe_gauge!(QUEUE_JOBS, "jobs by queue and state");
    describe_gauge!(QUEUE_PAUSED, "1 when the queue is paused");
    describe_counter!(JOBS_COMPLETED, "jobs completed since the process started");
    describe_counter!(
        SENDS_REFUSED_BUSY,
        "sends refused with 503 because the message backlog was at SEND_BACKLOG_LIMIT"
    );
    describe_counter!(
        JOBS_FAILED,
        "jobs failed for good since the process started"
    );
    describe_gauge!(
        OLDEST_WAITING,
        Unit::Seconds,
        "age of the oldest waiting job"
    );
    describe_gauge!(
        PROCESSING_TIME,
        Unit::Seconds,
        "job processing time percentiles over the last five minutes"
    );
    describe_gauge!(
        ERROR_RATE,
        "share of job attempts that failed in the last five minutes"
    );
    describe_gauge!(
        HEALTH_STATUS,
        "health: 0 healthy, 1 degraded, 2 unhealthy (overall, per queue, storage)"
    );
    describe_gauge!(STORAGE_SIZE, Unit::Bytes, "job store size on disk");
    describe_counter!(
        STORAGE_COMMITS,
        "durable store commits (one log write and sync each, shared by the operations in it)"
    );
    describe_counter!(
        STORAGE_CHECKPOINTS,
        "store checkpoints (database flushed and synced, a log emptied)"
    );
    describe_counter!(STORAGE_ERRORS, "store commits or checkpoints that failed");
    describe_histogram!(
        STORAGE_COMMIT_DURATION,
        Unit::Seconds,
        "time to write and sync one commit's log entry"
    );
    describe_gauge!(
        DATA_DIR_FREE,
        Unit::Bytes,
        "free space for the data directory"
    );
    describe_gauge!(UPTIME, Unit::Seconds, "seconds since the server started");
}

/// Reports the number of open WebSocket connections (`courier_ws_connections`).
pub fn set_ws_connections(open: usize) {
    metrics::gauge!(WS_CONNECTIONS).set(open as f64);
}

/// Folds recent histogram samples into the recorder's storage, so memory stays bounded when
/// nothing scrapes `/metrics` for a long time. The health monitor calls it on every check.
pub fn run_upkeep() {
    if let Some(handle) = HANDLE.get().and_then(Option::as_ref) {
        handle.run_upkeep();
    }
}
