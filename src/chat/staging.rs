//! Stored files a queued send refers to before its message is saved.
//!
//! A send stores its image (or names its uploaded file) and queues a job; the message that
//! refers to the file is saved only when the job runs. Files are content-addressed, so a delete
//! of another message showing the same bytes would, in that window, find no saved message
//! referring to the file and remove it from under the queued send. A send holds its files here
//! from before its job is queued until the job has run; a file held is never removed, and a
//! removal that checked the store while a send came and went does not remove either
//! ([`Staging::remove_unless_held`]).
//!
//! Held in memory: after a restart, the jobs found waiting or active hold their files again
//! (`Chat::restore_backlog`). A job that never finishes (failed for good) stops holding after
//! [`HOLD_AT_MOST`]; a file it held then goes with the next delete that releases it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::messages::MessageJob;
use crate::store::chat::canonical_file_url;

/// Longest a send holds its files (longer than a message job's retries take).
pub const HOLD_AT_MOST: Duration = Duration::from_secs(60 * 60);

#[derive(Default)]
pub struct Staging {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// File URL → the sends holding it, when the last one began, and its number.
    held: HashMap<String, Hold>,
    /// Numbers every hold, so a removal can tell whether one began while it checked.
    holds: u64,
}

struct Hold {
    sends: u32,
    since: Instant,
    number: u64,
}

/// What a removal saw before it checked the store: see [`Staging::remove_unless_held`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(Option<u64>);

/// The stored-file URLs a message job refers to.
pub fn files_of(job: &MessageJob) -> Vec<String> {
    let mut urls = Vec::new();
    if let Some(hash) = &job.image_hash {
        urls.push(format!("/uploads/{hash}"));
    }
    if let Some(attachment) = &job.attachment {
        urls.push(canonical_file_url(&attachment.url).to_owned());
    }
    urls
}

impl Staging {
    pub fn hold(&self, urls: &[String]) {
        let mut state = self.state.lock();
        for url in urls {
            state.holds += 1;
            let number = state.holds;
            let hold = state.held.entry(url.clone()).or_insert(Hold {
                sends: 0,
                since: Instant::now(),
                number,
            });
            hold.sends += 1;
            hold.since = Instant::now();
            hold.number = number;
        }
    }

    /// A send holding `urls` has run. The entry stays a while with no sends, so a removal
    /// that started before the hold still sees that one happened.
    pub fn release(&self, urls: &[String]) {
        let mut state = self.state.lock();
        for url in urls {
            if let Some(hold) = state.held.get_mut(url) {
                hold.sends = hold.sends.saturating_sub(1);
            }
        }
        state
            .held
            .retain(|_, hold| hold.sends > 0 || hold.since.elapsed() < HOLD_AT_MOST);
    }

    /// Taken before a removal checks that no stored message refers to `url`.
    pub fn ticket(&self, url: &str) -> Ticket {
        let state = self.state.lock();
        Ticket(
            state
                .held
                .get(canonical_file_url(url))
                .map(|hold| hold.number),
        )
    }

    /// Whether a queued send holds `url`.
    pub fn is_held(&self, url: &str) -> bool {
        let state = self.state.lock();
        state
            .held
            .get(canonical_file_url(url))
            .is_some_and(|hold| hold.sends > 0 && hold.since.elapsed() < HOLD_AT_MOST)
    }

    /// Removes the file at `path` (stored as `url`) unless a send holds it, or one began since
    /// `ticket` was taken (its message may have been saved while the store was checked).
    /// Whether it was removed; the hold state cannot change while the file goes.
    pub fn remove_unless_held(
        &self,
        url: &str,
        ticket: Ticket,
        path: &std::path::Path,
    ) -> std::io::Result<bool> {
        let state = self.state.lock();
        let hold = state.held.get(canonical_file_url(url));
        let held = hold.is_some_and(|hold| hold.sends > 0 && hold.since.elapsed() < HOLD_AT_MOST);
        if held || Ticket(hold.map(|hold| hold.number)) != ticket {
            return Ok(false);
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_held_until_every_send_holding_it_ran() {
        let staging = Staging::default();
        let url = vec![format!("/api/files/{}", "ab".repeat(32))];
        staging.hold(&url);
        staging.hold(&url);
        assert!(staging.is_held(&format!("{}/report.pdf", url[0])));
        staging.release(&url);
        assert!(staging.is_held(&url[0]));
        staging.release(&url);
        assert!(!staging.is_held(&url[0]));
        staging.release(&url);
        assert!(!staging.is_held(&url[0]));
    }

    #[test]
    fn a_removal_skips_a_file_held_since_its_ticket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let staging = Staging::default();
        let url = vec![format!("/uploads/{}", "cd".repeat(32))];
        std::fs::write(&path, b"x").unwrap();
        let ticket = staging.ticket(&url[0]);
        // A send holds it and runs while the removal checks the store.
        staging.hold(&url);
        staging.release(&url);
        assert!(!staging.remove_unless_held(&url[0], ticket, &path).unwrap());
        assert!(path.exists());
        // Checked again from a fresh ticket, nothing holds it: it goes.
        let ticket = staging.ticket(&url[0]);
        assert!(staging.remove_unless_held(&url[0], ticket, &path).unwrap());
        assert!(!path.exists());
    }
}
