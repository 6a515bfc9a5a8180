//! Groups in the sled chat store.
//!
//! | Key | Value |
//! |---|---|
//! | `g<groupId>` | [`GroupRecord`] |
//! | `G<userId>\0<groupId>` | empty: the groups of a user |
//! | `n<folded name>\0<groupId>` | empty: the name index searches scan (no record is decoded for a miss) |
//! | `r<groupId>\0<userId>` | read mark (u64), the layout of direct conversations' marks |
//!
//! A group's messages are `c<groupId>\0<seq>` like any conversation's. Every change is decided
//! under the state lock (which orders it with the group's messages, so a system message gets the
//! next `seq`) from the latest record, the one still on its way to disk if there is one (the
//! account writes' pending values), and written as one log entry with its system message and
//! index keys. Reads see only what is durable, through a small cache of decoded records that
//! every write clears before it is queued and again once it is durable (fan-out reads a group's
//! members for every message).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::accounts::Pending;
use super::keys::{change_key, change_prefix, file_ref_key};
use super::{
    check_id, conversation_prefix, key, key_safe, message_key, pair_key, wait, SledChatStore,
    State, MESSAGE_ID, READ_MARK,
};
use crate::store::chat::{MessageRecord, NewMessage};
use crate::store::chat_groups::{
    apply_change, fold_name, sort_summaries, without_member, GroupRecord, GroupSummary,
    GroupUpdate, GroupUpdated,
};
use crate::store::codec::{decode, decode_versioned, encode, encode_versioned};
use crate::store::sled::committer::Write;
use crate::store::StoreError;

pub(super) const GROUP: u8 = b'g';
pub(super) const GROUP_MEMBER: u8 = b'G';
pub(super) const GROUP_NAME: u8 = b'n';

/// Most decoded groups kept; any may go when it is full (it only saves reads).
const GROUP_CACHE_CAPACITY: usize = 1_000;

/// Durable group records read recently.
#[derive(Default)]
pub(super) struct GroupCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    groups: HashMap<String, Arc<GroupRecord>>,
    /// Bumped by every write: a read that started before it may not fill the cache.
    epoch: u64,
}

fn name_key(group: &GroupRecord) -> Vec<u8> {
    pair_key(GROUP_NAME, &fold_name(&group.name), &group.id)
}

/// The writes that take `before` (absent: a new group) to `after` (absent: deleted): the record
/// and the index keys that changed.
fn record_writes(
    before: Option<&GroupRecord>,
    after: Option<&GroupRecord>,
) -> Result<Vec<Write>, StoreError> {
    let mut writes = Vec::new();
    let id = after
        .or(before)
        .map(|group| group.id.as_str())
        .unwrap_or("");
    match after {
        Some(group) => writes.push(Write::Put(key(GROUP, id), encode(group)?)),
        None => writes.push(Write::Delete(key(GROUP, id))),
    }
    let old_name = before.map(name_key);
    let new_name = after.map(name_key);
    if old_name != new_name {
        if let Some(old) = old_name {
            writes.push(Write::Delete(old));
        }
        if let Some(new) = new_name {
            writes.push(Write::Put(new, Vec::new()));
        }
    }
    let empty = Vec::new();
    let old_members = before.map_or(&empty, |group| &group.members);
    let new_members = after.map_or(&empty, |group| &group.members);
    for member in old_members {
        if !new_members.contains(member) {
            writes.push(Write::Delete(pair_key(GROUP_MEMBER, member, id)));
        }
    }
    for member in new_members {
        if !old_members.contains(member) {
            writes.push(Write::Put(pair_key(GROUP_MEMBER, member, id), Vec::new()));
        }
    }
    Ok(writes)
}

