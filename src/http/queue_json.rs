//! JSON shapes of a queue's figures, shared by the dashboard's API (`admin`) and the monitoring
//! endpoints (`monitor`).

use serde::Serialize;

use crate::queue::metrics::Percentiles;
use crate::queue::model::Counts;

/// Counts of one queue as the MERN app's `stats` had them, `paused` included.
#[derive(Debug, Serialize)]
pub(crate) struct QueueCounts {
    pub waiting: u64,
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
    pub delayed: u64,
    pub paused: bool,
}

impl QueueCounts {
    pub fn new(counts: Counts, paused: bool) -> QueueCounts {
        QueueCounts {
            waiting: counts.waiting,
            active: counts.active,
            completed: counts.completed,
            failed: counts.failed,
            delayed: counts.delayed,
            paused,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct PercentilesBody {
    p50: f64,
    p95: f64,
    p99: f64,
}

impl PercentilesBody {
    pub fn new(percentiles: &Percentiles) -> PercentilesBody {
        PercentilesBody {
            p50: round(percentiles.p50, 3),
            p95: round(percentiles.p95, 3),
            p99: round(percentiles.p99, 3),
        }
    }
}

/// `value` rounded to `digits` decimal places.
pub(crate) fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}
