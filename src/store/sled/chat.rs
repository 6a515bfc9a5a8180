//! The sled chat store: users, conversations and messages in one tree, `chat`.
//!
//! Unlike the job store, the chat store keeps no index of its data in memory: every read goes to
//! sled, and start-up reads one key (the message counter), whatever the size of the history. What
//! memory holds is only what makes writes race-free: each conversation's last `seq` (loaded the
//! first time the conversation is written), read marks and e-mail claims already touched, and the
//! writes that are queued but not yet durable (so a duplicate `messageId` or e-mail arriving in
//! that window is recognised). Deciding a write and queueing it to the [`Committer`] happen under
//! one lock, so the disk applies writes in the order memory decided them; the caller then waits
//! for the commit outside the lock. A write is acknowledged only once it is logged, synced and
//! applied to the tree, so a read that starts after the acknowledgement finds it there.
//!
//! Keys (every multi-key write is part of one write-ahead log entry, so atomic across a crash; see
//! `committer.rs`):
//!
//! | Key | Value |
//! |---|---|
//! | `u<userId>` | [`UserRecord`] |
//! | `e<email>` | user id |
//! | `c<convId>\0<seq u64 BE>` | [`MessageRecord`] |
//! | `i<messageId>` | [`MessageRef`] (conversation, seq) |
//! | `p<userId>\0<otherId>` | empty; both directions, written with a conversation's first message |
//! | `r<convId>\0<userId>` | read mark (u64) |
//! | `x<convId>\0<userId>` | time of the last e-mail claim (Millis) |
//! | `k<convId>\0<change u64 BE>` | seq of the message this change stamp is the latest of (see `chat/changes.rs`) |
//! | `h<url>\0<messageId>` | empty: the message refers to the stored file at `url` |
//! | `m:file-refs` | empty: the `h` index covers every message (see `chat/changes.rs`) |
//! | `w<search entry>` | the message search index (see `chat/search.rs`); `m:search` marks it complete |
//! | `m:count` | number of stored messages, u64 BE (the committer's counter key) |
//! | `a…`, `t…`, `T…`, `b…`, `B…`, `s…`, `S…` | account states, single-use tokens, blocks, sessions (see `chat/accounts.rs`) |
//! | `d<userId>` | when the account was disabled (see `chat/deletion.rs`, which also deletes users) |
//! | `g…`, `G…`, `n…` | groups, each user's groups, the group name index (see `chat/groups.rs`) |
//!
//! `convId` is the two user ids sorted and joined with `:`, or a group id for a group's messages;
//! user and group ids therefore may contain neither `:` nor NUL (ObjectIds never do), and writes
//! reject ids that would. Messages are stored in format 2 (`codec::encode_versioned`); those of
//! format 1 read as they were, with no change stamp.

mod accounts;
mod changes;
mod deletion;
mod groups;
mod keys;
mod search;
mod sessions;
mod users;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use self::keys::{
    change_key, change_prefix, check_id, conversation_id, conversation_prefix, file_ref_key, key,
    key_safe, message_key, page, pair_key, seq_of, COUNT_KEY, EMAIL, EMAIL_CLAIM, MESSAGE_ID,
    PARTNER, READ_MARK, USER,
};
use super::committer::{AfterCommit, Committer, Write};
use super::Database;
use crate::store::accounts::{AccountState, OneTimeToken, SessionRecord, TokenPurpose};
use crate::store::chat::{
    AccountChange, ChangeOutcome, ChatStore, ConversationSummary, CreateUser, HistoryPage,
    MessageChange, MessageRecord, NewMessage, UserChange, UserRecord,
};
use crate::store::chat_groups::{GroupRecord, GroupSummary, GroupUpdate, GroupUpdated};
use crate::store::codec::{decode, decode_versioned, encode, encode_versioned};
use crate::store::job::Millis;
use crate::store::StoreError;

/// Where a message lives, found by its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MessageRef {
    conversation: String,
    seq: u64,
}

/// Resolves with the outcome of a queued write's commit; shared by everyone who must wait for it.
type Outcome = Shared<BoxFuture<'static, Result<(), StoreError>>>;

type Durable = oneshot::Receiver<Result<(), StoreError>>;

