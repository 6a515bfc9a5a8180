//! The in-memory chat store: users, conversations and messages in plain maps behind one lock.
//!
//! Every method takes the lock once, decides and applies its change under it, and returns: each
//! method is atomic, and a read that starts after a write returned sees it. Nothing is kept
//! across a restart. The semantics are the sled store's (`store/sled/chat.rs`), which the
//! conformance suite (`tests/chat_store.rs`, `tests/account_store.rs`) checks on both:
//!
//! - ids are the caller's (the store only numbers messages, from 1 in each conversation); user
//!   ids containing `:` or NUL are refused by writes and give empty reads, as on sled, where they
//!   would break a key;
//! - a message id is saved once: a retry gets the stored record with `false`;
//! - a conversation is listed from its first message on, newest last message first;
//! - `message_count` counts every message ever stored (deletions do not lower it).
//!
//! Account states, tokens, blocks, sessions, disabled marks and deletion are in
//! `chat/accounts.rs`.

mod accounts;
mod groups;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::store::accounts::{AccountState, OneTimeToken, SessionRecord, TokenPurpose};
use crate::store::chat::{
    direct_conversation_key, AccountChange, ChangeOutcome, ChatStore, ConversationSummary,
    CreateUser, HistoryPage, MessageChange, MessageRecord, NewMessage, UserChange, UserRecord,
};
use crate::store::chat_groups::{GroupRecord, GroupSummary, GroupUpdate, GroupUpdated};
use crate::store::job::Millis;
use crate::store::search::{self, IndexSource, MemoryIndex, SearchPage, SearchQuery};
use crate::store::StoreError;

/// A conversation: its two user ids sorted and joined with `:`, or a group id.
type ConversationKey = String;

/// Chat data kept in memory (see the module docs). Cheap to create; share it as
/// `Arc<dyn ChatStore>`.
pub struct MemoryChatStore {
    state: Mutex<State>,
}

impl MemoryChatStore {
    /// An empty store.
    pub fn new() -> MemoryChatStore {
        MemoryChatStore {
            state: Mutex::new(State::default()),
        }
    }
}

impl Default for MemoryChatStore {
    fn default() -> MemoryChatStore {
        MemoryChatStore::new()
    }
}

#[derive(Default)]
struct State {
    users: HashMap<String, UserRecord>,
    /// E-mail → user id.
    emails: HashMap<String, String>,
    /// Each conversation's messages in `seq` order (only conversations with a message).
    conversations: HashMap<ConversationKey, Vec<MessageRecord>>,
    /// Each user's conversation partners (both directions written with the first message).
    partners: HashMap<String, BTreeSet<String>>,
    /// Message id → where the message is.
    message_ids: HashMap<String, (ConversationKey, u64)>,
    /// Each conversation's change index: change stamp → seq of the message it stamped last.
    changes: HashMap<ConversationKey, BTreeMap<u64, u64>>,
    /// Each conversation's last change stamp.
    last_change: HashMap<ConversationKey, u64>,
    /// File URL → ids of the stored messages that refer to it.
    file_refs: HashMap<String, BTreeSet<String>>,
    /// Read marks, by conversation and reader.
    read_marks: HashMap<(ConversationKey, String), u64>,
    /// Time of the last e-mail claim, by conversation and the user e-mailed.
    email_claims: HashMap<(ConversationKey, String), Millis>,
    /// The words of every stored message (`store::search`).
    search: MemoryIndex,
    /// Messages ever stored.
    message_count: u64,
    /// Users deleted: a message naming one is refused.
    deleted_users: HashSet<String>,
    accounts: accounts::Accounts,
    groups: groups::Groups,
}

/// The search index and the messages it points to, as `search::evaluate` reads them.
struct IndexOf<'a>(&'a State);

impl IndexSource for IndexOf<'_> {
    fn range(&self, prefix: &[u8], each: &mut search::EachEntry<'_>) -> Result<(), StoreError> {
        self.0.search.range(prefix, each)
    }

    fn message(&self, conversation: &str, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        let Some(messages) = self.0.conversations.get(conversation) else {
            return Ok(None);
        };
        let position = messages.partition_point(|message| message.seq < seq);
        Ok(messages
            .get(position)
            .filter(|message| message.seq == seq)
            .cloned())
    }
}

/// Whether a user id could be part of a sled key (the sled store's rule, kept here so that both
/// backends accept the same ids).
fn key_safe(id: &str) -> bool {
    !id.contains([':', '\0'])
}

