//! Changes to stored messages (edits, deletes, reactions), the change index that lets a client
//! catch up on them, and the index of the files messages refer to.
//!
//! A change is read-modify-write from the message's stored value, decided under the state lock
//! like every chat write. While an earlier change of the same message is on its way to disk, a
//! new one waits for it to settle and then reads again: built on the earlier one's in-memory
//! record, it would carry that change to disk even when the earlier write failed (and was
//! reported failed), and two reactions given at once still both land. It takes the conversation's next change stamp and is one
//! atomic write: the message under its `c` key, its new `k<conv>\0<stamp>` index key (the old one
//! removed, so each message has one index key, its latest), and the removal of the `h` file
//! references it no longer has. Catch-up (`HistoryPage::ChangedAfter`) is a range read of the
//! `k` keys, never a scan of the conversation.
//!
//! File references (`h<url>\0<messageId>`) are written with each message that has an image or
//! attachment. Data from before format 2 has none: the first open indexes the stored messages
//! once ([`index_file_refs`]) and marks the tree, so "no message refers to this file any more"
//! is true of old messages too.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::keys::{
    change_key, file_ref_key, file_ref_prefix, message_key, seq_of, FILE_REFS_MARK, MESSAGE,
};
use super::{wait, SledChatStore};
use crate::store::chat::{ChangeOutcome, MessageChange, MessageRecord};
use crate::store::codec::{decode, decode_versioned, encode, encode_versioned};
use crate::store::job::Millis;
use crate::store::sled::committer::{AfterCommit, Write};
use crate::store::StoreError;

/// What [`SledChatStore::decide_change`] decided.
enum Decided<'a> {
    /// Submitted: the outcome once the write is durable.
    Written(super::Durable, ChangeOutcome),
    /// Nothing to write.
    Answered(ChangeOutcome),
    /// Another change of the message is on its way to disk: try again once it settled.
    Wait(tokio::sync::futures::Notified<'a>),
}

/// Message records changed but not yet durable.
#[derive(Default)]
pub(super) struct MessageWrites {
    pending: Mutex<Pending>,
    /// Woken each time a pending change settles (durable or failed).
    settled: Notify,
}

#[derive(Default)]
struct Pending {
    /// The record of each message whose change is on its way to disk, with the number of the
    /// write that set it (at most one at a time: the next change waits for it).
    records: HashMap<String, (u64, MessageRecord)>,
    last: u64,
}

impl SledChatStore {
    pub(super) async fn write_change(
        &self,
        id: &str,
        change: MessageChange,
        now: Millis,
    ) -> Result<ChangeOutcome, StoreError> {
        loop {
            let settled = match self.decide_change(id, &change, now)? {
                Decided::Written(durable, outcome) => {
                    wait(durable).await?;
                    return Ok(outcome);
                }
                Decided::Answered(outcome) => return Ok(outcome),
                Decided::Wait(settled) => settled,
            };
            settled.await;
        }
    }