/// What the chat store knows about one conversation it has written.
struct Conversation {
    /// Highest `seq` handed out (queued writes included).
    last_seq: u64,
    /// Highest change stamp handed out (queued writes included).
    last_change: u64,
    /// The `p` keys of both users exist or are queued (always true for a group).
    linked: bool,
}

struct PendingMessage {
    record: MessageRecord,
    outcome: Outcome,
    token: u64,
}

struct PendingEmail {
    outcome: Outcome,
    token: u64,
}

/// A commit that has finished, reported by the committer thread. It goes through its own small
/// queue, not the state lock: the committer calls `after` synchronously from `submit_durable`
/// when it is closed, and that call happens while the state lock is held.
enum Settled {
    Email {
        email: String,
        token: u64,
    },
    Message {
        id: String,
        token: u64,
        conversation: String,
    },
    /// A read mark or e-mail claim (only a failed one needs clean-up).
    Mark {
        key: Vec<u8>,
        value: u64,
    },
}

#[derive(Default)]
struct State {
    /// Conversations written (or read-marked) since start-up. Entries are never evicted: one small entry per active
    /// conversation, and an entry may be dropped only when none of its writes are pending.
    conversations: HashMap<String, Conversation>,
    /// Messages queued but not yet committed, by id: a duplicate waits for the original's commit.
    pending_messages: HashMap<String, PendingMessage>,
    /// E-mails of users being created, not yet committed.
    pending_emails: HashMap<String, PendingEmail>,
    /// Read marks and e-mail claim times touched since start-up, by their key. Kept (rather than
    /// read from the tree) because a queued write is not in the tree yet, and a decision taken on
    /// the tree's older value could move a mark backwards or grant a claim twice.
    marks: HashMap<Vec<u8>, u64>,
    message_count: u64,
    /// Tells a pending entry from a later one with the same id.
    next_token: u64,
    /// Users deleted since start-up: a message naming one is refused (one still on its way
    /// when the deletion was decided would otherwise bring a conversation back).
    deleted_users: std::collections::HashSet<String>,
}

impl State {
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Forgets pending entries whose commit has finished, and undoes the memory of failed ones.
    fn settle(&mut self, settled: Vec<(Settled, bool)>) {
        for (done, ok) in settled {
            match done {
                Settled::Email { email, token } => {
                    if self
                        .pending_emails
                        .get(&email)
                        .is_some_and(|pending| pending.token == token)
                    {
                        self.pending_emails.remove(&email);
                    }
                }
                Settled::Message {
                    id,
                    token,
                    conversation,
                } => {
                    if self
                        .pending_messages
                        .get(&id)
                        .is_some_and(|pending| pending.token == token)
                    {
                        self.pending_messages.remove(&id);
                    }
                    // The `p` keys may have been in the failed batch: write them again with the
                    // conversation's next message. (Its seq is not reused: a gap after an I/O
                    // error is allowed, a repeated seq is not.)
                    if !ok {
                        if let Some(entry) = self.conversations.get_mut(&conversation) {
                            entry.linked = false;
                        }
                    }
                }
                Settled::Mark { key, value } => {
                    // A later, higher value queued after the failed one stays; otherwise the
                    // tree's value is the truth again.
                    if !ok && self.marks.get(&key) == Some(&value) {
                        self.marks.remove(&key);
                    }
                }
            }
        }
    }
}

/// Most users the read cache holds.
const USER_CACHE_CAPACITY: usize = 10_000;

/// Users read recently. Every authenticated request and every message reads one to three users;
/// they are served from here instead of a sled lookup and a decode each time.
#[derive(Default)]
struct UserCache {
    users: HashMap<String, UserRecord>,
    /// Bumped by every update: a read that started before an update may not fill the cache with
    /// what it read.
    epoch: u64,
}

pub struct SledChatStore {
    tree: sled::Tree,
    user_cache: Mutex<UserCache>,
    state: Mutex<State>,
    /// Commits finished since the state was last locked, with whether they succeeded.
    settled: Arc<Mutex<Vec<(Settled, bool)>>>,
    /// Message changes on their way to disk (`changes.rs`).
    message_writes: Arc<changes::MessageWrites>,
    /// Account and token writes on their way to disk (`accounts.rs`).
    account_writes: Arc<accounts::AccountWrites>,
    /// User record changes on their way to disk (`users.rs`).
    user_writes: Arc<users::UserWrites>,
    /// Group records read recently (`groups.rs`).
    groups: groups::GroupCache,
    committer: Committer,
    /// Whether messages are indexed for search (`SEARCH_INDEX`).
    search_index: bool,
}