fn check_id(id: &str) -> Result<(), StoreError> {
    if key_safe(id) {
        Ok(())
    } else {
        Err(StoreError::Codec(format!(
            "user id {id:?} cannot be stored: it contains ':' or NUL"
        )))
    }
}

fn conversation_key(a: &str, b: &str) -> ConversationKey {
    direct_conversation_key(a, b)
}

/// The part of `messages` (sorted by `seq`) that `page` asks for, oldest first.
fn page_of(messages: &[MessageRecord], page: HistoryPage) -> &[MessageRecord] {
    let (start, end) = match page {
        HistoryPage::Latest { limit } => (messages.len().saturating_sub(limit), messages.len()),
        HistoryPage::Before { seq, limit } => {
            let end = messages.partition_point(|message| message.seq < seq);
            (end.saturating_sub(limit), end)
        }
        HistoryPage::After { seq, limit } => {
            let start = messages.partition_point(|message| message.seq <= seq);
            (start, start.saturating_add(limit).min(messages.len()))
        }
        // Answered from the change index (`State::changed_after`).
        HistoryPage::ChangedAfter { .. } => (0, 0),
    };
    messages.get(start..end).unwrap_or_default()
}

impl State {
    fn create_user(&mut self, user: UserRecord) -> Result<CreateUser, StoreError> {
        check_id(&user.id)?;
        if self.emails.contains_key(&user.email) {
            return Ok(CreateUser::EmailTaken);
        }
        self.emails.insert(user.email.clone(), user.id.clone());
        self.users.insert(user.id.clone(), user);
        Ok(CreateUser::Created)
    }

    fn update_user(&mut self, id: &str, change: UserChange, now: Millis) -> Option<UserRecord> {
        let user = self.users.get_mut(id)?;
        change.apply(user);
        user.updated_at = now;
        Some(user.clone())
    }

    fn users(&self) -> Vec<UserRecord> {
        let mut users: Vec<UserRecord> = self.users.values().cloned().collect();
        users.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        users
    }

    fn message(&self, id: &str) -> Option<&MessageRecord> {
        let (conversation, seq) = self.message_ids.get(id)?;
        let messages = self.conversations.get(conversation)?;
        let index = messages.partition_point(|message| message.seq < *seq);
        messages.get(index).filter(|message| message.seq == *seq)
    }

    fn save_message(&mut self, message: NewMessage) -> Result<(MessageRecord, bool), StoreError> {
        check_id(&message.sender_id)?;
        let conversation = match &message.group_id {
            Some(group) => {
                check_id(group)?;
                group.clone()
            }
            None => {
                check_id(&message.receiver_id)?;
                conversation_key(&message.sender_id, &message.receiver_id)
            }
        };
        let mut named = vec![&message.sender_id];
        if message.group_id.is_none() {
            named.push(&message.receiver_id);
        }
        for user in named {
            if self.deleted_users.contains(user) {
                return Err(StoreError::Deleted(user.clone()));
            }
        }
        if let Some(stored) = self.message(&message.id) {
            return Ok((stored.clone(), false));
        }
        let is_group = message.group_id.is_some();
        let change = self.next_change(&conversation);
        let messages = self.conversations.entry(conversation.clone()).or_default();
        let seq = messages.last().map_or(0, |last| last.seq) + 1;
        let record = MessageRecord::new_at(message, seq, change);
        messages.push(record.clone());
        if !is_group {
            for (user, other) in [
                (&record.sender_id, &record.receiver_id),
                (&record.receiver_id, &record.sender_id),
            ] {
                self.partners
                    .entry(user.clone())
                    .or_default()
                    .insert(other.clone());
            }
        }
        self.changes
            .entry(conversation.clone())
            .or_default()
            .insert(change, seq);
        for url in record.file_refs() {
            self.file_refs
                .entry(url)
                .or_default()
                .insert(record.id.clone());
        }
        self.search.apply(search::entries_of(&record));
        self.message_ids
            .insert(record.id.clone(), (conversation, seq));
        self.message_count += 1;
        Ok((record, true))
    }

    fn next_change(&mut self, conversation: &str) -> u64 {
        let last = self.last_change.entry(conversation.to_owned()).or_insert(0);
        *last += 1;
        *last
    }

