//! Per-queue metrics: outcomes per minute and exact-bucket latency percentiles.
//!
//! Each minute of the last [`MINUTES_KEPT`] has its own counters and, once something happened in
//! it, HDR histograms of processing and wait time. Percentiles over a window merge the minutes'
//! histograms, so they cover every job in the window (2 significant digits), not a sample.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use super::model::Millis;

/// Minutes of history kept (the dashboard shows the last 60).
pub const MINUTES_KEPT: usize = 120;
const MINUTE_MS: u64 = 60_000;
/// Longest latency tracked exactly: one hour, in microseconds; longer ones count as one hour.
const MAX_TRACKED_US: u64 = 3_600_000_000;

struct Minute {
    /// Minute number since the epoch this slot holds.
    minute: u64,
    completed: u64,
    failed: u64,
    attempts_failed: u64,
    stalled: u64,
    processing: Option<Histogram<u32>>,
    wait: Option<Histogram<u32>>,
}

impl Minute {
    fn empty(minute: u64) -> Minute {
        Minute {
            minute,
            completed: 0,
            failed: 0,
            attempts_failed: 0,
            stalled: 0,
            processing: None,
            wait: None,
        }
    }
}

fn new_histogram() -> Option<Histogram<u32>> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 2).ok()
}

fn record(slot: &mut Option<Histogram<u32>>, micros: u64) {
    if slot.is_none() {
        *slot = new_histogram();
    }
    if let Some(histogram) = slot {
        histogram.saturating_record(micros.clamp(1, MAX_TRACKED_US));
    }
}

/// p50/p95/p99 in milliseconds; zero when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MinuteCounts {
    /// Start of the minute, epoch milliseconds.
    pub at: Millis,
    pub completed: u64,
    pub failed: u64,
    pub stalled: u64,
    /// Processing time of the jobs finished in this minute.
    pub processing_ms: Percentiles,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Oldest first, one entry per minute of the window (zeros included).
    pub per_minute: Vec<MinuteCounts>,
    pub processing_ms: Percentiles,
    pub wait_ms: Percentiles,
    pub completed_in_window: u64,
    pub failed_in_window: u64,
    /// Jobs whose worker was lost (lease expired or process died) in the window.
    pub stalled_in_window: u64,
    /// Failed attempts (retried or final) over all finished attempts in the window.
    pub error_rate: f64,
    pub completed_total: u64,
    pub failed_total: u64,
}

pub struct QueueMetrics {
    minutes: Mutex<Vec<Minute>>,
    completed_total: AtomicU64,
    failed_total: AtomicU64,
}

impl Default for QueueMetrics {
    fn default() -> Self {
        QueueMetrics::new()
    }
}

impl QueueMetrics {
    pub fn new() -> QueueMetrics {
        QueueMetrics {
            minutes: Mutex::new((0..MINUTES_KEPT).map(|_| Minute::empty(u64::MAX)).collect()),
            completed_total: AtomicU64::new(0),
            failed_total: AtomicU64::new(0),
        }
    }

    fn with_minute(&self, now: Millis, change: impl FnOnce(&mut Minute)) {
        let minute = now / MINUTE_MS;
        let mut minutes = self.minutes.lock();
        let slot = &mut minutes[(minute % MINUTES_KEPT as u64) as usize];
        if slot.minute != minute {
            *slot = Minute::empty(minute);
        }
        change(slot);
    }

    pub fn record_completed(&self, now: Millis, processing_us: u64) {
        self.completed_total.fetch_add(1, Ordering::Relaxed);
        self.with_minute(now, |minute| {
            minute.completed += 1;
            record(&mut minute.processing, processing_us);
        });
    }

    /// A failed attempt; `final_failure` when it moved the job to `failed`.
    pub fn record_failed(&self, now: Millis, processing_us: u64, final_failure: bool) {
        if final_failure {
            self.failed_total.fetch_add(1, Ordering::Relaxed);
        }
        self.with_minute(now, |minute| {
            minute.attempts_failed += 1;
            if final_failure {
                minute.failed += 1;
            }
            record(&mut minute.processing, processing_us);
        });
    }

    /// A job lost its worker and went back to `waiting` (or failed for stalling too often).
    pub fn record_stalled(&self, now: Millis) {
        self.with_minute(now, |minute| minute.stalled += 1);
    }

    pub fn record_wait(&self, now: Millis, wait_us: u64) {
        self.with_minute(now, |minute| record(&mut minute.wait, wait_us));
    }

