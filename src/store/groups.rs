//! Job groups for the backends that schedule in process memory (memory and sled): which group
//! has its turn, how many of each group's jobs are active, and each group's rate window.
//!
//! Every waiting job is in one *lane*: its group's, or the lane of the jobs without a group.
//! Each lane orders its jobs as the queue does (priority, then FIFO/LIFO), and the lanes with
//! waiting jobs take turns in a ring: `take` serves the first lane in the ring that may start a
//! job (its group under the concurrency limit and its rate window open), then moves it to the
//! back. A lane skipped because it is at its limit keeps its place, so it is first once a job of
//! it finishes. A queue without groups has one lane and takes exactly as before.
//!
//! The Redis backend keeps the same state in keys (`src/store/redis/`): a sorted set of waiting
//! jobs per lane, a list of lanes in turn order, a hash of active counts per group and a rate
//! window per group; its `take` script walks the list, moves the chosen job to active, counts it
//! in its group and rotates the list, so the transition stays atomic.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::store::job::{GroupLimits, JobState, Millis};
use crate::store::leases::RateWindow;

/// The lanes of one queue; `K` is the backend's key of a waiting job (ordered as it runs).
pub(crate) struct Lanes<K> {
    /// Waiting jobs without a group.
    ungrouped: BTreeSet<K>,
    /// Whether the ungrouped lane is in the ring.
    ungrouped_queued: bool,
    groups: HashMap<Arc<str>, Lane<K>>,
    /// Lanes in turn order (`None`: the ungrouped one). Every lane with waiting jobs is here
    /// once; a lane that ran dry may linger until the next `pick` passes it.
    ring: VecDeque<Option<Arc<str>>>,
    /// Idle groups kept only for their rate window, oldest first: `pick` forgets them once the
    /// window is over, so a queue that saw a million conversations does not keep a million lanes.
    cooling: VecDeque<Arc<str>>,
}

struct Lane<K> {
    waiting: BTreeSet<K>,
    active: u32,
    queued: bool,
    /// Whether the group is in `cooling`.
    cooling: bool,
    rate: RateWindow,
}

impl<K> Default for Lane<K> {
    fn default() -> Self {
        Lane {
            waiting: BTreeSet::new(),
            active: 0,
            queued: false,
            cooling: false,
            rate: RateWindow::default(),
        }
    }
}

impl<K> Default for Lanes<K> {
    fn default() -> Self {
        Lanes {
            ungrouped: BTreeSet::new(),
            ungrouped_queued: false,
            groups: HashMap::new(),
            ring: VecDeque::new(),
            cooling: VecDeque::new(),
        }
    }
}

/// The job `pick` chose, to be taken with [`Lanes::commit`].
pub(crate) struct Choice<K> {
    position: usize,
    pub(crate) key: K,
}

/// What [`Lanes::pick`] found.
pub(crate) enum Pick<K> {
    Job(Choice<K>),
    /// No lane may start a job.
    Empty,
    /// Lanes wait only for their group's rate window, the first of which opens at this time.
    RateLimited(Millis),
}

impl<K: Ord + Clone> Lanes<K> {
    /// A job enters `state` with index key `key`.
    pub(crate) fn enter(&mut self, group: Option<&str>, state: JobState, key: K) {
        match (group, state) {
            (None, JobState::Waiting) => {
                self.ungrouped.insert(key);
                if !self.ungrouped_queued {
                    self.ungrouped_queued = true;
                    self.ring.push_back(None);
                }
            }
            (Some(group), JobState::Waiting) => {
                let (name, lane) = self.lane(group);
                lane.waiting.insert(key);
                if !lane.queued {
                    lane.queued = true;
                    self.ring.push_back(Some(name));
                }
            }
            (Some(group), JobState::Active) => self.lane(group).1.active += 1,
            _ => {}
        }
    }

    /// A job leaves `state`, where its index key was `key`. Returns whether this freed a slot of
    /// a group that has jobs waiting (a job of it may start now: wake a worker).
    pub(crate) fn leave(&mut self, group: Option<&str>, state: JobState, key: &K) -> bool {
        match (group, state) {
            (None, JobState::Waiting) => {
                self.ungrouped.remove(key);
                false
            }
            (Some(group), JobState::Waiting) => {
                if let Some(lane) = self.groups.get_mut(group) {
                    lane.waiting.remove(key);
                }
                self.forget_if_idle(group);
                false
            }
            (Some(group), JobState::Active) => {
                let freed = match self.groups.get_mut(group) {
                    Some(lane) => {
                        lane.active = lane.active.saturating_sub(1);
                        !lane.waiting.is_empty()
                    }
                    None => false,
                };
                self.forget_if_idle(group);
                freed
            }
            _ => false,
        }
    }