    fn change_message(&mut self, id: &str, change: MessageChange, now: Millis) -> ChangeOutcome {
        let Some((conversation, seq)) = self.message_ids.get(id).cloned() else {
            return ChangeOutcome::NotFound;
        };
        let Some(mut record) = self.message(id).cloned() else {
            return ChangeOutcome::NotFound;
        };
        let before = record.clone();
        match change.apply(&mut record, now) {
            Err(refused) => return ChangeOutcome::Refused(refused, before),
            Ok(false) => return ChangeOutcome::Unchanged(before),
            Ok(true) => {}
        }
        let stamp = self.next_change(&conversation);
        record.change = stamp;
        self.search
            .apply(search::changes_between(Some(&before), &record));
        let index = self.changes.entry(conversation.clone()).or_default();
        index.remove(&before.change);
        index.insert(stamp, seq);
        let mut released = Vec::new();
        let kept = record.file_refs();
        for url in before.file_refs() {
            if kept.contains(&url) {
                continue;
            }
            if let Some(ids) = self.file_refs.get_mut(&url) {
                ids.remove(id);
                if ids.is_empty() {
                    self.file_refs.remove(&url);
                    released.push(url);
                }
            }
        }
        if let Some(stored) = self
            .conversations
            .get_mut(&conversation)
            .and_then(|messages| {
                let index = messages.partition_point(|message| message.seq < seq);
                messages.get_mut(index)
            })
        {
            *stored = record.clone();
        }
        ChangeOutcome::Changed {
            message: record,
            released,
        }
    }

    /// The first `limit` messages of `conversation` stamped after `change`, in stamp order.
    fn changed_after(&self, conversation: &str, change: u64, limit: usize) -> Vec<MessageRecord> {
        let (Some(index), Some(messages)) = (
            self.changes.get(conversation),
            self.conversations.get(conversation),
        ) else {
            return Vec::new();
        };
        let Some(from) = change.checked_add(1) else {
            return Vec::new();
        };
        index
            .range(from..)
            .take(limit)
            .filter_map(|(_, seq)| {
                let position = messages.partition_point(|message| message.seq < *seq);
                messages.get(position).filter(|message| message.seq == *seq)
            })
            .cloned()
            .collect()
    }

    fn conversation_page(&self, conversation: &str, page: HistoryPage) -> Vec<MessageRecord> {
        if let HistoryPage::ChangedAfter { change, limit } = page {
            return self.changed_after(conversation, change, limit);
        }
        match self.conversations.get(conversation) {
            Some(messages) => page_of(messages, page).to_vec(),
            None => Vec::new(),
        }
    }

    fn group_history(&self, group_id: &str, page: HistoryPage) -> Vec<MessageRecord> {
        if !key_safe(group_id) {
            return Vec::new();
        }
        self.conversation_page(group_id, page)
    }

    fn history(&self, a: &str, b: &str, page: HistoryPage) -> Vec<MessageRecord> {
        if !key_safe(a) || !key_safe(b) {
            return Vec::new();
        }
        self.conversation_page(&conversation_key(a, b), page)
    }

    fn last_seq(&self, conversation: &ConversationKey) -> u64 {
        self.conversations
            .get(conversation)
            .and_then(|messages| messages.last())
            .map_or(0, |last| last.seq)
    }

