//! Changes to user records: each is read-modify-write from the latest record, which is the one
//! still on its way to disk if there is one, so two changes made at once (a new picture and a
//! new name, say) both land instead of the second overwriting the first with what it read.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

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
}

#[derive(Default)]
struct Pending {
    /// Each user's latest record with the number of the write that set it.
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
        let (durable, user) = {
            // The state lock orders this write with the others the chat store decides.
            let _ordering = self.lock();
            let mut pending = self.user_writes.pending.lock();
            let latest = match pending.records.get(id) {
                Some((_, user)) => Some(user.clone()),
                None => self.read_user(id)?,
            };
            let Some(mut user) = latest else {
                return Ok(None);
            };
            change.apply(&mut user);
            user.updated_at = now;
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
            });
            self.forget_user(id);
            let writes = vec![Write::Put(key(USER, id), encode(&user)?)];
            let durable = self.committer.submit_durable(writes, 0, Some(after));
            (durable, user)
        };
        let written = wait(durable).await;
        // Reads between the two calls may have cached the old record; now the tree has the new one.
        self.forget_user(id);
        written?;
        Ok(Some(user))
    }
}

impl SledChatStore {
    /// Forgets a pending change of user `id` (the user is being deleted; the delete is queued
    /// after the change, so the tree ends without the user either way).
    pub(super) fn drop_pending_user(&self, id: &str) {
        self.user_writes.pending.lock().records.remove(id);
    }
}