    /// The job `take` should start at `now` under `limits`, without taking it. Drops lanes that
    /// ran dry from the ring on the way.
    pub(crate) fn pick(&mut self, limits: GroupLimits, now: Millis) -> Pick<K> {
        self.sweep_cooling(limits, now);
        let mut rate_limited: Option<Millis> = None;
        let mut position = 0;
        while let Some(slot) = self.ring.get(position) {
            let Some(group) = slot.clone() else {
                match self.ungrouped.first() {
                    Some(key) => {
                        return Pick::Job(Choice {
                            position,
                            key: key.clone(),
                        })
                    }
                    None => {
                        self.ring.remove(position);
                        self.ungrouped_queued = false;
                        continue;
                    }
                }
            };
            let Some(lane) = self.groups.get_mut(&group) else {
                self.ring.remove(position);
                continue;
            };
            let Some(first) = lane.waiting.first() else {
                lane.queued = false;
                self.ring.remove(position);
                self.forget_if_idle(&group);
                continue;
            };
            if limits.concurrency.is_some_and(|limit| lane.active >= limit) {
                position += 1;
                continue;
            }
            if let Err(until) = lane.rate.check(limits.rate, now) {
                rate_limited = Some(rate_limited.map_or(until, |earlier| earlier.min(until)));
                position += 1;
                continue;
            }
            return Pick::Job(Choice {
                position,
                key: first.clone(),
            });
        }
        match rate_limited {
            Some(until) => Pick::RateLimited(until),
            None => Pick::Empty,
        }
    }

    /// Takes the job `pick` chose (the caller moves it to `active`, which counts it through
    /// [`Lanes::leave`] and [`Lanes::enter`]): counts the start in its group's rate window and
    /// gives the lane's turn to the next.
    pub(crate) fn commit(&mut self, choice: &Choice<K>, limits: GroupLimits, now: Millis) {
        let Some(slot) = self.ring.remove(choice.position) else {
            return;
        };
        if let Some(group) = &slot {
            if let Some(lane) = self.groups.get_mut(group) {
                // `pick` checked the window at this same `now`, so this counts the start.
                let _ = lane.rate.admit(limits.rate, now);
            }
        }
        self.ring.push_back(slot);
    }

    /// How many jobs of `group` are active.
    #[cfg(test)]
    pub(crate) fn active(&self, group: &str) -> u32 {
        self.groups.get(group).map_or(0, |lane| lane.active)
    }

    fn lane(&mut self, group: &str) -> (Arc<str>, &mut Lane<K>) {
        let name = match self.groups.get_key_value(group) {
            Some((name, _)) => name.clone(),
            None => Arc::from(group),
        };
        let lane = self.groups.entry(name.clone()).or_default();
        (name, lane)
    }

    /// Forgets a group with nothing waiting, nothing active and no turn in the ring. A group
    /// whose rate window was used is remembered until the window is over (see `cooling`), so
    /// its window holds.
    fn forget_if_idle(&mut self, group: &str) {
        let Some((name, lane)) = self.groups.get_key_value(group) else {
            return;
        };
        if !lane.waiting.is_empty() || lane.active > 0 || lane.queued {
            return;
        }
        if lane.rate.is_unused() {
            self.groups.remove(group);
        } else if !lane.cooling {
            let name = name.clone();
            self.cooling.push_back(name.clone());
            if let Some(lane) = self.groups.get_mut(&name) {
                lane.cooling = true;
            }
        }
    }

