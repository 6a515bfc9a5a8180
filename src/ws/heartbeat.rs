//! Per-socket timekeeping for a session: when to ping, when a silent peer counts as dead
//! ([`Liveness`]), and how many inbound frames a client may send ([`InboundBudget`]).
//!
//! Pure state machines over `tokio::time::Instant`, so tests drive them with a paused clock; they
//! do no I/O and hold no timers themselves.

use std::time::Duration;

use tokio::time::Instant;

/// What a session should do about liveness at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Nothing is due before this instant.
    Wait(Instant),
    /// Send a WebSocket ping now (recorded as sent).
    Ping,
    /// The peer has sent nothing for the whole timeout: close the socket.
    Dead,
}

/// Tracks when a peer was last heard from. Any inbound frame (a pong, a text frame) counts, so a
/// chatty client is never pinged; a silent one is pinged every `interval` and declared dead
/// `timeout` after it was last heard.
#[derive(Debug, Clone)]
pub struct Liveness {
    interval: Duration,
    timeout: Duration,
    last_seen: Instant,
    last_ping: Option<Instant>,
}

impl Liveness {
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Liveness {
        Liveness {
            interval,
            timeout,
            last_seen: now,
            last_ping: None,
        }
    }

    /// Records that the peer sent something at `now`.
    pub fn seen(&mut self, now: Instant) {
        if now > self.last_seen {
            self.last_seen = now;
        }
    }

    /// When the peer counts as dead if nothing arrives first.
    pub fn dead_at(&self) -> Instant {
        later(self.last_seen, self.timeout)
    }

    /// When the next ping is due if nothing arrives first.
    pub fn next_ping_at(&self) -> Instant {
        let since = match self.last_ping {
            Some(ping) if ping > self.last_seen => ping,
            _ => self.last_seen,
        };
        later(since, self.interval)
    }

    /// The earliest instant at which [`Liveness::check`] can return something other than `Wait`.
    pub fn next_deadline(&self) -> Instant {
        self.dead_at().min(self.next_ping_at())
    }

    /// Decides what is due at `now`; a `Ping` answer records the ping as sent.
    pub fn check(&mut self, now: Instant) -> Heartbeat {
        if now >= self.dead_at() {
            Heartbeat::Dead
        } else if now >= self.next_ping_at() {
            self.last_ping = Some(now);
            Heartbeat::Ping
        } else {
            Heartbeat::Wait(self.next_deadline())
        }
    }
}

/// A token bucket over inbound frames: `burst` frames at once, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct InboundBudget {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl InboundBudget {
    /// `per_second == 0` turns the limit off.
    pub fn new(now: Instant, per_second: u32, burst: u32) -> InboundBudget {
        let burst = f64::from(burst.max(1));
        InboundBudget {
            per_second: f64::from(per_second),
            burst,
            tokens: burst,
            refilled_at: now,
        }
    }

    /// Takes one token for a frame arriving at `now`; false means the client is flooding.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.per_second == 0.0 {
            return true;
        }
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// `start + duration`, saturating far in the future instead of panicking on overflow (a huge
/// duration means "never").
fn later(start: Instant, duration: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
    start
        .checked_add(duration)
        .unwrap_or_else(|| start + CENTURY)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(25);
    const TIMEOUT: Duration = Duration::from_secs(60);

    #[test]
    fn silent_peer_is_pinged_then_declared_dead() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start, INTERVAL, TIMEOUT);
        assert_eq!(liveness.check(start), Heartbeat::Wait(start + INTERVAL));
        assert_eq!(liveness.check(start + INTERVAL), Heartbeat::Ping);
        assert_eq!(
            liveness.check(start + INTERVAL),
            Heartbeat::Wait(start + INTERVAL * 2)
        );
        assert_eq!(liveness.check(start + INTERVAL * 2), Heartbeat::Ping);
        assert_eq!(
            liveness.check(start + INTERVAL * 2),
            Heartbeat::Wait(start + TIMEOUT)
        );
        assert_eq!(liveness.check(start + TIMEOUT), Heartbeat::Dead);
    }

    #[test]
    fn inbound_traffic_postpones_pings_and_death() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start, INTERVAL, TIMEOUT);
        liveness.seen(start + Duration::from_secs(20));
        assert_eq!(
            liveness.check(start + INTERVAL),
            Heartbeat::Wait(start + Duration::from_secs(45))
        );
        assert_eq!(
            liveness.check(start + Duration::from_secs(45)),
            Heartbeat::Ping
        );
        liveness.seen(start + Duration::from_secs(46));
        assert_eq!(liveness.dead_at(), start + Duration::from_secs(106));
        assert_eq!(liveness.next_ping_at(), start + Duration::from_secs(71));
    }

    #[test]
    fn huge_durations_mean_never() {
        let start = Instant::now();
        let mut liveness = Liveness::new(start, Duration::MAX, Duration::MAX);
        assert!(matches!(
            liveness.check(start + Duration::from_secs(1_000_000)),
            Heartbeat::Wait(_)
        ));
    }

    #[test]
    fn budget_allows_a_burst_then_the_sustained_rate() {
        let start = Instant::now();
        let mut budget = InboundBudget::new(start, 10, 5);
        assert!((0..5).all(|_| budget.allow(start)));
        assert!(!budget.allow(start));
        assert!(budget.allow(start + Duration::from_millis(100)));
        assert!(!budget.allow(start + Duration::from_millis(100)));
        assert!((0..5).all(|_| budget.allow(start + Duration::from_secs(10))));
        assert!(!budget.allow(start + Duration::from_secs(10)));
    }

    #[test]
    fn zero_rate_turns_the_budget_off() {
        let start = Instant::now();
        let mut budget = InboundBudget::new(start, 0, 1);
        assert!((0..10_000).all(|_| budget.allow(start)));
    }
}