impl SledChatStore {
    /// Opens the chat tree of `database`, committing through the database's one commit thread
    /// (shared with the job store when both are on sled: one log entry and one sync for both;
    /// see `committer.rs`).
    pub fn open(database: &Database, search_index: bool) -> Result<SledChatStore, StoreError> {
        let tree = database.db.open_tree("chat")?;
        let message_count = match tree.get(COUNT_KEY)? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Codec("bad message counter".to_owned()))?,
            ),
            None => 0,
        };
        let committer =
            database.committer(tree.clone(), COUNT_KEY.to_vec(), message_count, false)?;
        changes::index_file_refs(&tree)?;
        if search_index {
            search::index_messages(&tree)?;
        } else {
            search::forget_index(&tree)?;
        }
        Ok(SledChatStore {
            tree,
            user_cache: Mutex::new(UserCache::default()),
            state: Mutex::new(State {
                message_count,
                ..State::default()
            }),
            settled: Arc::new(Mutex::new(Vec::new())),
            message_writes: Arc::default(),
            account_writes: Arc::default(),
            user_writes: Arc::default(),
            groups: groups::GroupCache::default(),
            committer,
            search_index,
        })
    }

    /// Number of batches committed so far (group commit makes this far below the write count).
    pub fn batch_count(&self) -> u64 {
        self.committer.batch_count()
    }

    pub fn storage_errors(&self) -> u64 {
        self.committer.error_count()
    }

    /// Locks the state, first applying the commits that finished since the last lock.
    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        let mut state = self.state.lock();
        let settled = std::mem::take(&mut *self.settled.lock());
        state.settle(settled);
        state
    }

    /// Queues a durable write. Call it under the state lock, so the disk applies writes in the
    /// order memory decided them; wait for the returned receiver after releasing the lock.
    /// `settled` names what memory must forget (or undo) once the commit is over; the returned
    /// [`Outcome`] lets other callers wait for the same commit.
    fn submit(
        &self,
        writes: Vec<Write>,
        counter: u64,
        settled: Option<Settled>,
    ) -> (Durable, Outcome) {
        let (tell, told) = oneshot::channel::<Result<(), StoreError>>();
        let outcome: Outcome = async move { told.await.unwrap_or(Err(StoreError::Closed)) }
            .boxed()
            .shared();
        let queue = self.settled.clone();
        let after: AfterCommit = Box::new(move |result| {
            if let Some(settled) = settled {
                queue.lock().push((settled, result.is_ok()));
            }
            let _ = tell.send(result.clone());
        });
        (
            self.committer.submit_durable(writes, counter, Some(after)),
            outcome,
        )
    }

    /// The state of a conversation, loaded from the tree the first time it is written: its last
    /// key gives the last seq, its last change key the last change stamp, and (for a direct
    /// conversation, whose two users `link` names) one of its `p` keys whether it is linked.
    fn conversation<'a>(
        &self,
        state: &'a mut State,
        conversation: &str,
        link: Option<(&str, &str)>,
    ) -> Result<&'a mut Conversation, StoreError> {
        match state.conversations.entry(conversation.to_owned()) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => {
                let last_seq = match self
                    .tree
                    .scan_prefix(conversation_prefix(conversation))
                    .next_back()
                {
                    Some(item) => seq_of(&item?.0)?,
                    None => 0,
                };
                let last_change = match self
                    .tree
                    .scan_prefix(change_prefix(conversation))
                    .next_back()
                {
                    Some(item) => seq_of(&item?.0)?,
                    None => 0,
                };
                let linked = match link {
                    Some((first, second)) => {
                        self.tree.contains_key(pair_key(PARTNER, first, second))?
                    }
                    None => true,
                };
                Ok(entry.insert(Conversation {
                    last_seq,
                    last_change,
                    linked,
                }))
            }
        }
    }

    /// A read mark or claim time: the one in memory, else the stored one.
    fn mark(&self, state: &State, key: &[u8]) -> Result<Option<u64>, StoreError> {
        if let Some(value) = state.marks.get(key) {
            return Ok(Some(*value));
        }
        self.read_u64(key)
    }

    fn read_u64(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn read_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let epoch = {
            let cache = self.user_cache.lock();
            if let Some(user) = cache.users.get(id) {
                return Ok(Some(user.clone()));
            }
            cache.epoch
        };
        let Some(bytes) = self.tree.get(key(USER, id))? else {
            return Ok(None);
        };
        let user: UserRecord = decode(&bytes)?;
        let mut cache = self.user_cache.lock();
        if cache.epoch == epoch {
            if cache.users.len() >= USER_CACHE_CAPACITY {
                // Any entry will do: the cache only saves reads.
                if let Some(evicted) = cache.users.keys().next().cloned() {
                    cache.users.remove(&evicted);
                }
            }
            cache.users.insert(id.to_owned(), user.clone());
        }
        Ok(Some(user))
    }

    /// Forgets a cached user that is being updated, and stops reads already under way from
    /// caching what they read.
    fn forget_user(&self, id: &str) {
        let mut cache = self.user_cache.lock();
        cache.epoch += 1;
        cache.users.remove(id);
    }

    fn read_message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        let Some(bytes) = self.tree.get(key(MESSAGE_ID, id))? else {
            return Ok(None);
        };
        let place: MessageRef = decode(&bytes)?;
        // The id key and the message are written in one batch: one without the other is damage.
        match self.tree.get(message_key(&place.conversation, place.seq))? {
            Some(bytes) => Ok(Some(decode_versioned(&bytes)?)),
            None => Err(StoreError::Codec(format!(
                "message {id} is indexed but not stored"
            ))),
        }
    }

    /// The last message of a conversation, as stored.
    fn last_message(&self, conversation: &str) -> Result<Option<MessageRecord>, StoreError> {
        match self
            .tree
            .scan_prefix(conversation_prefix(conversation))
            .next_back()
        {
            Some(item) => Ok(Some(decode_versioned(&item?.1)?)),
            None => Ok(None),
        }
    }
    /// A page of the conversation keyed `conversation` (direct or group).
    fn conversation_page(
        &self,
        conversation: &str,
        page_wanted: HistoryPage,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        match page_wanted {
            HistoryPage::Latest { limit } => page(
                self.tree.scan_prefix(conversation_prefix(conversation)),
                limit,
                true,
            ),
            HistoryPage::Before { seq, limit } => page(
                self.tree
                    .range(message_key(conversation, 0)..message_key(conversation, seq)),
                limit,
                true,
            ),
            HistoryPage::After { seq, limit } => match seq.checked_add(1) {
                Some(from) => page(
                    self.tree.range(
                        message_key(conversation, from)..=message_key(conversation, u64::MAX),
                    ),
                    limit,
                    false,
                ),
                None => Ok(Vec::new()),
            },

            HistoryPage::ChangedAfter { change, limit } => {
                self.changed_after(conversation, change, limit)
            }
        }
    }
}

