//! The chat domain's storage seam: users, conversations and messages.
//!
//! Records here are storage records (encoded with `store::codec`), not wire types: `http/` maps
//! them to the MERN-compatible JSON. A conversation is the unordered pair of its two users; its
//! messages are numbered by a per-conversation sequence that never repeats and never reorders.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::accounts::{AccountState, OneTimeToken, SessionRecord, TokenPurpose};
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

/// A message to save; `id` is the `messageId` assigned when the send was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: String,
    pub sender_id: String,
    pub receiver_id: String,
    pub text: String,
    /// URL of the stored image, or empty.
    pub image: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: String,
    pub sender_id: String,
    pub receiver_id: String,
    pub text: String,
    pub image: String,
    /// Position in the conversation, from 1.
    pub seq: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
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

    /// Saves a message, assigning the next `seq` of its conversation, unless a message with this
    /// id exists: then the stored one is returned with `false`. Idempotent, atomic, durable.
    async fn save_message(&self, message: NewMessage) -> Result<(MessageRecord, bool), StoreError>;

    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError>;

    /// Messages between `a` and `b` (either direction), oldest first.
    async fn history(
        &self,
        a: &str,
        b: &str,
        page: HistoryPage,
    ) -> Result<Vec<MessageRecord>, StoreError>;

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
