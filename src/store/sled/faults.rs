//! Storage faults on demand: the seam below the sled backend's write-ahead log, for tests that
//! prove an acknowledged write is never lost and an unacknowledged one never half-applied.
//!
//! A test arms a [`Fault`] for the log files under a data directory; the next log writes there
//! (after `skip` of them) fail as a failing or full disk would, or are torn: half the entry
//! reaches the file and the write reports `EIO`. Nothing is armed unless a test arms it, and
//! the check on the write path is one relaxed atomic load. Only the log is covered: sled's own
//! files are written by sled, which stops the process on an I/O error of its own (README,
//! "Monitoring and admin"), and the real full disk of `tests/disk_full.rs` covers that path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// What an armed write does instead of succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails with `EIO`, writing nothing.
    Eio,
    /// Fails with `ENOSPC`, writing nothing.
    NoSpace,
    /// Writes the first half of its bytes (the rest as zeros), then fails with `EIO`.
    Torn,
}

/// Which log write a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// An entry's append (or the end marker written after a failed one).
    Append,
    /// A log's reset at a checkpoint (or at open).
    Reset,
}

struct Plan {
    id: u64,
    dir: PathBuf,
    site: Site,
    fault: Fault,
    skip: u64,
    left: u64,
    hits: u64,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static PLANS: Mutex<Vec<Plan>> = Mutex::new(Vec::new());

/// An armed fault; dropping it disarms it.
#[must_use = "the fault is disarmed when this is dropped"]
pub struct Armed {
    id: u64,
}

impl Armed {
    /// How many writes this fault has hit so far.
    pub fn hits(&self) -> u64 {
        PLANS
            .lock()
            .iter()
            .find(|plan| plan.id == self.id)
            .map_or(0, |plan| plan.hits)
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut plans = PLANS.lock();
        plans.retain(|plan| plan.id != self.id);
        ARMED.store(!plans.is_empty(), Ordering::Relaxed);
    }
}

/// Makes `count` log writes of `site` under `dir`, after the next `skip` of them, hit `fault`.
pub fn arm(dir: &Path, site: Site, fault: Fault, skip: u64, count: u64) -> Armed {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut plans = PLANS.lock();
    plans.push(Plan {
        id,
        dir: dir.to_owned(),
        site,
        fault,
        skip,
        left: count,
        hits: 0,
    });
    ARMED.store(true, Ordering::Relaxed);
    Armed { id }
}

/// The fault a write of `site` to the log at `path` must hit, if one is armed for it.
pub(super) fn check(path: &Path, site: Site) -> Option<Fault> {
    if !ARMED.load(Ordering::Relaxed) {
        return None;
    }
    let mut plans = PLANS.lock();
    let plan = plans
        .iter_mut()
        .find(|plan| plan.site == site && plan.left > 0 && path.starts_with(&plan.dir))?;
    if plan.skip > 0 {
        plan.skip -= 1;
        return None;
    }
    plan.left -= 1;
    plan.hits += 1;
    Some(plan.fault)
}

/// The error a fault reports.
pub(super) fn error(fault: Fault) -> std::io::Error {
    match fault {
        Fault::NoSpace => std::io::Error::from_raw_os_error(libc::ENOSPC),
        Fault::Eio | Fault::Torn => std::io::Error::from_raw_os_error(libc::EIO),
    }
}
