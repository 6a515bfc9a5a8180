//! The chat domain's storage seam: users, conversations and messages.
//!
//! Records here are storage records (encoded with `store::codec`), not wire types: `http/` maps
//! them to the MERN-compatible JSON. A direct conversation is the unordered pair of its two users
//! (key `a:b`), a group conversation is keyed by the group id; its messages are numbered by a
//! per-conversation sequence that never repeats and never reorders, and every save or change of
//! one of them takes the conversation's next *change stamp* (for catch-up of edits).

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::accounts::{AccountState, OneTimeToken, SessionRecord, TokenPurpose};
use super::chat_groups::{GroupRecord, GroupSummary, GroupUpdate, GroupUpdated};
use super::search::{SearchPage, SearchQuery};
use super::StoreError;
use crate::store::job::Millis;

/// A stored account. `email` is normalised (trimmed, lowercased) by the domain before it gets here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub full_name: String,
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// URL of the profile picture, or empty.
    pub profile_pic: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A file attached to a message (served by the files API, content addressed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `/api/files/<sha256 hex>` (optionally `/<filename>` after it).
    pub url: String,
    pub name: String,
    pub size: u64,
    /// The sender's coarse kind (`image`, `document`, ...), as the MERN app sends it.
    pub file_type: String,
    pub mime_type: String,
}

/// A previous text of an edited message: what it said until `edited_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    pub text: String,
    pub edited_at: Millis,
}

/// One reaction on a message and who gave it, in the order they did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub users: Vec<String>,
}

/// A message to save; `id` is the `messageId` assigned when the send was accepted.
///
/// A direct message names its `receiver_id`; a group message names its `group_id` and leaves
/// `receiver_id` empty, and is stored in the conversation whose key is the group id itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMessage {
    pub id: String,
    pub sender_id: String,
    pub receiver_id: String,
    pub text: String,
    /// URL of the stored image, or empty.
    pub image: String,
    pub created_at: Millis,
    pub group_id: Option<String>,
    /// A message id of the same conversation (checked by the domain).
    pub reply_to: Option<String>,
    pub attachment: Option<Attachment>,
    /// A message the server wrote (a membership change in a group).
    pub system: bool,
}

/// A stored message (format 2; format 1 is [`v1::MessageRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: String,
    pub sender_id: String,
    /// Empty for a group message.
    pub receiver_id: String,
    pub text: String,
    pub image: String,
    /// Position in the conversation, from 1.
    pub seq: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub group_id: Option<String>,
    pub reply_to: Option<String>,
    pub attachment: Option<Attachment>,
    /// The texts the message had before each edit, oldest first.
    pub edit_history: Vec<Edit>,
    pub edited_at: Option<Millis>,
    pub deleted_at: Option<Millis>,
    pub reactions: Vec<Reaction>,
    pub system: bool,
    /// The conversation's change stamp of this message's save or last change: every save and
    /// every change in a conversation takes the next stamp (from 1), so "what changed after
    /// stamp S" is one index range ([`HistoryPage::ChangedAfter`]). 0 for a message stored in
    /// format 1 and not changed since.
    pub change: u64,
}