/// How a save that found its message id already taken must answer.
enum Existing {
    Stored(MessageRecord),
    Pending(MessageRecord, Outcome),
}

async fn wait(durable: Durable) -> Result<(), StoreError> {
    durable.await.unwrap_or(Err(StoreError::Closed))
}

#[async_trait]
impl ChatStore for SledChatStore {
    async fn create_user(&self, user: UserRecord) -> Result<CreateUser, StoreError> {
        check_id(&user.id)?;
        let email_key = key(EMAIL, &user.email);
        let waiting_for: Result<Durable, Outcome> = {
            let mut state = self.lock();
            if let Some(pending) = state.pending_emails.get(&user.email) {
                Err(pending.outcome.clone())
            } else if self.tree.contains_key(&email_key)? {
                return Ok(CreateUser::EmailTaken);
            } else {
                let writes = vec![
                    Write::Put(key(USER, &user.id), encode(&user)?),
                    Write::Put(email_key, encode(&user.id)?),
                ];
                let token = state.token();
                let settled = Settled::Email {
                    email: user.email.clone(),
                    token,
                };
                let (durable, outcome) = self.submit(writes, 0, Some(settled));
                state
                    .pending_emails
                    .insert(user.email.clone(), PendingEmail { outcome, token });
                Ok(durable)
            }
        };
        match waiting_for {
            Ok(durable) => {
                wait(durable).await?;
                Ok(CreateUser::Created)
            }
            // The same e-mail is being created: it is taken once that creation is durable. If
            // that commit failed, so does this call (the storage is failing).
            Err(earlier) => {
                earlier.await?;
                Ok(CreateUser::EmailTaken)
            }
        }
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.read_user(id)
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let Some(bytes) = self.tree.get(key(EMAIL, email))? else {
            return Ok(None);
        };
        let id: String = decode(&bytes)?;
        self.read_user(&id)
    }

