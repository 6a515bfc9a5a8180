//! Profile changes beyond the picture: the display name.

use super::error::ChatError;
use super::Chat;
use crate::store::chat::{UserChange, UserRecord};

impl Chat {
    /// Sets `user_id`'s display name (cleaned and checked by `names::check` first). Other people
    /// see it on their next sidebar load; the change is logged with both names.
    pub async fn rename(&self, user_id: &str, name: String) -> Result<UserRecord, ChatError> {
        let before = self
            .store
            .user_by_id(user_id)
            .await?
            .ok_or(ChatError::Unauthorized)?;
        if before.full_name == name {
            return Ok(before);
        }
        let updated = self
            .store
            .update_user(user_id, UserChange::FullName(name), self.clock.now())
            .await?
            .ok_or(ChatError::Unauthorized)?;
        tracing::info!(user = %user_id, from = %before.full_name, to = %updated.full_name, "display name changed");
        Ok(updated)
    }
}
