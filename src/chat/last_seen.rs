//! When a user was last seen, for the "Last seen …" label (`lastSeen` on user JSON), derived
//! without a stored field of its own: now for a user with a connected socket, otherwise the
//! latest use of any of their sessions (written back at most every
//! [`TOUCH_EVERY`](super::sessions::TOUCH_EVERY), so it is that precise).
//!
//! Reading every user's sessions for every sidebar would be one store read per row, so the
//! answer is remembered per user for [`FRESH_FOR`]; a user seen online meanwhile moves it
//! forward at once. Values only move forward, so a session ended at logout (its record is
//! deleted) does not make a user look longer gone than this process already saw. After a
//! restart, a user who logged out of every session has no time until they come back (`null`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::error::ChatError;
use super::Chat;
use crate::queue::model::Millis;

/// How long a user's time read from their sessions is reused.
pub const FRESH_FOR: Duration = Duration::from_secs(5 * 60);
/// Most users remembered before the memo starts again.
const MEMO_LIMIT: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Remembered {
    at: Option<Millis>,
    read: Instant,
}

/// The remembered times, one per user.
#[derive(Default)]
pub struct LastSeenMemo {
    users: Mutex<HashMap<String, Remembered>>,
}

impl LastSeenMemo {
    fn fresh(&self, user: &str) -> Option<Option<Millis>> {
        self.users
            .lock()
            .get(user)
            .filter(|remembered| remembered.read.elapsed() < FRESH_FOR)
            .map(|remembered| remembered.at)
    }

    /// Records `at` (the later of it and what was known), read now.
    fn remember(&self, user: &str, at: Option<Millis>) -> Option<Millis> {
        let mut users = self.users.lock();
        if users.len() >= MEMO_LIMIT && !users.contains_key(user) {
            users.clear();
        }
        let known = users.get(user).and_then(|remembered| remembered.at);
        let at = known.max(at);
        users.insert(
            user.to_owned(),
            Remembered {
                at,
                read: Instant::now(),
            },
        );
        at
    }
}

impl Chat {
    /// When each user was last seen by someone who may see their presence: `shown_online`
    /// says whether the viewer sees them online now (a user who blocks the viewer never is, and
    /// gets `None`: their activity is as hidden as their presence). Order kept.
    pub async fn last_seen(
        &self,
        users: &[(&str, Presence)],
        now: Millis,
    ) -> Result<Vec<Option<Millis>>, ChatError> {
        let mut times = Vec::with_capacity(users.len());
        for (user, presence) in users {
            let time = match presence {
                Presence::Hidden => None,
                Presence::Online => self.last_seen_memo.remember(user, Some(now)),
                Presence::Offline => match self.last_seen_memo.fresh(user) {
                    Some(at) => at,
                    None => {
                        let latest = self
                            .store
                            .sessions_of(user)
                            .await?
                            .iter()
                            .map(|(_, session)| session.last_seen_at.max(session.created_at))
                            .max();
                        self.last_seen_memo.remember(user, latest)
                    }
                },
            };
            times.push(time);
        }
        Ok(times)
    }
}

/// What a viewer sees of another user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Online,
    Offline,
    /// The user blocks the viewer.
    Hidden,
}

impl Presence {
    pub fn of(online: bool, blocks_viewer: bool) -> Presence {
        match (blocks_viewer, online) {
            (true, _) => Presence::Hidden,
            (false, true) => Presence::Online,
            (false, false) => Presence::Offline,
        }
    }
}