    fn read_mark(&self, conversation: &ConversationKey, reader: &str) -> u64 {
        self.read_marks
            .get(&(conversation.clone(), reader.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn mark_read(&mut self, reader: &str, other: &str, seq: u64) -> Result<u64, StoreError> {
        check_id(reader)?;
        check_id(other)?;
        let conversation = conversation_key(reader, other);
        let wanted = seq.min(self.last_seq(&conversation));
        let mark = self
            .read_marks
            .entry((conversation, reader.to_owned()))
            .or_insert(0);
        *mark = (*mark).max(wanted);
        Ok(*mark)
    }

    fn conversations(&self, user: &str) -> Vec<ConversationSummary> {
        if !key_safe(user) {
            return Vec::new();
        }
        let Some(partners) = self.partners.get(user) else {
            return Vec::new();
        };
        let mut summaries: Vec<ConversationSummary> = partners
            .iter()
            .map(|other_id| {
                let conversation = conversation_key(user, other_id);
                let messages = self
                    .conversations
                    .get(&conversation)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let mark = self.read_mark(&conversation, user);
                let after_mark = messages.partition_point(|message| message.seq <= mark);
                let unread = messages
                    .get(after_mark..)
                    .unwrap_or_default()
                    .iter()
                    .filter(|message| message.sender_id == *other_id && message.sender_id != user)
                    .count() as u64;
                ConversationSummary {
                    other_id: other_id.clone(),
                    last_message: messages.last().cloned(),
                    unread,
                    read_by_other: self.read_mark(&conversation, other_id),
                }
            })
            .collect();
        // Most recent conversation first, as a sidebar lists them.
        summaries.sort_by(|a, b| {
            let a_time = a.last_message.as_ref().map(|m| m.created_at);
            let b_time = b.last_message.as_ref().map(|m| m.created_at);
            b_time
                .cmp(&a_time)
                .then_with(|| a.other_id.cmp(&b.other_id))
        });
        summaries
    }

    fn claim_email_slot(
        &mut self,
        user: &str,
        other: &str,
        now: Millis,
        window_ms: u64,
    ) -> Result<bool, StoreError> {
        check_id(user)?;
        check_id(other)?;
        let claim = (conversation_key(user, other), user.to_owned());
        if let Some(last) = self.email_claims.get(&claim) {
            if now.saturating_sub(*last) < window_ms {
                return Ok(false);
            }
        }
        self.email_claims.insert(claim, now);
        Ok(true)
    }
}

#[async_trait]
impl ChatStore for MemoryChatStore {
    async fn create_user(&self, user: UserRecord) -> Result<CreateUser, StoreError> {
        self.state.lock().create_user(user)
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.state.lock().users.get(id).cloned())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let state = self.state.lock();
        Ok(state
            .emails
            .get(email)
            .and_then(|id| state.users.get(id))
            .cloned())
    }

    async fn update_user(
        &self,
        id: &str,
        change: UserChange,
        now: Millis,
    ) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.state.lock().update_user(id, change, now))
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        Ok(self.state.lock().users())
    }

