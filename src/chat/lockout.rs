//! Failed-login throttling that an attacker cannot aim at someone else.
//!
//! A lock per account lets anyone lock anyone out: ten wrong passwords and the owner is refused
//! too. Here failures are counted per (account, address) instead: past `free` failures from one
//! address the next attempt on that account from that address must wait, the wait doubling with
//! each further failure (1 s, 2 s, 4 s … up to 15 minutes). The owner, signing in from an address
//! that has not failed, is never slowed down. A second count per address, across all accounts,
//! stops one address from spraying guesses over many accounts: past `5 × free` failures in 15
//! minutes it waits out the window.
//!
//! Counts live in memory (a restart forgets them, which only gives a guesser a fresh allowance)
//! and a pair's count ends 15 minutes after its last failure, or at a successful login.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long failures are remembered after the last one.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Longest wait one (account, address) pair is given.
const MAX_WAIT: Duration = WINDOW;
/// Pairs and addresses remembered before the oldest are forgotten.
const TABLE_LIMIT: usize = 100_000;
/// Failures per address across accounts, as a multiple of the per-pair allowance.
const ADDRESS_FACTOR: u32 = 5;

/// A wait in whole seconds, rounded up (at least 1), so a client told `Retry-After: n` and
/// coming back after `n` seconds is not refused again.
pub fn whole_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// What a failure led to, for the caller's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Failures of this (account, address) pair so far.
    pub count: u32,
    /// How long the pair (or the address) must now wait; zero while within the allowance.
    pub wait: Duration,
}

pub struct LoginThrottle {
    /// Failures allowed per pair before waits begin; 0 turns throttling off.
    free: u32,
    pairs: Mutex<HashMap<(String, IpAddr), Count>>,
    addresses: Mutex<HashMap<IpAddr, Count>>,
}

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    /// When the last failure happened.
    last: Instant,
    /// Before this instant, attempts are refused.
    until: Instant,
}

impl LoginThrottle {
    pub fn new(free: u32) -> LoginThrottle {
        LoginThrottle {
            free,
            pairs: Mutex::new(HashMap::new()),
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// How long `address` must still wait before trying `account`, if at all.
    pub fn wait(&self, account: &str, address: IpAddr) -> Option<Duration> {
        self.wait_at(account, address, Instant::now())
    }

    fn wait_at(&self, account: &str, address: IpAddr, now: Instant) -> Option<Duration> {
        if self.free == 0 {
            return None;
        }
        let pair = self
            .pairs
            .lock()
            .get(&(account.to_owned(), address))
            .map(|count| count.until.saturating_duration_since(now));
        let by_address = self
            .addresses
            .lock()
            .get(&address)
            .map(|count| count.until.saturating_duration_since(now));
        pair.into_iter()
            .chain(by_address)
            .max()
            .filter(|wait| !wait.is_zero())
    }

    /// Counts a failed login of `account` from `address`.
    pub fn record_failure(&self, account: &str, address: IpAddr) -> Failure {
        self.record_failure_at(account, address, Instant::now())
    }

    fn record_failure_at(&self, account: &str, address: IpAddr, now: Instant) -> Failure {
        if self.free == 0 {
            return Failure {
                count: 0,
                wait: Duration::ZERO,
            };
        }
        let free = self.free;
        let pair = bump(
            &mut self.pairs.lock(),
            (account.to_owned(), address),
            now,
            |failures| pair_wait(free, failures),
        );
        let address_limit = free.saturating_mul(ADDRESS_FACTOR);
        let by_address = bump(&mut self.addresses.lock(), address, now, |failures| {
            if failures >= address_limit {
                WINDOW
            } else {
                Duration::ZERO
            }
        });
        Failure {
            count: pair.failures,
            wait: pair
                .until
                .max(by_address.until)
                .saturating_duration_since(now),
        }
    }

    /// A correct password from `address`: that pair starts again. The address's own count stays,
    /// so signing in to one's own account does not refill an allowance spent on others.
    pub fn record_success(&self, account: &str, address: IpAddr) {
        if self.free > 0 {
            self.pairs.lock().remove(&(account.to_owned(), address));
        }
    }
}

/// The wait after `failures` failures of one pair: none within the allowance, then 1 s doubling.
fn pair_wait(free: u32, failures: u32) -> Duration {
    if failures < free {
        return Duration::ZERO;
    }
    let doublings = (failures - free).min(20);
    Duration::from_secs(1u64 << doublings).min(MAX_WAIT)
}

fn bump<K: std::hash::Hash + Eq + Clone>(
    table: &mut HashMap<K, Count>,
    key: K,
    now: Instant,
    wait_after: impl Fn(u32) -> Duration,
) -> Count {
    if table.len() >= TABLE_LIMIT && !table.contains_key(&key) {
        forget_oldest(table, now);
    }
    let count = table.entry(key).or_insert(Count {
        failures: 0,
        last: now,
        until: now,
    });
    if now.saturating_duration_since(count.last) >= WINDOW {
        count.failures = 0;
    }
    count.failures = count.failures.saturating_add(1);
    count.last = now;
    count.until = count.until.max(now + wait_after(count.failures));
    *count
}

/// Drops expired entries; if the table is still full, the half with the oldest failures.
fn forget_oldest<K: std::hash::Hash + Eq + Clone>(table: &mut HashMap<K, Count>, now: Instant) {
    table
        .retain(|_, count| now.saturating_duration_since(count.last) < WINDOW || count.until > now);
    if table.len() < TABLE_LIMIT {
        return;
    }
    let mut lasts: Vec<Instant> = table.values().map(|count| count.last).collect();
    lasts.sort_unstable();
    let cutoff = lasts[lasts.len() / 2];
    table.retain(|_, count| count.last > cutoff);
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 66));
    const OWNER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn waits_grow_for_the_failing_address_only() {
        let throttle = LoginThrottle::new(3);
        let start = Instant::now();
        for n in 1..=3 {
            let failure = throttle.record_failure_at("ann@example.com", ATTACKER, start);
            assert_eq!(failure.count, n);
            assert_eq!(failure.wait, pair_wait(3, n));
        }
        assert_eq!(
            throttle.wait_at("ann@example.com", ATTACKER, start),
            Some(Duration::from_secs(1))
        );
        assert_eq!(throttle.wait_at("ann@example.com", OWNER, start), None);
        assert_eq!(throttle.wait_at("bob@example.com", ATTACKER, start), None);
        let later = start + Duration::from_secs(2);
        assert_eq!(throttle.wait_at("ann@example.com", ATTACKER, later), None);
        let fourth = throttle.record_failure_at("ann@example.com", ATTACKER, later);
        assert_eq!(fourth.wait, Duration::from_secs(2));
    }

