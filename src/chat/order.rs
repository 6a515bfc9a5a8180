//! Keeps each conversation's messages in the order they were sent.
//!
//! A message gets its `seq` when it is saved, and the message queue runs many jobs side by side:
//! two messages sent one after the other, taken together (a backlog resuming, a burst), could be
//! saved the other way round and read so ever after. So a send takes a *ticket* in its
//! conversation just before its job is added, and before saving, a message waits until no earlier
//! ticket of its conversation is left. It delivers before its ticket leaves, so sockets also
//! see a conversation's messages in `seq` order.
//!
//! A job added earlier is earlier in the queue (same priority, FIFO): the message waited for is
//! running, or about to start. Only two sends racing each other can add their jobs in the other
//! order than their tickets; so an earlier ticket whose processing has not *started* holds a
//! message back for [`UNSTARTED_GRACE`] at most, and a job is never stuck behind one queued
//! after it.
//!
//! A ticket leaves when an attempt of its job ends, saved or failed (a failing message must not
//! hold back the ones after it: its retry is saved when it succeeds), when its add fails or finds
//! the job already there, or when the job is removed unprocessed. A wait is bounded by
//! [`MAX_WAIT`]; tickets that outlive it are dropped as stale. Tickets live in memory: at start-up
//! the messages still queued take theirs again, in the queue's order
//! (`Chat::restore_send_order`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Longest a message waits for an earlier one of its conversation before it is saved anyway.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// Longest an earlier ticket whose processing has not started holds a message back; then it is
/// dropped (its job is queued behind, or its add failed where nobody saw it).
pub const UNSTARTED_GRACE: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct SendOrder {
    inner: Mutex<Inner>,
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    next_ticket: u64,
    /// Message id → its ticket.
    tickets: HashMap<String, Ticket>,
    /// Conversation → tickets still out (number → message id), oldest first.
    lines: HashMap<String, BTreeMap<u64, String>>,
}

struct Ticket {
    conversation: String,
    number: u64,
    /// Whether an attempt to process the message has started.
    started: bool,
}

/// How a wait for a message's turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// No earlier message of the conversation is left (or the message has no ticket).
    Reached,
    /// [`MAX_WAIT`] passed; the earlier tickets were dropped as stale.
    GaveUp,
}

impl Inner {
    fn remove(&mut self, message_id: &str) -> bool {
        let Some(ticket) = self.tickets.remove(message_id) else {
            return false;
        };
        if let Some(line) = self.lines.get_mut(&ticket.conversation) {
            line.remove(&ticket.number);
            if line.is_empty() {
                self.lines.remove(&ticket.conversation);
            }
        }
        true
    }

    /// The earlier tickets of the message's conversation: (message id, started).
    fn earlier(&self, message_id: &str) -> Vec<(&str, bool)> {
        let Some(ticket) = self.tickets.get(message_id) else {
            return Vec::new();
        };
        let Some(line) = self.lines.get(&ticket.conversation) else {
            return Vec::new();
        };
        line.range(..ticket.number)
            .map(|(_, id)| {
                let started = self.tickets.get(id).is_some_and(|earlier| earlier.started);
                (id.as_str(), started)
            })
            .collect()
    }
}

impl SendOrder {
    /// Takes a ticket for a message about to be added, behind every earlier one of
    /// `conversation`. `false` when the message already holds one (a repeated send).
    pub fn enter(&self, conversation: &str, message_id: &str) -> bool {
        let mut inner = self.inner.lock();
        if inner.tickets.contains_key(message_id) {
            return false;
        }
        let number = inner.next_ticket;
        inner.next_ticket += 1;
        inner.tickets.insert(
            message_id.to_owned(),
            Ticket {
                conversation: conversation.to_owned(),
                number,
                started: false,
            },
        );
        inner
            .lines
            .entry(conversation.to_owned())
            .or_default()
            .insert(number, message_id.to_owned());
        true
    }

    /// An attempt to process the message has started: from now on later messages wait for it
    /// to end, however long that takes (up to [`MAX_WAIT`]).
    pub fn start(&self, message_id: &str) {
        if let Some(ticket) = self.inner.lock().tickets.get_mut(message_id) {
            ticket.started = true;
        }
    }

    /// The message's attempt ended (or its job is gone): later messages need not wait for it.
    pub fn leave(&self, message_id: &str) {
        let removed = self.inner.lock().remove(message_id);
        if removed {
            self.changed.notify_waiters();
        }
    }