    async fn save_message(&self, message: NewMessage) -> Result<(MessageRecord, bool), StoreError> {
        self.state.lock().save_message(message)
    }

    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        Ok(self.state.lock().message(id).cloned())
    }

    async fn history(
        &self,
        a: &str,
        b: &str,
        page: HistoryPage,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        Ok(self.state.lock().history(a, b, page))
    }

    async fn group_history(
        &self,
        group_id: &str,
        page: HistoryPage,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        Ok(self.state.lock().group_history(group_id, page))
    }

    async fn change_message(
        &self,
        id: &str,
        change: MessageChange,
        now: Millis,
    ) -> Result<ChangeOutcome, StoreError> {
        Ok(self.state.lock().change_message(id, change, now))
    }

    async fn search_messages(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        let state = self.state.lock();
        let source = IndexOf(&state);
        let hits = search::evaluate(query, &source)?;
        let mut messages = Vec::with_capacity(hits.page.len());
        for hit in &hits.page {
            let record = source.message(&hit.conversation, hit.seq)?;
            messages.extend(record.filter(|record| search::matches_all(record, &query.words)));
        }
        Ok(SearchPage {
            total: hits.total,
            messages,
        })
    }

    async fn file_referenced(&self, url: &str) -> Result<bool, StoreError> {
        Ok(self
            .state
            .lock()
            .file_refs
            .contains_key(crate::store::chat::canonical_file_url(url)))
    }

    async fn mark_read(&self, reader: &str, other: &str, seq: u64) -> Result<u64, StoreError> {
        self.state.lock().mark_read(reader, other, seq)
    }

    async fn conversations(&self, user: &str) -> Result<Vec<ConversationSummary>, StoreError> {
        Ok(self.state.lock().conversations(user))
    }

    async fn claim_email_slot(
        &self,
        user: &str,
        other: &str,
        now: Millis,
        window_ms: u64,
    ) -> Result<bool, StoreError> {
        self.state
            .lock()
            .claim_email_slot(user, other, now, window_ms)
    }

    async fn message_count(&self) -> Result<u64, StoreError> {
        Ok(self.state.lock().message_count)
    }

    async fn account_state(&self, user: &str) -> Result<AccountState, StoreError> {
        self.state.lock().account_state(user)
    }

    async fn update_account_state(
        &self,
        user: &str,
        change: AccountChange,
    ) -> Result<AccountState, StoreError> {
        self.state.lock().update_account_state(user, change)
    }

    async fn put_token(
        &self,
        hash: &str,
        token: OneTimeToken,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.state.lock().put_token(hash, token, now)
    }

    async fn take_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: Millis,
    ) -> Result<Option<OneTimeToken>, StoreError> {
        self.state.lock().take_token(hash, purpose, now)
    }

    async fn set_blocked(
        &self,
        blocker: &str,
        blocked: &str,
        is_blocked: bool,
    ) -> Result<bool, StoreError> {
        self.state.lock().set_blocked(blocker, blocked, is_blocked)
    }

    async fn is_blocked(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        self.state.lock().is_blocked(blocker, blocked)
    }

    async fn blocked_users(&self, blocker: &str) -> Result<Vec<String>, StoreError> {
        self.state.lock().blocked_users(blocker)
    }

    async fn blockers_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.state.lock().blockers_of(user)
    }

    async fn put_session(
        &self,
        id: &str,
        session: SessionRecord,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.state.lock().put_session(id, session, now)
    }

    async fn touch_session(&self, id: &str, last_seen_at: Millis) -> Result<bool, StoreError> {
        self.state.lock().touch_session(id, last_seen_at)
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.state.lock().session(id)
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        self.state.lock().sessions_of(user)
    }

    async fn set_disabled(&self, user: &str, at: Option<Millis>) -> Result<(), StoreError> {
        self.state.lock().set_disabled(user, at)
    }

    async fn disabled_at(&self, user: &str) -> Result<Option<Millis>, StoreError> {
        self.state.lock().disabled_at(user)
    }

    async fn delete_user(&self, user: &str) -> Result<Option<u64>, StoreError> {
        self.state.lock().delete_user(user)
    }

    async fn delete_sessions(&self, user: &str, ids: &[String]) -> Result<usize, StoreError> {
        self.state.lock().delete_sessions(user, ids)
    }

    async fn create_group(
        &self,
        group: GroupRecord,
        system_message: Option<NewMessage>,
    ) -> Result<bool, StoreError> {
        self.state.lock().create_group(group, system_message)
    }

    async fn group(&self, id: &str) -> Result<Option<Arc<GroupRecord>>, StoreError> {
        Ok(self.state.lock().group(id))
    }

    async fn update_group(&self, update: GroupUpdate) -> Result<GroupUpdated, StoreError> {
        self.state.lock().update_group(update)
    }

    async fn groups_of(&self, user: &str) -> Result<Vec<GroupSummary>, StoreError> {
        Ok(self.state.lock().groups_of(user))
    }

    async fn search_groups(
        &self,
        query: &str,
        viewer: &str,
        limit: usize,
    ) -> Result<Vec<Arc<GroupRecord>>, StoreError> {
        Ok(self.state.lock().search_groups(query, viewer, limit))
    }

    async fn mark_group_read(
        &self,
        group: &str,
        reader: &str,
        seq: u64,
    ) -> Result<u64, StoreError> {
        self.state.lock().mark_group_read(group, reader, seq)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn it_is_shared_across_threads_as_a_chat_store() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<MemoryChatStore>();
        let store: Arc<dyn ChatStore> = Arc::new(MemoryChatStore::default());
        drop(store);
    }

    fn message(seq: u64) -> MessageRecord {
        let message = NewMessage {
            id: format!("m{seq}"),
            sender_id: "a".to_owned(),
            receiver_id: "b".to_owned(),
            created_at: seq,
            ..NewMessage::default()
        };
        MessageRecord::new_at(message, seq, seq)
    }

    /// Pages are cut by `seq`, not by position: they stay right if a conversation has gaps.
    #[test]
    fn pages_are_cut_by_seq() {
        let messages: Vec<MessageRecord> = [1, 2, 5, 6, 9].into_iter().map(message).collect();
        let seqs = |page| -> Vec<u64> {
            page_of(&messages, page)
                .iter()
                .map(|message| message.seq)
                .collect()
        };
        assert_eq!(seqs(HistoryPage::Before { seq: 6, limit: 2 }), [2, 5]);
        assert_eq!(seqs(HistoryPage::After { seq: 2, limit: 2 }), [5, 6]);
        assert_eq!(seqs(HistoryPage::After { seq: 3, limit: 9 }), [5, 6, 9]);
        assert_eq!(seqs(HistoryPage::Latest { limit: 9 }), [1, 2, 5, 6, 9]);
        assert!(seqs(HistoryPage::After {
            seq: u64::MAX,
            limit: usize::MAX
        })
        .is_empty());
    }
}