    #[test]
    fn the_wait_doubles_up_to_fifteen_minutes() {
        assert_eq!(pair_wait(10, 9), Duration::ZERO);
        assert_eq!(pair_wait(10, 10), Duration::from_secs(1));
        assert_eq!(pair_wait(10, 13), Duration::from_secs(8));
        assert_eq!(pair_wait(10, 40), WINDOW);
        assert_eq!(pair_wait(1, u32::MAX), WINDOW);
    }

    #[test]
    fn one_address_spraying_many_accounts_waits_out_the_window() {
        let throttle = LoginThrottle::new(2);
        let start = Instant::now();
        for n in 0..10 {
            throttle.record_failure_at(&format!("user{n}@example.com"), ATTACKER, start);
        }
        let wait = throttle.wait_at("fresh@example.com", ATTACKER, start);
        assert_eq!(wait, Some(WINDOW));
        assert_eq!(throttle.wait_at("fresh@example.com", OWNER, start), None);
    }

    #[test]
    fn success_clears_the_pair_and_old_failures_expire() {
        let throttle = LoginThrottle::new(1);
        let start = Instant::now();
        throttle.record_failure_at("ann@example.com", OWNER, start);
        assert!(throttle.wait_at("ann@example.com", OWNER, start).is_some());
        throttle.record_success("ann@example.com", OWNER);
        assert_eq!(throttle.wait_at("ann@example.com", OWNER, start), None);

        throttle.record_failure_at("bob@example.com", OWNER, start);
        let much_later = start + WINDOW + Duration::from_secs(1);
        let again = throttle.record_failure_at("bob@example.com", OWNER, much_later);
        assert_eq!(
            again.count, 1,
            "a failure after the window starts a new count"
        );
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1900)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn zero_turns_it_off() {
        let throttle = LoginThrottle::new(0);
        for _ in 0..100 {
            throttle.record_failure("ann@example.com", ATTACKER);
        }
        assert_eq!(throttle.wait("ann@example.com", ATTACKER), None);
    }

    #[test]
    fn a_full_table_forgets_its_oldest_half() {
        let mut table = HashMap::new();
        let start = Instant::now();
        for n in 0..TABLE_LIMIT {
            let at = start + Duration::from_millis(n as u64);
            bump(&mut table, n, at, |_| Duration::ZERO);
        }
        let now = start + Duration::from_secs(200);
        bump(&mut table, usize::MAX, now, |_| Duration::ZERO);
        assert!(table.len() <= TABLE_LIMIT / 2 + 1);
        assert!(table.contains_key(&(TABLE_LIMIT - 1)));
        assert!(!table.contains_key(&0));
    }
}