impl MessageRecord {
    /// The key of the conversation the message is in: the group id, or the two user ids.
    pub fn conversation_key(&self) -> String {
        match &self.group_id {
            Some(group) => group.clone(),
            None => direct_conversation_key(&self.sender_id, &self.receiver_id),
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// The stored files this message refers to, by their canonical URL: the image URL, and the
    /// attachment URL without the file name that may follow its hash (`/api/files/<hex>`), so
    /// two names of one file are one reference.
    pub fn file_refs(&self) -> Vec<String> {
        let mut refs = Vec::new();
        if !self.image.is_empty() {
            refs.push(self.image.clone());
        }
        if let Some(attachment) = &self.attachment {
            let url = canonical_file_url(&attachment.url);
            if !url.is_empty() && !refs.iter().any(|known| *known == url) {
                refs.push(url.to_owned());
            }
        }
        refs
    }

    /// The record a save of `message` stores at `seq` with change stamp `change`.
    pub fn new_at(message: NewMessage, seq: u64, change: u64) -> MessageRecord {
        MessageRecord {
            id: message.id,
            sender_id: message.sender_id,
            receiver_id: if message.group_id.is_some() {
                String::new()
            } else {
                message.receiver_id
            },
            text: message.text,
            image: message.image,
            seq,
            created_at: message.created_at,
            updated_at: message.created_at,
            group_id: message.group_id,
            reply_to: message.reply_to,
            attachment: message.attachment,
            edit_history: Vec::new(),
            edited_at: None,
            deleted_at: None,
            reactions: Vec::new(),
            system: message.system,
            change,
        }
    }
}

/// Prefix of the files API's URLs (`/api/files/<sha256 hex>[/<name>]`).
pub const FILES_URL_PREFIX: &str = "/api/files/";

/// `url` without the file name after a files-API hash; any other URL as it is.
pub fn canonical_file_url(url: &str) -> &str {
    match url.strip_prefix(FILES_URL_PREFIX) {
        Some(rest) if rest.len() > 64 && rest.as_bytes()[64] == b'/' => {
            &url[..FILES_URL_PREFIX.len() + 64]
        }
        _ => url,
    }
}

/// The conversation key of two users: their ids sorted and joined with `:` (user and group ids
/// never contain `:`, so a direct key never equals a group id).
pub fn direct_conversation_key(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}:{b}")
    } else {
        format!("{b}:{a}")
    }
}

/// Frozen format-1 shapes of the chat records whose layout changed since.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    use crate::store::job::Millis;

    /// A message as format 1 stored it (before groups, edits, deletes, reactions, replies and
    /// attachments).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct MessageRecord {
        pub id: String,
        pub sender_id: String,
        pub receiver_id: String,
        pub text: String,
        pub image: String,
        pub seq: u64,
        pub created_at: Millis,
        pub updated_at: Millis,
    }

    impl From<MessageRecord> for super::MessageRecord {
        fn from(old: MessageRecord) -> super::MessageRecord {
            super::MessageRecord {
                id: old.id,
                sender_id: old.sender_id,
                receiver_id: old.receiver_id,
                text: old.text,
                image: old.image,
                seq: old.seq,
                created_at: old.created_at,
                updated_at: old.updated_at,
                group_id: None,
                reply_to: None,
                attachment: None,
                edit_history: Vec::new(),
                edited_at: None,
                deleted_at: None,
                reactions: Vec::new(),
                system: false,
                change: 0,
            }
        }
    }
}

/// A change to a stored message, decided against its latest stored value (atomically with other
/// changes to it) by [`MessageChange::apply`], the same rule on every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageChange {
    /// `by` replaces the text, keeping the old one in `edit_history`. Sender only, within
    /// `window_ms` of the send, never after a delete.
    Edit {
        by: String,
        text: String,
        window_ms: u64,
    },
    /// `by` deletes the message: a soft delete that clears its text, image, attachment, edit
    /// history and reactions. Sender only; deleting again changes nothing.
    Delete { by: String },
    /// `user` adds (or takes back) a reaction. At most `max_reactions` different reactions per
    /// message; none on a deleted message.
    React {
        user: String,
        reaction: String,
        add: bool,
        max_reactions: usize,
    },
}

/// Why [`MessageChange::apply`] refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeRefused {
    NotSender,
    Deleted,
    EditWindowOver,
    TooManyReactions,
}