    /// Decides `change` of message `id` under the state lock: writes it, answers without a write,
    /// or says to wait for a change of the same message still on its way to disk.
    fn decide_change(
        &self,
        id: &str,
        change: &MessageChange,
        now: Millis,
    ) -> Result<Decided<'_>, StoreError> {
        let mut state = self.lock();
        let mut pending = self.message_writes.pending.lock();
        if pending.records.contains_key(id) {
            // Registered before the lock is released: the settling write removes the record
            // under this lock and only then wakes the waiters.
            return Ok(Decided::Wait(self.message_writes.settled.notified()));
        }
        let Some(before) = self.read_message(id)? else {
            return Ok(Decided::Answered(ChangeOutcome::NotFound));
        };
        if state.deleted_users.contains(&before.sender_id)
            || state.deleted_users.contains(&before.receiver_id)
        {
            return Ok(Decided::Answered(ChangeOutcome::NotFound));
        }
        let mut record = before.clone();
        match change.apply(&mut record, now) {
            Err(refused) => return Ok(Decided::Answered(ChangeOutcome::Refused(refused, before))),
            Ok(false) => return Ok(Decided::Answered(ChangeOutcome::Unchanged(before))),
            Ok(true) => {}
        }
        let mut dropped_refs = Vec::new();
        let kept = record.file_refs();
        let mut released = Vec::new();
        for url in before.file_refs() {
            if kept.contains(&url) {
                continue;
            }
            dropped_refs.push(Write::Delete(file_ref_key(&url, id)));
            if !self.referenced_elsewhere(&state, &pending, &url, id)? {
                released.push(url);
            }
        }
        let conversation = before.conversation_key();
        let pair = if before.sender_id <= before.receiver_id {
            (before.sender_id.as_str(), before.receiver_id.as_str())
        } else {
            (before.receiver_id.as_str(), before.sender_id.as_str())
        };
        let link = before.group_id.is_none().then_some(pair);
        let entry = self.conversation(&mut state, &conversation, link)?;
        let stamp = entry.last_change + 1;
        record.change = stamp;
        let mut writes = vec![
            Write::Put(
                message_key(&conversation, record.seq),
                encode_versioned(&record)?,
            ),
            Write::Put(change_key(&conversation, stamp), encode(&record.seq)?),
        ];
        if before.change > 0 {
            writes.push(Write::Delete(change_key(&conversation, before.change)));
        }
        writes.extend(dropped_refs);
        if self.search_index {
            writes.extend(super::search::tree_writes(
                crate::store::search::changes_between(Some(&before), &record),
            ));
        }
        // Every fallible step is done: now memory may change.
        entry.last_change = stamp;
        pending.last += 1;
        let number = pending.last;
        pending
            .records
            .insert(id.to_owned(), (number, record.clone()));
        let in_flight = Arc::clone(&self.message_writes);
        let written = id.to_owned();
        let after: AfterCommit = Box::new(move |_result| {
            let mut pending = in_flight.pending.lock();
            if pending
                .records
                .get(&written)
                .is_some_and(|(n, _)| *n == number)
            {
                pending.records.remove(&written);
            }
            drop(pending);
            in_flight.settled.notify_waiters();
        });
        let durable = self.committer.submit_durable(writes, 0, Some(after));
        Ok(Decided::Written(
            durable,
            ChangeOutcome::Changed {
                message: record,
                released,
            },
        ))
    }

    /// Whether a message other than `id` refers to `url`: one stored (unless a change on its
    /// way drops the reference) or one being saved.
    fn referenced_elsewhere(
        &self,
        state: &super::State,
        pending: &Pending,
        url: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        if state.pending_messages.values().any(|message| {
            message.record.id != id && message.record.file_refs().iter().any(|known| known == url)
        }) {
            return Ok(true);
        }
        let prefix = file_ref_prefix(url);
        for item in self.tree.scan_prefix(&prefix) {
            let (stored_key, _) = item?;
            let other = String::from_utf8_lossy(stored_key.get(prefix.len()..).unwrap_or_default())
                .into_owned();
            if other == id {
                continue;
            }
            let dropped = pending
                .records
                .get(&other)
                .is_some_and(|(_, record)| !record.file_refs().iter().any(|known| known == url));
            if !dropped {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(super) fn read_file_referenced(&self, url: &str) -> Result<bool, StoreError> {
        let url = crate::store::chat::canonical_file_url(url);
        Ok(self.tree.scan_prefix(file_ref_prefix(url)).next().is_some())
    }

    /// The first `limit` messages of `conversation` stamped after `change`, in stamp order.
    pub(super) fn changed_after(
        &self,
        conversation: &str,
        change: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let Some(from) = change.checked_add(1) else {
            return Ok(Vec::new());
        };
        let range = self
            .tree
            .range(change_key(conversation, from)..=change_key(conversation, u64::MAX));
        let mut messages = Vec::with_capacity(limit.min(256));
        for item in range {
            if messages.len() >= limit {
                break;
            }
            let (_, value) = item?;
            let seq: u64 = decode(&value)?;
            // A key left by a change racing a user's deletion names a message that is gone.
            if let Some(bytes) = self.tree.get(message_key(conversation, seq))? {
                messages.push(decode_versioned(&bytes)?);
            }
        }
        Ok(messages)
    }

    /// Forgets the pending changes of messages being deleted with their user.
    pub(super) fn drop_pending_changes(&self, ids: &[String]) {
        let mut pending = self.message_writes.pending.lock();
        for id in ids {
            pending.records.remove(id);
        }
        drop(pending);
        self.message_writes.settled.notify_waiters();
    }
}

/// Indexes the file references of every stored message, once: data written before format 2 has
/// none. Runs at open, before any write is decided; writes straight to the tree and flushes, and
/// marks the tree only after that, so a crash half-way runs it again.
pub(super) fn index_file_refs(tree: &sled::Tree) -> Result<(), StoreError> {
    if tree.contains_key(FILE_REFS_MARK)? {
        return Ok(());
    }
    let mut indexed = 0u64;
    for item in tree.scan_prefix([MESSAGE]) {
        let (stored_key, value) = item?;
        // Every `c` key is a message key; check its shape rather than trust it.
        seq_of(&stored_key)?;
        let record: MessageRecord = decode_versioned(&value)?;
        for url in record.file_refs() {
            tree.insert(file_ref_key(&url, &record.id), Vec::<u8>::new())?;
            indexed += 1;
        }
    }
    tree.flush()?;
    tree.insert(FILE_REFS_MARK, Vec::<u8>::new())?;
    tree.flush()?;
    if indexed > 0 {
        tracing::info!(references = indexed, "indexed the files of stored messages");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::keys::change_prefix;
    use super::*;

    #[test]
    fn change_keys_sort_by_stamp_within_a_conversation() {
        assert!(change_key("a:b", 2) < change_key("a:b", 10));
        assert!(change_key("a:b", u64::MAX) < change_key("a:c", 0));
        assert!(change_prefix("a:b") < change_key("a:b", 0));
        assert_eq!(seq_of(&change_key("g1", 258)).unwrap(), 258);
    }
}
