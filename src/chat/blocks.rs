//! Blocking: a user can stop another from messaging them and from seeing them online.
//!
//! A block is one-way in what it hides (the blocked user no longer sees the blocker online) and
//! two-way in what it stops: neither can send the other a message or typing events while it
//! lasts, so a blocker cannot keep talking to someone who cannot answer. History already
//! exchanged stays readable to both.

use super::error::ChatError;
use super::{ids, Chat};
use crate::store::chat::UserRecord;

impl Chat {
    /// `user` blocks `other_id`. Idempotent.
    pub async fn block(&self, user: &UserRecord, other_id: &str) -> Result<(), ChatError> {
        self.check_other(user, other_id).await?;
        if self.store.set_blocked(&user.id, other_id, true).await? {
            tracing::info!(user = %user.id, blocked = %other_id, "user blocked");
        }
        self.load_presence_rules(other_id).await
    }

    /// `user` no longer blocks `other_id`. Idempotent.
    pub async fn unblock(&self, user: &UserRecord, other_id: &str) -> Result<(), ChatError> {
        self.check_other(user, other_id).await?;
        if self.store.set_blocked(&user.id, other_id, false).await? {
            tracing::info!(user = %user.id, unblocked = %other_id, "user unblocked");
        }
        self.load_presence_rules(other_id).await
    }

    /// The users `user` blocks.
    pub async fn blocked_users(&self, user: &UserRecord) -> Result<Vec<UserRecord>, ChatError> {
        let mut users = Vec::new();
        for id in self.store.blocked_users(&user.id).await? {
            if let Some(blocked) = self.store.user_by_id(&id).await? {
                users.push(blocked);
            }
        }
        Ok(users)
    }

    /// Tells the real-time layer whom `viewer` may not see online (the users blocking them).
    /// Called when a socket of theirs connects and whenever a block of them changes.
    pub async fn load_presence_rules(&self, viewer: &str) -> Result<(), ChatError> {
        let blockers = self.store.blockers_of(viewer).await?;
        self.delivery.hide_presence(viewer, blockers);
        Ok(())
    }

    /// Why `sender` may not message `receiver`, if a block stands between them.
    pub(super) async fn block_between(
        &self,
        sender: &str,
        receiver: &str,
    ) -> Result<Option<ChatError>, ChatError> {
        if self.store.is_blocked(receiver, sender).await? {
            return Ok(Some(ChatError::Refused(
                "This user does not accept your messages".to_owned(),
            )));
        }
        if self.store.is_blocked(sender, receiver).await? {
            return Ok(Some(ChatError::Refused(
                "You blocked this user: unblock them to send a message".to_owned(),
            )));
        }
        Ok(None)
    }

    async fn check_other(&self, user: &UserRecord, other_id: &str) -> Result<(), ChatError> {
        if other_id == user.id {
            return Err(ChatError::Invalid("You cannot block yourself".to_owned()));
        }
        if !ids::is_id(other_id) || self.store.user_by_id(other_id).await?.is_none() {
            return Err(ChatError::NotFound("User not found".to_owned()));
        }
        Ok(())
    }
}