    /// Waits until no earlier message of this one's conversation holds a ticket (those not
    /// started within [`UNSTARTED_GRACE`] do not count), for at most `max_wait`; then drops the
    /// earlier tickets as stale.
    pub async fn wait_turn(&self, message_id: &str, max_wait: Duration) -> Turn {
        let began = tokio::time::Instant::now();
        let deadline = began + max_wait;
        let grace_ends = began + UNSTARTED_GRACE.min(max_wait);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a leave between the check and the wait is seen.
            changed.as_mut().enable();
            let in_grace = tokio::time::Instant::now() < grace_ends;
            let (blocked, only_unstarted) = {
                let inner = self.inner.lock();
                let earlier = inner.earlier(message_id);
                let blocked = earlier.iter().any(|(_, started)| *started || in_grace);
                (blocked, earlier.iter().all(|(_, started)| !started))
            };
            if !blocked {
                return Turn::Reached;
            }
            // Only unstarted ones ahead: look again when the grace ends.
            let wake_at = if only_unstarted { grace_ends } else { deadline };
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(wake_at) => {
                    if wake_at == deadline {
                        self.drop_earlier(message_id, true);
                        return Turn::GaveUp;
                    }
                    // Not started in time: queued behind this one, or its add failed unseen.
                    self.drop_earlier(message_id, false);
                }
            }
        }
    }

    /// Drops the earlier tickets of the message's conversation: all, or the unstarted ones.
    fn drop_earlier(&self, message_id: &str, started_too: bool) {
        let mut inner = self.inner.lock();
        let stale: Vec<String> = inner
            .earlier(message_id)
            .into_iter()
            .filter(|(_, started)| started_too || !started)
            .map(|(id, _)| id.to_owned())
            .collect();
        for id in stale {
            inner.remove(&id);
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Tickets still out (for tests and diagnostics).
    pub fn outstanding(&self) -> usize {
        self.inner.lock().tickets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_later_message_waits_until_the_earlier_one_leaves() {
        let order = Arc::new(SendOrder::default());
        assert!(order.enter("ab", "m1"));
        assert!(order.enter("ab", "m2"));
        assert!(order.enter("cd", "m3"));
        // Another conversation is never held back.
        assert_eq!(order.wait_turn("m3", MAX_WAIT).await, Turn::Reached);
        order.start("m1");
        assert_eq!(order.wait_turn("m1", MAX_WAIT).await, Turn::Reached);

        let waiter = {
            let order = order.clone();
            tokio::spawn(async move { order.wait_turn("m2", MAX_WAIT).await })
        };
        // A started message holds the next one back for as long as it runs.
        tokio::time::sleep(UNSTARTED_GRACE * 5).await;
        assert!(!waiter.is_finished(), "m2 went ahead of m1");
        order.leave("m1");
        assert_eq!(waiter.await.unwrap(), Turn::Reached);
        order.leave("m2");
        order.leave("m3");
        assert_eq!(order.outstanding(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_message_that_starts_late_is_still_waited_for() {
        let order = Arc::new(SendOrder::default());
        order.enter("ab", "m1");
        order.enter("ab", "m2");
        order.start("m2");
        let waiter = {
            let order = order.clone();
            tokio::spawn(async move { order.wait_turn("m2", MAX_WAIT).await })
        };
        tokio::time::sleep(UNSTARTED_GRACE / 2).await;
        order.start("m1");
        tokio::time::sleep(UNSTARTED_GRACE * 5).await;
        assert!(!waiter.is_finished(), "m2 went ahead of m1");
        order.leave("m1");
        assert_eq!(waiter.await.unwrap(), Turn::Reached);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_message_that_never_starts_holds_the_next_for_the_grace_only() {
        let order = SendOrder::default();
        order.enter("ab", "queued-behind");
        order.enter("ab", "m2");
        let began = tokio::time::Instant::now();
        assert_eq!(order.wait_turn("m2", MAX_WAIT).await, Turn::Reached);
        assert_eq!(began.elapsed(), UNSTARTED_GRACE);
        // Dropped: it holds nothing back any more.
        order.enter("ab", "m3");
        let began = tokio::time::Instant::now();
        order.leave("m2");
        assert_eq!(order.wait_turn("m3", MAX_WAIT).await, Turn::Reached);
        assert_eq!(began.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_started_ticket_holds_a_message_back_only_once() {
        let order = SendOrder::default();
        order.enter("ab", "hung");
        order.start("hung");
        order.enter("ab", "m2");
        order.enter("ab", "m3");
        assert_eq!(order.wait_turn("m2", MAX_WAIT).await, Turn::GaveUp);
        order.leave("m2");
        assert_eq!(
            order.wait_turn("m3", Duration::from_millis(1)).await,
            Turn::Reached
        );
    }

    #[test]
    fn a_repeated_send_keeps_its_first_place() {
        let order = SendOrder::default();
        assert!(order.enter("ab", "m1"));
        assert!(order.enter("ab", "m2"));
        assert!(!order.enter("ab", "m1"));
        assert_eq!(order.inner.lock().earlier("m2"), vec![("m1", false)]);
        // A message without a ticket (after a restart, a retry) waits for nothing.
        assert!(order.inner.lock().earlier("unknown").is_empty());
    }
}