impl SledChatStore {
    /// The durable record of `id`, from the cache or the tree.
    fn read_group(&self, id: &str) -> Result<Option<Arc<GroupRecord>>, StoreError> {
        if !key_safe(id) {
            return Ok(None);
        }
        let epoch = {
            let cache = self.groups.inner.lock();
            if let Some(group) = cache.groups.get(id) {
                return Ok(Some(Arc::clone(group)));
            }
            cache.epoch
        };
        let Some(bytes) = self.tree.get(key(GROUP, id))? else {
            return Ok(None);
        };
        let group: Arc<GroupRecord> = Arc::new(decode(&bytes)?);
        let mut cache = self.groups.inner.lock();
        if cache.epoch == epoch {
            if cache.groups.len() >= GROUP_CACHE_CAPACITY {
                if let Some(evicted) = cache.groups.keys().next().cloned() {
                    cache.groups.remove(&evicted);
                }
            }
            cache.groups.insert(id.to_owned(), Arc::clone(&group));
        }
        Ok(Some(group))
    }

    pub(super) fn forget_groups(&self, ids: &[String]) {
        let mut cache = self.groups.inner.lock();
        cache.epoch += 1;
        for id in ids {
            cache.groups.remove(id);
        }
    }

    /// The latest record of `id` (pending, else stored), for a writer.
    fn latest_group(&self, pending: &Pending, id: &str) -> Result<Option<GroupRecord>, StoreError> {
        self.latest(pending, &key(GROUP, id))?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// The writes that delete a group's messages (with their change index and file references)
    /// and read marks (the group lost its last member), and forgets its conversation.
    fn group_content_deletes(
        &self,
        state: &mut State,
        id: &str,
        writes: &mut Vec<Write>,
    ) -> Result<(), StoreError> {
        let mut gone = Vec::new();
        for item in self.tree.scan_prefix(conversation_prefix(id)) {
            let (stored_key, value) = item?;
            let record: MessageRecord = decode_versioned(&value)?;
            writes.push(Write::Delete(stored_key.to_vec()));
            writes.push(Write::Delete(key(MESSAGE_ID, &record.id)));
            for url in record.file_refs() {
                writes.push(Write::Delete(file_ref_key(&url, &record.id)));
            }
            gone.push(record.id);
        }
        for item in self.tree.scan_prefix(change_prefix(id)) {
            writes.push(Write::Delete(item?.0.to_vec()));
        }
        let mut marks = key(READ_MARK, id);
        marks.push(0);
        for item in self.tree.scan_prefix(&marks) {
            let (stored_key, _) = item?;
            writes.push(Write::Delete(stored_key.to_vec()));
        }
        state.marks.retain(|mark, _| !mark.starts_with(&marks));
        state.conversations.remove(id);
        self.drop_pending_changes(&gone);
        Ok(())
    }

    /// The writes of a system message saved with a group change, and its record: the group
    /// conversation's next seq and change stamp, as `save_message` gives them. Memory changes
    /// (the conversation's counters, the message count) only once nothing can fail.
    fn system_message_writes(
        &self,
        state: &mut State,
        group_id: &str,
        message: NewMessage,
    ) -> Result<(Vec<Write>, MessageRecord), StoreError> {
        let entry = self.conversation(state, group_id, None)?;
        let (seq, change) = (entry.last_seq + 1, entry.last_change + 1);
        let record = MessageRecord::new_at(message, seq, change);
        let mut writes = vec![
            Write::Put(message_key(group_id, seq), encode_versioned(&record)?),
            Write::Put(
                key(MESSAGE_ID, &record.id),
                encode(&super::MessageRef {
                    conversation: group_id.to_owned(),
                    seq,
                })?,
            ),
            Write::Put(change_key(group_id, change), encode(&seq)?),
        ];
        for url in record.file_refs() {
            writes.push(Write::Put(file_ref_key(&url, &record.id), Vec::new()));
        }
        entry.last_seq = seq;
        entry.last_change = change;
        state.message_count += 1;
        Ok((writes, record))
    }

    pub(super) async fn write_new_group(
        &self,
        group: GroupRecord,
        system_message: Option<NewMessage>,
    ) -> Result<bool, StoreError> {
        check_id(&group.id)?;
        for member in &group.members {
            check_id(member)?;
        }
        let durable = {
            let mut state = self.lock();
            let mut pending = self.account_writes.pending.lock();
            if self.latest(&pending, &key(GROUP, &group.id))?.is_some() {
                return Ok(false);
            }
            let mut writes = record_writes(None, Some(&group))?;
            if let Some(message) = system_message {
                writes.extend(
                    self.system_message_writes(&mut state, &group.id, message)?
                        .0,
                );
            }
            let count = state.message_count;
            self.forget_groups(std::slice::from_ref(&group.id));
            self.queue_account_writes_counted(&mut pending, writes, count)
        };
        wait(durable).await?;
        self.forget_groups(std::slice::from_ref(&group.id));
        Ok(true)
    }

    pub(super) async fn read_group_async(
        &self,
        id: &str,
    ) -> Result<Option<Arc<GroupRecord>>, StoreError> {
        self.read_group(id)
    }

    pub(super) async fn change_group(
        &self,
        update: GroupUpdate,
    ) -> Result<GroupUpdated, StoreError> {
        if !key_safe(&update.group_id) {
            return Ok(GroupUpdated::NoGroup);
        }
        let id = update.group_id.clone();
        let (durable, outcome) = {
            let mut state = self.lock();
            let mut pending = self.account_writes.pending.lock();
            let Some(current) = self.latest_group(&pending, &id)? else {
                return Ok(GroupUpdated::NoGroup);
            };
            let changed = match apply_change(&current, &update) {
                Ok(changed) => changed,
                Err(refusal) => return Ok(refusal),
            };
            if let Some(group) = &changed {
                for member in &group.members {
                    check_id(member)?;
                }
            }
            let mut writes = record_writes(Some(&current), changed.as_ref())?;
            let mut system_message = None;
            match (&changed, update.system_message) {
                (Some(_), Some(message)) => {
                    let (message_writes, record) =
                        self.system_message_writes(&mut state, &id, message)?;
                    writes.extend(message_writes);
                    system_message = Some(Box::new(record));
                }
                (None, _) => self.group_content_deletes(&mut state, &id, &mut writes)?,
                (Some(_), None) => {}
            }
            let count = state.message_count;
            self.forget_groups(std::slice::from_ref(&id));
            let durable = self.queue_account_writes_counted(&mut pending, writes, count);
            let outcome = GroupUpdated::Changed {
                group: changed.map(Arc::new),
                previous_members: current.members,
                system_message,
            };
            (durable, outcome)
        };
        let written = wait(durable).await;
        self.forget_groups(std::slice::from_ref(&id));
        written?;
        Ok(outcome)
    }

    pub(super) async fn read_groups_of(&self, user: &str) -> Result<Vec<GroupSummary>, StoreError> {
        if !key_safe(user) {
            return Ok(Vec::new());
        }
        let mut prefix = key(GROUP_MEMBER, user);
        prefix.push(0);
        let mut summaries = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (stored_key, _) = item?;
            let id = stored_key
                .get(prefix.len()..)
                .and_then(|tail| std::str::from_utf8(tail).ok())
                .ok_or_else(|| StoreError::Codec("bad group member key".to_owned()))?;
            // The index and the record are written together; a record is only missing while
            // its deletion is being applied.
            let Some(group) = self.read_group(id)? else {
                continue;
            };
            let last_message = self.last_message(id)?;
            let last_seq = last_message.as_ref().map_or(0, |message| message.seq);
            let mark = self.read_u64(&pair_key(READ_MARK, id, user))?.unwrap_or(0);
            let mut unread = 0;
            if mark < last_seq {
                for item in self
                    .tree
                    .range(message_key(id, mark + 1)..=message_key(id, last_seq))
                {
                    let (_, value) = item?;
                    let message: MessageRecord = decode_versioned(&value)?;
                    if message.sender_id != user {
                        unread += 1;
                    }
                }
            }
            summaries.push(GroupSummary {
                group,
                last_message,
                unread,
            });
        }
        sort_summaries(&mut summaries);
        Ok(summaries)
    }

