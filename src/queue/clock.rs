//! The engine's clock: wall-clock milliseconds that advance with tokio's (pausable) time.
//!
//! Timestamps are epoch milliseconds so they mean something on disk and across restarts, but
//! they are computed as `start + elapsed tokio time`. Under `tokio::time::pause()` a test moves
//! the clock exactly, and in production it never jumps backwards when the wall clock is stepped.

use tokio::time::Instant;

use super::model::Millis;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start_instant: Instant,
    start_millis: Millis,
}

impl Clock {
    pub fn new() -> Clock {
        Clock::starting_at(crate::time::now_millis())
    }

    /// A clock that reads `start_millis` now.
    pub fn starting_at(start_millis: Millis) -> Clock {
        Clock {
            start_instant: Instant::now(),
            start_millis,
        }
    }

    pub fn now(&self) -> Millis {
        self.start_millis + self.start_instant.elapsed().as_millis() as Millis
    }

    /// The tokio instant at which the clock reads `at` (now, if `at` has passed).
    pub fn instant_at(&self, at: Millis) -> Instant {
        let offset = at.saturating_sub(self.start_millis);
        let target = self.start_instant + std::time::Duration::from_millis(offset);
        target.max(Instant::now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