impl MessageChange {
    /// Applies the change to `message` at `now`: `Ok(true)` if it changed, `Ok(false)` if there
    /// was nothing to change (the same text, a repeated delete or reaction). Does not touch
    /// `change` (the store stamps a changed record).
    pub fn apply(&self, message: &mut MessageRecord, now: Millis) -> Result<bool, ChangeRefused> {
        match self {
            MessageChange::Edit {
                by,
                text,
                window_ms,
            } => {
                if message.sender_id != *by {
                    return Err(ChangeRefused::NotSender);
                }
                if message.is_deleted() {
                    return Err(ChangeRefused::Deleted);
                }
                if now.saturating_sub(message.created_at) > *window_ms {
                    return Err(ChangeRefused::EditWindowOver);
                }
                if message.text == *text {
                    return Ok(false);
                }
                let old = std::mem::replace(&mut message.text, text.clone());
                message.edit_history.push(Edit {
                    text: old,
                    edited_at: now,
                });
                message.edited_at = Some(now);
                message.updated_at = now;
                Ok(true)
            }
            MessageChange::Delete { by } => {
                if message.sender_id != *by {
                    return Err(ChangeRefused::NotSender);
                }
                if message.is_deleted() {
                    return Ok(false);
                }
                message.deleted_at = Some(now);
                message.text.clear();
                message.image.clear();
                message.attachment = None;
                message.edit_history.clear();
                message.reactions.clear();
                message.updated_at = now;
                Ok(true)
            }
            MessageChange::React {
                user,
                reaction,
                add,
                max_reactions,
            } => {
                if message.is_deleted() {
                    return Err(ChangeRefused::Deleted);
                }
                let found = message
                    .reactions
                    .iter()
                    .position(|existing| existing.emoji == *reaction);
                let changed = match (found, *add) {
                    (Some(index), true) => {
                        let users = &mut message.reactions[index].users;
                        if users.contains(user) {
                            false
                        } else {
                            users.push(user.clone());
                            true
                        }
                    }
                    (None, true) => {
                        if message.reactions.len() >= *max_reactions {
                            return Err(ChangeRefused::TooManyReactions);
                        }
                        message.reactions.push(Reaction {
                            emoji: reaction.clone(),
                            users: vec![user.clone()],
                        });
                        true
                    }
                    (Some(index), false) => {
                        let users = &mut message.reactions[index].users;
                        let before = users.len();
                        users.retain(|existing| existing != user);
                        let changed = users.len() != before;
                        if users.is_empty() {
                            message.reactions.remove(index);
                        }
                        changed
                    }
                    (None, false) => false,
                };
                if changed {
                    message.updated_at = now;
                }
                Ok(changed)
            }
        }
    }
}

/// Outcome of [`ChatStore::change_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    NotFound,
    /// The rule refused; the stored message, unchanged.
    Refused(ChangeRefused, MessageRecord),
    /// Nothing to change; the stored message.
    Unchanged(MessageRecord),
    /// Stored (durably) with a new change stamp. `released` are the file URLs the message
    /// referred to that no stored message refers to any more (the caller may remove the files).
    Changed {
        message: MessageRecord,
        released: Vec<String>,
    },
}

/// Which slice of a conversation's history to read. Results are always oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPage {
    /// The newest `limit` messages.
    Latest { limit: usize },
    /// The `limit` messages just before `seq` (scrolling up).
    Before { seq: u64, limit: usize },
    /// The first `limit` messages after `seq` (catch-up after a reconnect).
    After { seq: u64, limit: usize },
    /// The first `limit` messages saved or changed (edited, deleted, reacted to) after change
    /// stamp `change`, in stamp order (not seq order): catch-up of edits, deletes and reactions.
    ChangedAfter { change: u64, limit: usize },
}

/// One conversation as the sidebar of `user` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    pub other_id: String,
    pub last_message: Option<MessageRecord>,
    /// Messages from the other user with a `seq` above what `user` has read.
    pub unread: u64,
    /// How far the other user has read this conversation (their read mark).
    pub read_by_other: u64,
}

/// Outcome of [`ChatStore::create_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateUser {
    Created,
    EmailTaken,
}