    pub(super) async fn find_groups(
        &self,
        query: &str,
        viewer: &str,
        limit: usize,
    ) -> Result<Vec<Arc<GroupRecord>>, StoreError> {
        let wanted = fold_name(query);
        let mut found = Vec::new();
        if limit == 0 {
            return Ok(found);
        }
        // Index keys are in folded-name order, so results come sorted by name.
        for item in self.tree.scan_prefix([GROUP_NAME]) {
            let (stored_key, _) = item?;
            let Some(split) = stored_key.iter().rposition(|byte| *byte == 0) else {
                continue;
            };
            let folded = stored_key.get(1..split).unwrap_or_default();
            if !contains(folded, wanted.as_bytes()) {
                continue;
            }
            let Some(id) = stored_key
                .get(split + 1..)
                .and_then(|tail| std::str::from_utf8(tail).ok())
            else {
                continue;
            };
            let Some(group) = self.read_group(id)? else {
                continue;
            };
            if !group.is_member(viewer) {
                found.push(group);
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    pub(super) async fn write_group_mark(
        &self,
        group: &str,
        reader: &str,
        seq: u64,
    ) -> Result<u64, StoreError> {
        check_id(group)?;
        check_id(reader)?;
        let mark_key = pair_key(READ_MARK, group, reader);
        let (durable, mark) = {
            let mut state = self.lock();
            let last_seq = self.conversation(&mut state, group, None)?.last_seq;
            let current = self.mark(&state, &mark_key)?.unwrap_or(0);
            let wanted = seq.min(last_seq);
            if wanted <= current {
                return Ok(current);
            }
            let writes = vec![Write::Put(mark_key.clone(), encode(&wanted)?)];
            state.marks.insert(mark_key.clone(), wanted);
            let settled = super::Settled::Mark {
                key: mark_key,
                value: wanted,
            };
            let (durable, _) = self.submit(writes, 0, Some(settled));
            (durable, wanted)
        };
        wait(durable).await?;
        Ok(mark)
    }

    /// Takes a user being deleted out of every group, adding the writes to the deletion's own
    /// (see `deletion.rs`); returns the groups touched, to forget once it is durable.
    pub(super) fn leave_groups_on_delete(
        &self,
        state: &mut State,
        pending: &Pending,
        user: &str,
        writes: &mut Vec<Write>,
    ) -> Result<Vec<String>, StoreError> {
        let mut prefix = key(GROUP_MEMBER, user);
        prefix.push(0);
        let mut touched = Vec::new();
        for index_key in self.latest_under(pending, &prefix)?.into_keys() {
            let id = String::from_utf8_lossy(index_key.get(prefix.len()..).unwrap_or_default())
                .into_owned();
            let Some(current) = self.latest_group(pending, &id)? else {
                writes.push(Write::Delete(index_key));
                continue;
            };
            let changed = without_member(&current, user);
            writes.extend(record_writes(Some(&current), changed.as_ref())?);
            writes.push(Write::Delete(pair_key(READ_MARK, &id, user)));
            state.marks.remove(&pair_key(READ_MARK, &id, user));
            if changed.is_none() {
                self.group_content_deletes(state, &id, writes)?;
            }
            touched.push(id);
        }
        self.forget_groups(&touched);
        Ok(touched)
    }
}

/// Whether `haystack` contains `needle` (bytes of UTF-8 text: a match is a match of text).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Golden bytes of the group key layouts: never edit the hex (see `store::codec`).
    #[test]
    fn group_keys_keep_their_layout() {
        assert_eq!(hex(&key(GROUP, "g1")), "676731");
        assert_eq!(hex(&pair_key(GROUP_MEMBER, "u1", "g1")), "477531006731");
        let group = GroupRecord {
            id: "g1".to_owned(),
            name: "Café".to_owned(),
            description: String::new(),
            profile_pic: String::new(),
            admin: "u1".to_owned(),
            members: vec!["u1".to_owned()],
            created_at: 0,
            updated_at: 0,
        };
        assert_eq!(hex(&name_key(&group)), "6e63616665006731");
    }

    #[test]
    fn byte_search_finds_folded_text() {
        assert!(contains(b"equipe cafe", b"cafe"));
        assert!(contains(b"equipe", b""));
        assert!(!contains(b"caf", b"cafe"));
    }
}