    /// Metrics over the `window` minutes up to and including the current one.
    pub fn snapshot(&self, now: Millis, window: usize) -> MetricsSnapshot {
        let window = window.clamp(1, MINUTES_KEPT);
        let current = now / MINUTE_MS;
        let first = (current + 1).saturating_sub(window as u64);
        let minutes = self.minutes.lock();
        let mut per_minute = Vec::with_capacity(window);
        let mut processing = new_histogram();
        let mut wait = new_histogram();
        let (mut completed, mut failed, mut attempts_failed, mut stalled) = (0, 0, 0, 0);
        for minute in first..=current {
            let slot = &minutes[(minute % MINUTES_KEPT as u64) as usize];
            if slot.minute != minute {
                per_minute.push(MinuteCounts {
                    at: minute * MINUTE_MS,
                    completed: 0,
                    failed: 0,
                    stalled: 0,
                    processing_ms: Percentiles::default(),
                });
                continue;
            }
            per_minute.push(MinuteCounts {
                at: minute * MINUTE_MS,
                completed: slot.completed,
                failed: slot.failed,
                stalled: slot.stalled,
                processing_ms: percentiles(slot.processing.as_ref()),
            });
            completed += slot.completed;
            failed += slot.failed;
            stalled += slot.stalled;
            attempts_failed += slot.attempts_failed;
            merge(&mut processing, slot.processing.as_ref());
            merge(&mut wait, slot.wait.as_ref());
        }
        let attempts = completed + attempts_failed;
        MetricsSnapshot {
            per_minute,
            processing_ms: percentiles(processing.as_ref()),
            wait_ms: percentiles(wait.as_ref()),
            completed_in_window: completed,
            failed_in_window: failed,
            stalled_in_window: stalled,
            error_rate: if attempts == 0 {
                0.0
            } else {
                attempts_failed as f64 / attempts as f64
            },
            completed_total: self.completed_total.load(Ordering::Relaxed),
            failed_total: self.failed_total.load(Ordering::Relaxed),
        }
    }
}

fn merge(into: &mut Option<Histogram<u32>>, from: Option<&Histogram<u32>>) {
    if let (Some(into), Some(from)) = (into.as_mut(), from) {
        // Same bounds on both sides, so adding cannot fail; a failure would only lose a minute.
        let _ = into.add(from);
    }
}

fn percentiles(histogram: Option<&Histogram<u32>>) -> Percentiles {
    match histogram {
        Some(histogram) if !histogram.is_empty() => {
            let at = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
            Percentiles {
                p50: at(0.50),
                p95: at(0.95),
                p99: at(0.99),
                count: histogram.len(),
            }
        }
        _ => Percentiles::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_cover_every_recorded_job_in_the_window() {
        let metrics = QueueMetrics::new();
        let now = 28_000_000 * MINUTE_MS;
        // 100 jobs taking 1..=100 ms, spread over two minutes.
        for ms in 1..=100u64 {
            let at = if ms % 2 == 0 { now } else { now - MINUTE_MS };
            metrics.record_completed(at, ms * 1000);
        }
        let snapshot = metrics.snapshot(now, 60);
        assert_eq!(snapshot.processing_ms.count, 100);
        assert!(
            (snapshot.processing_ms.p50 - 50.0).abs() <= 1.0,
            "{:?}",
            snapshot.processing_ms
        );
        assert!(
            (snapshot.processing_ms.p99 - 99.0).abs() <= 1.0,
            "{:?}",
            snapshot.processing_ms
        );
        assert_eq!(snapshot.per_minute.len(), 60);
        assert_eq!(snapshot.per_minute[59].completed, 50);
        assert_eq!(snapshot.per_minute[58].completed, 50);
        // Each minute has its own percentiles: the even jobs (2..=100 ms) finished in the last.
        assert!((snapshot.per_minute[59].processing_ms.p50 - 50.0).abs() <= 2.0);
        assert_eq!(snapshot.per_minute[57].processing_ms.count, 0);
        assert_eq!(snapshot.completed_in_window, 100);
    }

    #[test]
    fn old_minutes_fall_out_of_the_window_and_their_slots_are_reused() {
        let metrics = QueueMetrics::new();
        metrics.record_failed(0, 5_000, true);
        let later = (MINUTES_KEPT as u64 + 3) * MINUTE_MS;
        metrics.record_completed(later, 1_000);
        let snapshot = metrics.snapshot(later, 60);
        assert_eq!(snapshot.failed_in_window, 0);
        assert_eq!(snapshot.completed_in_window, 1);
        assert_eq!(snapshot.failed_total, 1);
        assert_eq!(snapshot.error_rate, 0.0);
    }

    #[test]
    fn error_rate_counts_failed_attempts_against_all_attempts() {
        let metrics = QueueMetrics::new();
        metrics.record_completed(0, 1_000);
        metrics.record_failed(0, 1_000, false);
        metrics.record_failed(0, 1_000, true);
        metrics.record_completed(0, 1_000);
        metrics.record_stalled(0);
        let snapshot = metrics.snapshot(0, 1);
        assert_eq!(snapshot.stalled_in_window, 1);
        assert_eq!(snapshot.error_rate, 0.5);
        assert_eq!(snapshot.failed_in_window, 1);
    }
}
