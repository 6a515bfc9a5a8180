//! Keeps each conversation's messages in the order they were sent.
//!
//! A message gets its `seq` when it is saved, and the message queue runs many jobs side by side:
//! two messages sent one after the other, taken together (a backlog resuming, a burst), could be
//! saved the other way round and read so ever after. So an accepted send takes a *ticket* in its
//! conversation, and before saving, a message waits until no earlier ticket of its conversation
//! is left. A job added earlier is also earlier in the queue (same priority, FIFO), so the
//! message waited for is running or about to run; it never waits for a job behind it.
//!
//! A ticket leaves when an attempt of its job ends, saved or failed (a failing message must not
//! hold back the ones after it: its retry is saved when it succeeds), or when the job is removed
//! unprocessed. A wait is bounded by [`MAX_WAIT`]; a ticket that outlives it is dropped as
//! stale. Memory only: after a restart the queue's FIFO order is all there is.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Longest a message waits for an earlier one of its conversation before it is saved anyway.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// Messages that finished before their ticket was taken, remembered so the late ticket is not
/// taken at all. A ticket is taken right after its job is acknowledged, so a short memory does.
const FINISHED_EARLY_MEMORY: usize = 1024;

#[derive(Default)]
pub struct SendOrder {
    inner: Mutex<Inner>,
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    next_ticket: u64,
    /// Message id → (conversation, ticket).
    tickets: HashMap<String, (String, u64)>,
    /// Conversation → tickets still out, oldest first.
    lines: HashMap<String, BTreeSet<u64>>,
    finished_early: HashSet<String>,
    finished_order: VecDeque<String>,
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
        let Some((conversation, ticket)) = self.tickets.remove(message_id) else {
            return false;
        };
        if let Some(line) = self.lines.get_mut(&conversation) {
            line.remove(&ticket);
            if line.is_empty() {
                self.lines.remove(&conversation);
            }
        }
        true
    }

    /// Whether the message's ticket is the oldest of its conversation (or it has none).
    fn is_first(&self, message_id: &str) -> bool {
        match self.tickets.get(message_id) {
            None => true,
            Some((conversation, ticket)) => self
                .lines
                .get(conversation)
                .and_then(|line| line.first())
                .is_none_or(|first| first == ticket),
        }
    }
}

impl SendOrder {
    /// Takes a ticket for an accepted message, behind every earlier one of `conversation`.
    pub fn enter(&self, conversation: &str, message_id: &str) {
        let mut inner = self.inner.lock();
        if inner.finished_early.remove(message_id) || inner.tickets.contains_key(message_id) {
            return;
        }
        let ticket = inner.next_ticket;
        inner.next_ticket += 1;
        inner
            .tickets
            .insert(message_id.to_owned(), (conversation.to_owned(), ticket));
        inner
            .lines
            .entry(conversation.to_owned())
            .or_default()
            .insert(ticket);
    }

    /// The message's attempt ended (or its job is gone): later messages need not wait for it.
    pub fn leave(&self, message_id: &str) {
        let removed = self.inner.lock().remove(message_id);
        if removed {
            self.changed.notify_waiters();
        }
    }

    /// Like [`SendOrder::leave`], for an attempt that ended: if the ticket was not taken yet,
    /// it never will be.
    pub fn finish(&self, message_id: &str) {
        let mut inner = self.inner.lock();
        if inner.remove(message_id) {
            drop(inner);
            self.changed.notify_waiters();
            return;
        }
        if inner.finished_early.insert(message_id.to_owned()) {
            inner.finished_order.push_back(message_id.to_owned());
        }
        while inner.finished_order.len() > FINISHED_EARLY_MEMORY {
            if let Some(oldest) = inner.finished_order.pop_front() {
                inner.finished_early.remove(&oldest);
            }
        }
    }

    /// Waits until no earlier message of this one's conversation still holds a ticket, for at
    /// most `max_wait`; then drops the earlier tickets as stale.
    pub async fn wait_turn(&self, message_id: &str, max_wait: Duration) -> Turn {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a leave between the check and the wait is seen.
            changed.as_mut().enable();
            if self.inner.lock().is_first(message_id) {
                return Turn::Reached;
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => {
                    self.drop_earlier(message_id);
                    return Turn::GaveUp;
                }
            }
        }
    }

    fn drop_earlier(&self, message_id: &str) {
        let mut inner = self.inner.lock();
        let Some((conversation, ticket)) = inner.tickets.get(message_id).cloned() else {
            return;
        };
        let stale: Vec<String> = inner
            .tickets
            .iter()
            .filter(|(_, (other, earlier))| *other == conversation && *earlier < ticket)
            .map(|(id, _)| id.clone())
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
        order.enter("ab", "m1");
        order.enter("ab", "m2");
        order.enter("cd", "m3");
        // Another conversation is never held back.
        assert_eq!(order.wait_turn("m3", MAX_WAIT).await, Turn::Reached);
        assert_eq!(order.wait_turn("m1", MAX_WAIT).await, Turn::Reached);

        let waiter = {
            let order = order.clone();
            tokio::spawn(async move { order.wait_turn("m2", MAX_WAIT).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "m2 went ahead of m1");
        order.finish("m1");
        assert_eq!(waiter.await.unwrap(), Turn::Reached);
        order.finish("m2");
        order.finish("m3");
        assert_eq!(order.outstanding(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_ticket_holds_a_message_back_only_once() {
        let order = SendOrder::default();
        order.enter("ab", "lost");
        order.enter("ab", "m2");
        order.enter("ab", "m3");
        assert_eq!(order.wait_turn("m2", MAX_WAIT).await, Turn::GaveUp);
        order.finish("m2");
        assert_eq!(
            order.wait_turn("m3", Duration::from_millis(1)).await,
            Turn::Reached
        );
    }

    #[tokio::test]
    async fn a_message_finished_before_its_ticket_never_takes_one() {
        let order = SendOrder::default();
        order.finish("quick");
        order.enter("ab", "quick");
        order.enter("ab", "next");
        assert_eq!(
            order.wait_turn("next", Duration::from_millis(1)).await,
            Turn::Reached
        );
        assert_eq!(order.outstanding(), 1);
    }

    #[test]
    fn the_memory_of_early_finishes_is_bounded() {
        let order = SendOrder::default();
        for n in 0..FINISHED_EARLY_MEMORY * 2 {
            order.finish(&format!("m{n}"));
        }
        let inner = order.inner.lock();
        assert_eq!(inner.finished_early.len(), FINISHED_EARLY_MEMORY);
        assert!(inner
            .finished_early
            .contains(&format!("m{}", FINISHED_EARLY_MEMORY * 2 - 1)));
    }
}
