//! Disabled accounts (`d<userId>` → when) and deleting a user with everything that is theirs.
//!
//! A deletion is decided under the state lock (so no message of the user's conversations is
//! being decided meanwhile) and written as one log entry: after a crash either all of it is
//! gone or none. Messages still on their way are deleted with it, and the user's id is
//! remembered so a message decided later is refused ([`StoreError::Deleted`]).

use std::collections::BTreeSet;

use super::accounts::{ACCOUNT, BLOCK, BLOCKED_BY};
use super::keys::{change_prefix, file_ref_key};
use super::sessions::{SESSION, USER_SESSION};
use super::{
    check_id, conversation_id, conversation_prefix, key, pair_key, wait, SledChatStore, EMAIL,
    EMAIL_CLAIM, MESSAGE_ID, PARTNER, READ_MARK, USER,
};
use crate::store::chat::MessageRecord;
use crate::store::codec::{decode, decode_versioned, encode};
use crate::store::job::Millis;
use crate::store::sled::committer::Write;
use crate::store::StoreError;

const DISABLED: u8 = b'd';

impl SledChatStore {
    pub(super) async fn write_disabled(
        &self,
        user: &str,
        at: Option<Millis>,
    ) -> Result<(), StoreError> {
        check_id(user)?;
        let durable = {
            let mut pending = self.account_writes.pending.lock();
            let write = match at {
                Some(at) => Write::Put(key(DISABLED, user), encode(&at)?),
                None => Write::Delete(key(DISABLED, user)),
            };
            self.queue_account_writes(&mut pending, vec![write])
        };
        wait(durable).await
    }

    pub(super) fn read_disabled(&self, user: &str) -> Result<Option<Millis>, StoreError> {
        check_id(user)?;
        let pending = self.account_writes.pending.lock();
        self.latest(&pending, &key(DISABLED, user))?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    pub(super) async fn remove_user(&self, id: &str) -> Result<Option<u64>, StoreError> {
        check_id(id)?;
        let (durable, deleted, left_groups) = {
            let mut state = self.lock();
            let Some(user) = self.read_user(id)? else {
                return Ok(None);
            };
            let mut writes = vec![
                Write::Delete(key(USER, id)),
                Write::Delete(key(EMAIL, &user.email)),
            ];

            // Everyone the user has a conversation with, stored or still on its way.
            let mut partner_prefix = key(PARTNER, id);
            partner_prefix.push(0);
            let mut others = BTreeSet::new();
            for item in self.tree.scan_prefix(&partner_prefix) {
                let (stored_key, _) = item?;
                let other = stored_key.get(partner_prefix.len()..).unwrap_or_default();
                others.insert(String::from_utf8_lossy(other).into_owned());
            }
            let in_flight: Vec<MessageRecord> = state
                .pending_messages
                .values()
                .map(|pending| pending.record.clone())
                .filter(|record| {
                    record.group_id.is_none()
                        && (record.sender_id == id || record.receiver_id == id)
                })
                .collect();
            for record in &in_flight {
                let other = if record.sender_id == id {
                    &record.receiver_id
                } else {
                    &record.sender_id
                };
                others.insert(other.clone());
            }

            let mut deleted_keys = BTreeSet::new();
            let mut deleted = 0u64;
            let mut gone_messages = Vec::new();
            let mut delete_message =
                |writes: &mut Vec<Write>, message_key: Vec<u8>, record: &MessageRecord| {
                    if deleted_keys.insert(message_key.clone()) {
                        writes.push(Write::Delete(message_key));
                        writes.push(Write::Delete(key(MESSAGE_ID, &record.id)));
                        for url in record.file_refs() {
                            writes.push(Write::Delete(file_ref_key(&url, &record.id)));
                        }
                        // Its search entries (those of a change still on its way may stay
                        // behind, like its change key: searches skip a seq that is gone).
                        writes.extend(super::search::tree_removals(record));
                        gone_messages.push(record.id.clone());
                        deleted += 1;
                    }
                };
            for other in &others {
                let conversation = conversation_id(id, other);
                for item in self.tree.scan_prefix(conversation_prefix(&conversation)) {
                    let (message_key, value) = item?;
                    let record: MessageRecord = decode_versioned(&value)?;
                    delete_message(&mut writes, message_key.to_vec(), &record);
                }
                for record in in_flight.iter().filter(|record| {
                    conversation_id(&record.sender_id, &record.receiver_id) == conversation
                }) {
                    let message_key = super::message_key(&conversation, record.seq);
                    delete_message(&mut writes, message_key, record);
                }
                // The change index goes with the messages. (The key of a change still on its
                // way may stay behind: it names a seq that is gone, and reads skip it.)
                for item in self.tree.scan_prefix(change_prefix(&conversation)) {
                    writes.push(Write::Delete(item?.0.to_vec()));
                }
                for marks in [READ_MARK, EMAIL_CLAIM] {
                    for side in [id, other.as_str()] {
                        let mark = pair_key(marks, &conversation, side);
                        state.marks.remove(&mark);
                        writes.push(Write::Delete(mark));
                    }
                }
                writes.push(Write::Delete(pair_key(PARTNER, id, other)));
                writes.push(Write::Delete(pair_key(PARTNER, other, id)));
                state.conversations.remove(&conversation);
            }
            state.deleted_users.insert(id.to_owned());
            self.drop_pending_changes(&gone_messages);

            self.drop_pending_user(id);
            let mut pending = self.account_writes.pending.lock();
            let left_groups = self.leave_groups_on_delete(&mut state, &pending, id, &mut writes)?;
            writes.push(Write::Delete(key(ACCOUNT, id)));
            writes.push(Write::Delete(key(DISABLED, id)));
            let mut sessions_prefix = key(USER_SESSION, id);
            sessions_prefix.push(0);
            for index_key in self.latest_under(&pending, &sessions_prefix)?.into_keys() {
                let session = String::from_utf8_lossy(
                    index_key.get(sessions_prefix.len()..).unwrap_or_default(),
                )
                .into_owned();
                writes.push(Write::Delete(key(SESSION, &session)));
                writes.push(Write::Delete(index_key));
            }
            // Blocks either way: this user's list and the other side's reverse entry.
            for (kind, reverse) in [(BLOCK, BLOCKED_BY), (BLOCKED_BY, BLOCK)] {
                let mut prefix = key(kind, id);
                prefix.push(0);
                for entry in self.latest_under(&pending, &prefix)?.into_keys() {
                    let other =
                        String::from_utf8_lossy(entry.get(prefix.len()..).unwrap_or_default())
                            .into_owned();
                    writes.push(Write::Delete(pair_key(reverse, &other, id)));
                    writes.push(Write::Delete(entry));
                }
            }
            self.forget_user(id);
            (
                self.queue_account_writes(&mut pending, writes),
                deleted,
                left_groups,
            )
        };
        let written = wait(durable).await;
        // Reads between the two calls may have cached the user; now the tree has the delete.
        self.forget_user(id);
        self.forget_groups(&left_groups);
        written?;
        Ok(Some(deleted))
    }
}