#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    /// Creates a user unless the email is taken (checked atomically with the insert). Durable.
    async fn create_user(&self, user: UserRecord) -> Result<CreateUser, StoreError>;

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Changes a user record (from its latest value, so concurrent changes all land) and sets
    /// `updated_at`; returns the updated user, or `None` when there is no such user. Durable.
    async fn update_user(
        &self,
        id: &str,
        change: UserChange,
        now: Millis,
    ) -> Result<Option<UserRecord>, StoreError>;

    /// Sets a user's profile picture URL; returns the updated user. Durable.
    async fn set_profile_pic(
        &self,
        id: &str,
        profile_pic: String,
        now: Millis,
    ) -> Result<Option<UserRecord>, StoreError> {
        self.update_user(id, UserChange::ProfilePic(profile_pic), now)
            .await
    }

    /// Every user, oldest account first.
    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;

    /// Saves a message, assigning the next `seq` and change stamp of its conversation (the
    /// group's for a message with `group_id`, which must be key safe like a user id), unless a
    /// message with this id exists: then the stored one is returned with `false`. Records the
    /// files it refers to. Idempotent, atomic, durable.
    async fn save_message(&self, message: NewMessage) -> Result<(MessageRecord, bool), StoreError>;

    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError>;

    /// Messages between `a` and `b` (either direction), oldest first.
    async fn history(
        &self,
        a: &str,
        b: &str,
        page: HistoryPage,
    ) -> Result<Vec<MessageRecord>, StoreError>;

    /// Messages of group `group_id` (saved with that `group_id`), oldest first.
    async fn group_history(
        &self,
        group_id: &str,
        page: HistoryPage,
    ) -> Result<Vec<MessageRecord>, StoreError>;

    /// Changes message `id` with `change` (decided by [`MessageChange::apply`] on its latest
    /// value, atomically with other changes), gives it the conversation's next change stamp and
    /// keeps the change index and the file references in the same atomic write. Durable.
    async fn change_message(
        &self,
        id: &str,
        change: MessageChange,
        now: Millis,
    ) -> Result<ChangeOutcome, StoreError>;

    /// Messages matching `query` in the conversations it names, newest first (see
    /// `store::search`): one page, and how many match in all.
    async fn search_messages(&self, query: &SearchQuery) -> Result<SearchPage, StoreError>;

    /// Whether any stored message refers to the file at `url` (its image or attachment).
    async fn file_referenced(&self, url: &str) -> Result<bool, StoreError>;

    /// Records that `reader` has read the conversation with `other` up to `seq` (never moves
    /// backwards; clamped to the conversation's last seq). Returns the read mark now stored.
    async fn mark_read(&self, reader: &str, other: &str, seq: u64) -> Result<u64, StoreError>;

    /// The conversations `user` takes part in, with last message and unread count.
    async fn conversations(&self, user: &str) -> Result<Vec<ConversationSummary>, StoreError>;

    /// Claims the right to e-mail `user` about the conversation with `other`: true (and records
    /// `now`) when no claim was made in the last `window_ms`. Durable.
    async fn claim_email_slot(
        &self,
        user: &str,
        other: &str,
        now: Millis,
        window_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Number of stored messages (for metrics and start-up logs).
    async fn message_count(&self) -> Result<u64, StoreError>;

    /// What `user` has verified and chosen; the default when nothing was stored.
    async fn account_state(&self, user: &str) -> Result<AccountState, StoreError>;

    /// Changes `user`'s account state with `change` (applied to the latest state, atomically
    /// with respect to other changes) and returns the new state. Durable.
    async fn update_account_state(
        &self,
        user: &str,
        change: AccountChange,
    ) -> Result<AccountState, StoreError>;

    /// Stores a single-use token under `hash` (the SHA-256 of its secret, hex), and removes
    /// some of the tokens that expired before `now`. Durable.
    async fn put_token(
        &self,
        hash: &str,
        token: OneTimeToken,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Consumes the token stored under `hash`: returns it, once, if it is for `purpose` and not
    /// expired at `now`. A token of another purpose is left alone; an expired one is removed.
    /// Durable (a consumed token never comes back after a crash).
    async fn take_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: Millis,
    ) -> Result<Option<OneTimeToken>, StoreError>;

    /// Records that `blocker` blocks `blocked` (or no longer does). Returns whether anything
    /// changed. Durable.
    async fn set_blocked(
        &self,
        blocker: &str,
        blocked: &str,
        is_blocked: bool,
    ) -> Result<bool, StoreError>;

    /// Whether `blocker` blocks `blocked`.
    async fn is_blocked(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError>;

    /// The users `blocker` blocks, in id order.
    async fn blocked_users(&self, blocker: &str) -> Result<Vec<String>, StoreError>;

    /// The users who block `user`, in id order.
    async fn blockers_of(&self, user: &str) -> Result<Vec<String>, StoreError>;

    /// Stores (or overwrites) session `id`, and removes the same user's sessions that expired
    /// before `now`. Durable.
    async fn put_session(
        &self,
        id: &str,
        session: SessionRecord,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Records that session `id` was used at `last_seen_at`, if it still exists (a session
    /// deleted meanwhile stays deleted). Returns whether it exists.
    async fn touch_session(&self, id: &str, last_seen_at: Millis) -> Result<bool, StoreError>;

    /// Session `id`, if it exists (expired ones included: the caller checks).
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// `user`'s sessions, in id order.
    async fn sessions_of(&self, user: &str) -> Result<Vec<(String, SessionRecord)>, StoreError>;

    /// Marks `user` disabled since `at`, or enabled again with `None`. Durable.
    async fn set_disabled(&self, user: &str, at: Option<Millis>) -> Result<(), StoreError>;

    /// When `user` was disabled, if they are.
    async fn disabled_at(&self, user: &str) -> Result<Option<Millis>, StoreError>;

    /// Deletes `user` and everything that is theirs, in one atomic, durable write: the user
    /// record and e-mail index, every conversation they are part of (both sides' messages, read
    /// marks, e-mail claims), account state, sessions, blocks either way, the disabled mark.
    /// Later writes naming the user fail with [`StoreError::Deleted`]. Returns how many
    /// messages were deleted, or `None` when there is no such user. (`message_count` keeps
    /// counting messages ever stored.)
    async fn delete_user(&self, user: &str) -> Result<Option<u64>, StoreError>;

    /// Deletes those of `ids` that are sessions of `user`, in one atomic write; returns how many
    /// were deleted. Durable: a revoked session never comes back after a crash.
    async fn delete_sessions(&self, user: &str, ids: &[String]) -> Result<usize, StoreError>;

    // Groups (types and rules in `store::chat_groups`). A group's messages are in the
    // conversation keyed by its id; membership is checked by the domain, never by these reads.

    /// Creates `group` (its `admin` among its `members`) with its first system message, in one
    /// atomic, durable write; `false` (nothing written) when the id is taken.
    async fn create_group(
        &self,
        group: GroupRecord,
        system_message: Option<NewMessage>,
    ) -> Result<bool, StoreError>;

    /// The group as last made durable. Cheap: backends keep recent groups in memory (fan-out
    /// reads the members of every message's group).
    async fn group(&self, id: &str) -> Result<Option<Arc<GroupRecord>>, StoreError>;

    /// Applies one change to the latest record, with its system message, in one atomic, durable
    /// write (see [`GroupUpdate`]); a refusal writes nothing.
    async fn update_group(&self, update: GroupUpdate) -> Result<GroupUpdated, StoreError>;

    /// The groups `user` is a member of, latest activity first, with last message and unread
    /// count (messages of others above `user`'s read mark of the group).
    async fn groups_of(&self, user: &str) -> Result<Vec<GroupSummary>, StoreError>;

    /// Up to `limit` groups `viewer` is not a member of whose folded name
    /// ([`fold_name`](super::chat_groups::fold_name)) contains the folded `query`, by name.
    async fn search_groups(
        &self,
        query: &str,
        viewer: &str,
        limit: usize,
    ) -> Result<Vec<Arc<GroupRecord>>, StoreError>;

    /// Records that `reader` has read group `group` up to `seq` (never backwards; clamped to the
    /// group's last seq). Returns the read mark now stored. Durable.
    async fn mark_group_read(&self, group: &str, reader: &str, seq: u64)
        -> Result<u64, StoreError>;
}

/// One change to a [`UserRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    ProfilePic(String),
    /// A display name, already cleaned by the domain.
    FullName(String),
    /// An argon2id PHC string.
    PasswordHash(String),
}

impl UserChange {
    pub fn apply(&self, user: &mut UserRecord) {
        match self {
            UserChange::ProfilePic(url) => user.profile_pic = url.clone(),
            UserChange::FullName(name) => user.full_name = name.clone(),
            UserChange::PasswordHash(hash) => user.password_hash = hash.clone(),
        }
    }
}

/// One change to an [`AccountState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChange {
    /// `email` was verified at the given time.
    EmailVerified(String, Millis),
    /// Notification e-mails wanted or not.
    EmailNotifications(bool),
}

impl AccountChange {
    pub fn apply(&self, state: &mut AccountState) {
        match self {
            AccountChange::EmailVerified(email, at) => {
                state.verified_email = Some((email.clone(), *at));
            }
            AccountChange::EmailNotifications(wanted) => state.email_notifications = *wanted,
        }
    }
}