    async fn update_user(
        &self,
        id: &str,
        change: UserChange,
        now: Millis,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.change_user(id, change, now).await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut users = Vec::new();
        for item in self.tree.scan_prefix([USER]) {
            let (_, value) = item?;
            users.push(decode::<UserRecord>(&value)?);
        }
        users.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(users)
    }

    async fn save_message(&self, message: NewMessage) -> Result<(MessageRecord, bool), StoreError> {
        check_id(&message.sender_id)?;
        let conversation = match &message.group_id {
            Some(group) => {
                check_id(group)?;
                group.clone()
            }
            None => {
                check_id(&message.receiver_id)?;
                conversation_id(&message.sender_id, &message.receiver_id)
            }
        };
        let decided: Result<(Durable, MessageRecord), Existing> = {
            let mut state = self.lock();
            let mut named = vec![&message.sender_id];
            if message.group_id.is_none() {
                named.push(&message.receiver_id);
            }
            for user in named {
                if state.deleted_users.contains(user) {
                    return Err(StoreError::Deleted(user.clone()));
                }
            }
            if let Some(pending) = state.pending_messages.get(&message.id) {
                Err(Existing::Pending(
                    pending.record.clone(),
                    pending.outcome.clone(),
                ))
            } else if let Some(stored) = self.read_message(&message.id)? {
                Err(Existing::Stored(stored))
            } else {
                let pair = if message.sender_id <= message.receiver_id {
                    (message.sender_id.clone(), message.receiver_id.clone())
                } else {
                    (message.receiver_id.clone(), message.sender_id.clone())
                };
                let link = message
                    .group_id
                    .is_none()
                    .then_some((pair.0.as_str(), pair.1.as_str()));
                let entry = self.conversation(&mut state, &conversation, link)?;
                let seq = entry.last_seq + 1;
                let change = entry.last_change + 1;
                let record = MessageRecord::new_at(message, seq, change);
                let mut writes = Vec::with_capacity(6);
                writes.push(Write::Put(
                    message_key(&conversation, seq),
                    encode_versioned(&record)?,
                ));
                writes.push(Write::Put(
                    key(MESSAGE_ID, &record.id),
                    encode(&MessageRef {
                        conversation: conversation.clone(),
                        seq,
                    })?,
                ));
                writes.push(Write::Put(change_key(&conversation, change), encode(&seq)?));
                for url in record.file_refs() {
                    writes.push(Write::Put(file_ref_key(&url, &record.id), Vec::new()));
                }
                if self.search_index {
                    writes.extend(search::tree_writes(crate::store::search::entries_of(
                        &record,
                    )));
                }
                let newly_linked = !entry.linked;
                if let (true, Some((first, second))) = (newly_linked, link) {
                    writes.push(Write::Put(pair_key(PARTNER, first, second), Vec::new()));
                    writes.push(Write::Put(pair_key(PARTNER, second, first), Vec::new()));
                }
                // Every fallible step is done: now memory may change.
                entry.last_seq = seq;
                entry.last_change = change;
                entry.linked = true;
                state.message_count += 1;
                let count = state.message_count;
                let token = state.token();
                let settled = Settled::Message {
                    id: record.id.clone(),
                    token,
                    conversation,
                };
                let (durable, outcome) = self.submit(writes, count, Some(settled));
                state.pending_messages.insert(
                    record.id.clone(),
                    PendingMessage {
                        record: record.clone(),
                        outcome,
                        token,
                    },
                );
                Ok((durable, record))
            }
        };
        match decided {
            Ok((durable, record)) => {
                wait(durable).await?;
                Ok((record, true))
            }
            Err(Existing::Stored(record)) => Ok((record, false)),
            // A retry racing the original save: answer once the original is durable.
            Err(Existing::Pending(record, outcome)) => {
                outcome.await?;
                Ok((record, false))
            }
        }
    }

    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.read_message(id)
    }

    async fn history(
        &self,
        a: &str,
        b: &str,
        page_wanted: HistoryPage,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        if !key_safe(a) || !key_safe(b) {
            return Ok(Vec::new());
        }
        self.conversation_page(&conversation_id(a, b), page_wanted)
    }

    async fn group_history(
        &self,
        group_id: &str,
        page_wanted: HistoryPage,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        if !key_safe(group_id) {
            return Ok(Vec::new());
        }
        self.conversation_page(group_id, page_wanted)
    }

    async fn change_message(
        &self,
        id: &str,
        change: MessageChange,
        now: Millis,
    ) -> Result<ChangeOutcome, StoreError> {
        self.write_change(id, change, now).await
    }

    async fn search_messages(
        &self,
        query: &crate::store::search::SearchQuery,
    ) -> Result<crate::store::search::SearchPage, StoreError> {
        self.read_search(query)
    }

    async fn file_referenced(&self, url: &str) -> Result<bool, StoreError> {
        self.read_file_referenced(url)
    }

    async fn mark_read(&self, reader: &str, other: &str, seq: u64) -> Result<u64, StoreError> {
        check_id(reader)?;
        check_id(other)?;
        let conversation = conversation_id(reader, other);
        let mark_key = pair_key(READ_MARK, &conversation, reader);
        let (durable, mark) = {
            let mut state = self.lock();
            let (first, second) = if reader <= other {
                (reader, other)
            } else {
                (other, reader)
            };
            let last_seq = self
                .conversation(&mut state, &conversation, Some((first, second)))?
                .last_seq;
            let current = self.mark(&state, &mark_key)?.unwrap_or(0);
            let wanted = seq.min(last_seq);
            if wanted <= current {
                return Ok(current);
            }
            let writes = vec![Write::Put(mark_key.clone(), encode(&wanted)?)];
            state.marks.insert(mark_key.clone(), wanted);
            let settled = Settled::Mark {
                key: mark_key,
                value: wanted,
            };
            let (durable, _) = self.submit(writes, 0, Some(settled));
            (durable, wanted)
        };
        wait(durable).await?;
        Ok(mark)
    }

    async fn conversations(&self, user: &str) -> Result<Vec<ConversationSummary>, StoreError> {
        if !key_safe(user) {
            return Ok(Vec::new());
        }
        let mut prefix = key(PARTNER, user);
        prefix.push(0);
        let mut summaries = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (stored_key, _) = item?;
            let other_id = stored_key
                .get(prefix.len()..)
                .and_then(|tail| std::str::from_utf8(tail).ok())
                .ok_or_else(|| StoreError::Codec("bad conversation key".to_owned()))?
                .to_owned();
            let conversation = conversation_id(user, &other_id);
            let last_message = self.last_message(&conversation)?;
            let last_seq = last_message.as_ref().map_or(0, |message| message.seq);
            let mark = self
                .read_u64(&pair_key(READ_MARK, &conversation, user))?
                .unwrap_or(0);
            let mut unread = 0;
            if mark < last_seq {
                // Only the messages after the read mark: unread counts stay cheap in long
                // conversations that are read.
                let unread_range = self.tree.range(
                    message_key(&conversation, mark + 1)..=message_key(&conversation, last_seq),
                );
                for item in unread_range {
                    let (_, value) = item?;
                    let message: MessageRecord = decode_versioned(&value)?;
                    if message.sender_id == other_id && message.sender_id != user {
                        unread += 1;
                    }
                }
            }
            let read_by_other = self
                .read_u64(&pair_key(READ_MARK, &conversation, &other_id))?
                .unwrap_or(0);
            summaries.push(ConversationSummary {
                other_id,
                last_message,
                unread,
                read_by_other,
            });
        }
        // Most recent conversation first, as a sidebar lists them.
        summaries.sort_by(|a, b| {
            let a_time = a.last_message.as_ref().map(|m| m.created_at);
            let b_time = b.last_message.as_ref().map(|m| m.created_at);
            b_time
                .cmp(&a_time)
                .then_with(|| a.other_id.cmp(&b.other_id))
        });
        Ok(summaries)
    }

    async fn claim_email_slot(
        &self,
        user: &str,
        other: &str,
        now: Millis,
        window_ms: u64,
    ) -> Result<bool, StoreError> {
        check_id(user)?;
        check_id(other)?;
        let conversation = conversation_id(user, other);
        let claim_key = pair_key(EMAIL_CLAIM, &conversation, user);
        let durable = {
            let mut state = self.lock();
            if let Some(last) = self.mark(&state, &claim_key)? {
                if now.saturating_sub(last) < window_ms {
                    return Ok(false);
                }
            }
            let writes = vec![Write::Put(claim_key.clone(), encode(&now)?)];
            state.marks.insert(claim_key.clone(), now);
            let settled = Settled::Mark {
                key: claim_key,
                value: now,
            };
            self.submit(writes, 0, Some(settled)).0
        };
        wait(durable).await?;
        Ok(true)
    }

    async fn message_count(&self) -> Result<u64, StoreError> {
        Ok(self.state.lock().message_count)
    }

    async fn account_state(&self, user: &str) -> Result<AccountState, StoreError> {
        self.read_account_state(user).await
    }

    async fn update_account_state(
        &self,
        user: &str,
        change: AccountChange,
    ) -> Result<AccountState, StoreError> {
        self.change_account_state(user, change).await
    }

    async fn put_token(
        &self,
        hash: &str,
        token: OneTimeToken,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.store_token(hash, token, now).await
    }

    async fn take_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: Millis,
    ) -> Result<Option<OneTimeToken>, StoreError> {
        self.consume_token(hash, purpose, now).await
    }

    async fn set_blocked(
        &self,
        blocker: &str,
        blocked: &str,
        is_blocked: bool,
    ) -> Result<bool, StoreError> {
        self.write_block(blocker, blocked, is_blocked).await
    }

    async fn is_blocked(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        self.read_block(blocker, blocked)
    }

    async fn blocked_users(&self, blocker: &str) -> Result<Vec<String>, StoreError> {
        self.block_list(accounts::BlockSide::Blocked, blocker)
    }

    async fn blockers_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.block_list(accounts::BlockSide::Blockers, user)
    }

    async fn put_session(
        &self,
        id: &str,
        session: SessionRecord,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.write_session(id, session, now).await
    }

    async fn touch_session(&self, id: &str, last_seen_at: Millis) -> Result<bool, StoreError> {
        self.write_last_seen(id, last_seen_at).await
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.read_session(id)
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        self.read_sessions_of(user)
    }

    async fn delete_sessions(&self, user: &str, ids: &[String]) -> Result<usize, StoreError> {
        self.remove_sessions(user, ids).await
    }

    async fn set_disabled(&self, user: &str, at: Option<Millis>) -> Result<(), StoreError> {
        self.write_disabled(user, at).await
    }

    async fn disabled_at(&self, user: &str) -> Result<Option<Millis>, StoreError> {
        self.read_disabled(user)
    }

    async fn delete_user(&self, user: &str) -> Result<Option<u64>, StoreError> {
        self.remove_user(user).await
    }

    async fn create_group(
        &self,
        group: GroupRecord,
        system_message: Option<NewMessage>,
    ) -> Result<bool, StoreError> {
        self.write_new_group(group, system_message).await
    }

    async fn group(&self, id: &str) -> Result<Option<Arc<GroupRecord>>, StoreError> {
        self.read_group_async(id).await
    }

    async fn update_group(&self, update: GroupUpdate) -> Result<GroupUpdated, StoreError> {
        self.change_group(update).await
    }

    async fn groups_of(&self, user: &str) -> Result<Vec<GroupSummary>, StoreError> {
        self.read_groups_of(user).await
    }

    async fn search_groups(
        &self,
        query: &str,
        viewer: &str,
        limit: usize,
    ) -> Result<Vec<Arc<GroupRecord>>, StoreError> {
        self.find_groups(query, viewer, limit).await
    }

    async fn mark_group_read(
        &self,
        group: &str,
        reader: &str,
        seq: u64,
    ) -> Result<u64, StoreError> {
        self.write_group_mark(group, reader, seq).await
    }
}

impl Drop for SledChatStore {
    fn drop(&mut self) {
        self.committer.close();
    }
}

#[cfg(test)]
mod tests;
