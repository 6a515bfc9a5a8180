//! Changes to user records: each is read-modify-write from the stored record. While an earlier
//! change of the same user is on its way to disk, a new one waits for it to settle and reads
//! again, so two changes made at once (a new picture and a new name, say) both land, and one
//! whose write failed never reaches disk on the back of the next.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{key, wait, SledChatStore, USER};
use crate::store::chat::{UserChange, UserRecord};
use crate::store::codec::encode;
use crate::store::job::Millis;
use crate::store::sled::committer::{AfterCommit, Write};
use crate::store::StoreError;

/// User records written but not yet durable.
#[derive(Default)]
pub(super) struct UserWrites {
    pending: Mutex<Pending>,
    /// Woken each time a pending change settles (durable or failed).
    settled: Notify,
}

#[derive(Default)]
struct Pending {
    /// The record of each user whose change is on its way to disk, with the number of the write
    /// that set it (at most one at a time: the next change waits for it).
    records: HashMap<String, (u64, UserRecord)>,
    /// The number the last write took.
    last: u64,
}

impl SledChatStore {
    pub(super) async fn change_user(
        &self,
        id: &str,
        change: UserChange,
        now: Millis,
    ) -> Result<Option<UserRecord>, StoreError> {
        let (durable, user) = loop {
            let settled = {
                // The state lock orders this write with the others the chat store decides.
                let _ordering = self.lock();
                let mut pending = self.user_writes.pending.lock();
                if pending.records.contains_key(id) {
                    // Registered before the lock is released: the settling write removes the
                    // record under this lock and only then wakes the waiters.
                    self.user_writes.settled.notified()
                } else {
                    match self.submit_user_change(&mut pending, id, &change, now)? {
                        Some(submitted) => break submitted,
                        None => return Ok(None),
                    }
                }
            };
            settled.await;
        };
        let written = wait(durable).await;
        // Reads between the two calls may have cached the old record; now the tree has the new one.
        self.forget_user(id);
        written?;
        Ok(Some(user))
    }

    /// Writes `change` of user `id` on top of the stored record (no change of the user is
    /// pending); `None` when there is no such user.
    fn submit_user_change(
        &self,
        pending: &mut Pending,
        id: &str,
        change: &UserChange,
        now: Millis,
    ) -> Result<Option<(super::Durable, UserRecord)>, StoreError> {
        let Some(mut user) = self.read_user(id)? else {
            return Ok(None);
        };
        change.apply(&mut user);
        user.updated_at = now;
        let writes = vec![Write::Put(key(USER, id), encode(&user)?)];
        // Every fallible step is done: now memory may change.
        pending.last += 1;
        let number = pending.last;
        pending
            .records
            .insert(id.to_owned(), (number, user.clone()));
        let writes_in_flight = Arc::clone(&self.user_writes);
        let written_id = id.to_owned();
        let after: AfterCommit = Box::new(move |_result| {
            let mut pending = writes_in_flight.pending.lock();
            if pending
                .records
                .get(&written_id)
                .is_some_and(|(n, _)| *n == number)
            {
                pending.records.remove(&written_id);
            }
            drop(pending);
            writes_in_flight.settled.notify_waiters();
        });
        self.forget_user(id);
        let durable = self.committer.submit_durable(writes, 0, Some(after));
        Ok(Some((durable, user)))
    }

    /// Forgets a pending change of user `id` (the user is being deleted; the delete is queued
    /// after the change, so the tree ends without the user either way).
    pub(super) fn drop_pending_user(&self, id: &str) {
        self.user_writes.pending.lock().records.remove(id);
        self.user_writes.settled.notify_waiters();
    }
}