    /// Forgets the cooling groups, oldest first, whose rate window is over at `now`; a group
    /// that got work again just leaves the list. Stops at the first window still open (the
    /// list is in the order groups went idle, so later windows are rarely over sooner).
    fn sweep_cooling(&mut self, limits: GroupLimits, now: Millis) {
        while let Some(group) = self.cooling.front() {
            match self.groups.get_mut(group) {
                None => {}
                Some(lane) if !lane.waiting.is_empty() || lane.active > 0 || lane.queued => {
                    lane.cooling = false;
                }
                Some(lane) => {
                    if !lane.rate.is_over(limits.rate, now) {
                        return;
                    }
                    self.groups.remove(group);
                }
            }
            self.cooling.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::job::RateLimit;

    fn take(lanes: &mut Lanes<(u64, &'static str)>, limits: GroupLimits) -> Option<&'static str> {
        let Pick::Job(choice) = lanes.pick(limits, 0) else {
            return None;
        };
        lanes.commit(&choice, limits, 0);
        let key = choice.key;
        let group = key.1.split('-').next().filter(|group| *group != "none");
        lanes.leave(group, JobState::Waiting, &key);
        lanes.enter(group, JobState::Active, key);
        Some(key.1)
    }

    fn add(lanes: &mut Lanes<(u64, &'static str)>, order: u64, id: &'static str) {
        let group = id.split('-').next().filter(|group| *group != "none");
        lanes.enter(group, JobState::Waiting, (order, id));
    }

    #[test]
    fn groups_take_turns_and_ungrouped_jobs_are_one_lane() {
        let mut lanes = Lanes::default();
        for (order, id) in [
            (1, "a-1"),
            (2, "a-2"),
            (3, "a-3"),
            (4, "b-1"),
            (5, "none-1"),
        ] {
            add(&mut lanes, order, id);
        }
        add(&mut lanes, 6, "none-2");
        let taken: Vec<_> = (0..6)
            .map_while(|_| take(&mut lanes, GroupLimits::NONE))
            .collect();
        assert_eq!(taken, ["a-1", "b-1", "none-1", "a-2", "none-2", "a-3"]);
    }

    #[test]
    fn a_group_at_its_limit_is_passed_over_and_keeps_its_place() {
        let limits = GroupLimits {
            concurrency: Some(1),
            rate: None,
        };
        let mut lanes = Lanes::default();
        for (order, id) in [(1, "a-1"), (2, "a-2"), (3, "b-1"), (4, "b-2")] {
            add(&mut lanes, order, id);
        }
        assert_eq!(take(&mut lanes, limits), Some("a-1"));
        assert_eq!(take(&mut lanes, limits), Some("b-1"));
        assert_eq!(take(&mut lanes, limits), None);
        assert_eq!(lanes.active("a"), 1);
        // a-1 finishes: a may start its next job, and that frees a waiting group's slot.
        assert!(lanes.leave(Some("a"), JobState::Active, &(1, "a-1")));
        assert_eq!(take(&mut lanes, limits), Some("a-2"));
        assert!(!lanes.leave(Some("a"), JobState::Active, &(2, "a-2")));
        // The next pick passes the dry lane and forgets the idle group.
        assert!(matches!(lanes.pick(limits, 0), Pick::Empty));
        assert!(
            !lanes.groups.contains_key("a"),
            "an idle group is forgotten"
        );
    }

    #[test]
    fn a_group_rate_limit_holds_back_only_that_group() {
        let limits = GroupLimits {
            concurrency: None,
            rate: Some(RateLimit {
                max: 1,
                duration_ms: 1_000,
            }),
        };
        let mut lanes = Lanes::default();
        for (order, id) in [(1, "a-1"), (2, "a-2"), (3, "b-1")] {
            add(&mut lanes, order, id);
        }
        assert_eq!(take(&mut lanes, limits), Some("a-1"));
        assert_eq!(take(&mut lanes, limits), Some("b-1"));
        assert!(matches!(lanes.pick(limits, 0), Pick::RateLimited(1_000)));
        assert!(matches!(lanes.pick(limits, 1_000), Pick::Job(_)));
    }

    #[test]
    fn an_idle_group_is_kept_for_its_rate_window_then_forgotten() {
        let limits = GroupLimits {
            concurrency: None,
            rate: Some(RateLimit {
                max: 1,
                duration_ms: 1_000,
            }),
        };
        let mut lanes = Lanes::default();
        add(&mut lanes, 1, "a-1");
        add(&mut lanes, 2, "a-2");
        assert_eq!(take(&mut lanes, limits), Some("a-1"));
        // a-2 goes (removed while waiting) and a-1 finishes: a is idle but its window holds.
        lanes.leave(Some("a"), JobState::Waiting, &(2, "a-2"));
        lanes.leave(Some("a"), JobState::Active, &(1, "a-1"));
        assert!(matches!(lanes.pick(limits, 999), Pick::Empty));
        assert!(lanes.groups.contains_key("a"), "its window is still open");
        add(&mut lanes, 3, "a-3");
        assert!(matches!(lanes.pick(limits, 999), Pick::RateLimited(1_000)));
        assert_eq!(
            lanes.cooling.len(),
            0,
            "a group with work leaves the cooling list"
        );
        let Pick::Job(choice) = lanes.pick(limits, 1_000) else {
            panic!("the window is over");
        };
        lanes.commit(&choice, limits, 1_000);
        lanes.leave(Some("a"), JobState::Waiting, &(3, "a-3"));
        assert!(matches!(lanes.pick(limits, 1_999), Pick::Empty));
        assert!(lanes.groups.contains_key("a"));
        assert!(matches!(lanes.pick(limits, 2_000), Pick::Empty));
        assert!(
            lanes.groups.is_empty(),
            "the window is over: the group is forgotten"
        );
        assert!(lanes.cooling.is_empty());
    }
}
