//! The life of a sent message: edits, deletes, reactions, replies and attachments, for direct
//! and group messages alike.
//!
//! Who may do what: only someone who can see a message ([`Chat::can_see`]: the two participants
//! of a direct message; for a group message its sender and the group's members) reads it, reacts
//! to it or gets its events; anyone else is told it does not exist. Only its sender edits (within
//! the edit window, never after a delete) or deletes it. The rules that must hold against
//! concurrent changes (sender, window, deleted, reaction bound) are decided by the store on the
//! latest value ([`MessageChange::apply`]); this module checks input and visibility first.
//!
//! Every change is pushed to every socket of everyone who can see the message, and takes the
//! conversation's next change stamp, so a client that was away catches up with
//! `HistoryPage::ChangedAfter` (`?updatedAfter=` on the history route).
//!
//! A delete is soft: the message keeps its place with `isDeleted`, its text, image, attachment,
//! edit history and reactions cleared. A stored image or file that no message refers to any more
//! is removed (images and files are content addressed, so two messages may share one).

use std::collections::HashMap;

use super::delivery::{ChatEvent, MessageView, ReplyPreview};
use super::error::ChatError;
use super::images;
use super::{names, Chat};
use crate::store::chat::{
    Attachment, ChangeOutcome, ChangeRefused, MessageChange, MessageRecord, Reaction, UserRecord,
    FILES_URL_PREFIX,
};

/// Most different reactions on one message.
pub const MAX_REACTIONS: usize = 20;
/// Longest reaction, in bytes (an emoji with modifiers, or a short token).
pub const MAX_REACTION_BYTES: usize = 32;
/// Longest attachment name, in characters.
pub const MAX_FILE_NAME_CHARS: usize = 255;
/// Longest `fileType` (the MERN app's coarse kind: `image`, `document`, ...).
pub const MAX_FILE_TYPE_CHARS: usize = 32;
/// Longest `mimeType`.
pub const MAX_MIME_TYPE_CHARS: usize = 127;
/// Largest `fileSize` accepted (2^53, the largest integer JSON clients read exactly).
pub const MAX_FILE_SIZE: u64 = 1 << 53;
/// Longest message id looked up (ids are 24 hex characters; anything far longer is not one).
const MAX_ID_LEN: usize = 128;

/// The attachment fields of a send (`fileUrl, fileName, fileSize, fileType, mimeType`).
#[derive(Debug, Clone, Default)]
pub struct AttachmentInput {
    pub url: Option<String>,
    pub name: Option<String>,
    pub size: Option<u64>,
    pub file_type: Option<String>,
    pub mime_type: Option<String>,
}

impl AttachmentInput {
    pub fn is_empty(&self) -> bool {
        self.url.is_none()
            && self.name.is_none()
            && self.size.is_none()
            && self.file_type.is_none()
            && self.mime_type.is_none()
    }
}

/// The reactions of a message, as [`Chat::reactions`] lists them.
pub type ReactionList = Vec<Reaction>;

fn not_found() -> ChatError {
    ChatError::NotFound("Message not found".to_owned())
}

impl Chat {
    /// Whether `user` may see `message`: a participant of its direct conversation; for a group
    /// message, its sender or a member of the group ([`Chat::group_member`]).
    pub async fn can_see(&self, user: &str, message: &MessageRecord) -> Result<bool, ChatError> {
        match &message.group_id {
            None => Ok(message.sender_id == user || message.receiver_id == user),
            Some(group) => Ok(message.sender_id == user || self.group_member(group, user).await?),
        }
    }

    /// **Groups hook**: whether `user` is a member of group `group_id` now (see
    /// `chat::groups`; a former member no longer sees the group's messages).
    pub async fn group_member(&self, group_id: &str, user: &str) -> Result<bool, ChatError> {
        self.is_group_member(user, group_id).await
    }

    /// **Groups hook**: the members of group `group_id` now, who receive the events of its
    /// messages (none once the group is gone).
    pub async fn group_members(&self, group_id: &str) -> Result<Vec<String>, ChatError> {
        self.current_members(group_id).await
    }

    /// Everyone whose sockets get the events about `message`, each once.
    pub async fn audience(&self, message: &MessageRecord) -> Result<Vec<String>, ChatError> {
        let mut users = match &message.group_id {
            None => vec![message.sender_id.clone(), message.receiver_id.clone()],
            Some(group) => {
                let mut members = self.group_members(group).await?;
                members.push(message.sender_id.clone());
                members
            }
        };
        users.sort();
        users.dedup();
        Ok(users)
    }

    /// Message `id` if `user` can see it; otherwise "not found", as if it did not exist.
    pub async fn visible_message(&self, user: &str, id: &str) -> Result<MessageRecord, ChatError> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(not_found());
        }
        match self.store.message(id).await? {
            Some(message) if self.can_see(user, &message).await? => Ok(message),
            _ => Err(not_found()),
        }
    }

    fn refusal(&self, refused: ChangeRefused, action: &str) -> ChatError {
        match refused {
            ChangeRefused::NotSender => {
                ChatError::Refused(format!("You can only {action} your own messages"))
            }
            ChangeRefused::Deleted => {
                ChatError::Invalid(format!("Cannot {action} a deleted message"))
            }
            ChangeRefused::EditWindowOver => ChatError::Refused(format!(
                "Messages can only be edited within {} minutes of sending",
                self.edit_window_ms / 60_000
            )),
            ChangeRefused::TooManyReactions => ChatError::Invalid(format!(
                "A message can have at most {MAX_REACTIONS} different reactions"
            )),
        }
    }

    /// Applies `change` to `id`; the record now stored, whether it changed, and the files no
    /// message refers to any more.
    async fn change(
        &self,
        id: &str,
        change: MessageChange,
        action: &str,
    ) -> Result<(MessageRecord, bool, Vec<String>), ChatError> {
        match self
            .store
            .change_message(id, change, self.clock.now())
            .await?
        {
            ChangeOutcome::NotFound => Err(not_found()),
            ChangeOutcome::Refused(refused, _) => Err(self.refusal(refused, action)),
            ChangeOutcome::Unchanged(message) => Ok((message, false, Vec::new())),
            ChangeOutcome::Changed { message, released } => Ok((message, true, released)),
        }
    }

    async fn tell(&self, message: &MessageRecord, event: ChatEvent) -> Result<(), ChatError> {
        let audience = self.audience(message).await?;
        let users: Vec<&str> = audience.iter().map(String::as_str).collect();
        self.delivery.deliver(&users, event);
        Ok(())
    }

    /// Edits `id`'s text (its sender, within the edit window, not after a delete) and tells
    /// everyone who can see it (`messageEdited`).
    pub async fn edit_message(
        &self,
        user: &UserRecord,
        id: &str,
        text: &str,
    ) -> Result<MessageView, ChatError> {
        let message = self.visible_message(&user.id, id).await?;
        if text.chars().count() > super::messages::MAX_TEXT_CHARS {
            return Err(ChatError::Invalid(format!(
                "Message text must be at most {} characters",
                super::messages::MAX_TEXT_CHARS
            )));
        }
        if text.trim().is_empty() && message.image.is_empty() && message.attachment.is_none() {
            return Err(ChatError::Invalid(
                "Message text cannot be empty".to_owned(),
            ));
        }
        let change = MessageChange::Edit {
            by: user.id.clone(),
            text: text.to_owned(),
            window_ms: self.edit_window_ms,
        };
        let (message, changed, _) = self.change(id, change, "edit").await?;
        if changed {
            self.tell(
                &message,
                ChatEvent::MessageEdited(Box::new(message.clone())),
            )
            .await?;
        }
        self.view(message).await
    }

    /// Deletes `id` (its sender only; deleting again changes nothing), removes the stored
    /// files no message refers to any more, and tells everyone who can see it
    /// (`messageDeleted`).
    pub async fn delete_message(
        &self,
        user: &UserRecord,
        id: &str,
    ) -> Result<MessageRecord, ChatError> {
        self.visible_message(&user.id, id).await?;
        let change = MessageChange::Delete {
            by: user.id.clone(),
        };
        let (message, changed, released) = self.change(id, change, "delete").await?;
        if changed {
            for url in &released {
                self.remove_stored_file(url).await;
            }
            self.tell(
                &message,
                ChatEvent::MessageDeleted(Box::new(message.clone())),
            )
            .await?;
        }
        Ok(message)
    }

    /// Adds (or takes back) `user`'s `reaction` on `id` and tells everyone who can see it
    /// (`message_reaction_update`); returns the message's reactions.
    pub async fn react(
        &self,
        user: &UserRecord,
        id: &str,
        reaction: &str,
        add: bool,
    ) -> Result<ReactionList, ChatError> {
        let reaction = check_reaction(reaction)?;
        self.visible_message(&user.id, id).await?;
        let change = MessageChange::React {
            user: user.id.clone(),
            reaction: reaction.clone(),
            add,
            max_reactions: MAX_REACTIONS,
        };
        let action = if add { "react to" } else { "change" };
        let (message, changed, _) = self.change(id, change, action).await?;
        if changed {
            let event = ChatEvent::ReactionUpdate {
                message: Box::new(message.clone()),
                reaction,
                user_id: user.id.clone(),
                is_add: add,
            };
            self.tell(&message, event).await?;
        }
        Ok(message.reactions)
    }

    /// The reactions on `id`, for someone who can see it.
    pub async fn reactions(&self, user: &UserRecord, id: &str) -> Result<ReactionList, ChatError> {
        Ok(self.visible_message(&user.id, id).await?.reactions)
    }

    /// Removes a stored image or file no message refers to any more (checked again now: a
    /// message saved since may use it), unless it is someone's profile picture. Failures are
    /// logged: the delete itself is done.
    async fn remove_stored_file(&self, url: &str) {
        let path = if let Some(hash) = url.strip_prefix("/uploads/") {
            if !images::is_image_hash(hash) {
                return;
            }
            self.uploads.path_of(hash)
        } else if let Some(hash) = url.strip_prefix(FILES_URL_PREFIX) {
            if !images::is_image_hash(hash) {
                return;
            }
            self.uploads.path_of("files").join(hash)
        } else {
            // Cloudinary and other hosts keep their own files.
            return;
        };
        // Taken before the store is checked: a send that holds the file from now on, or held
        // it and had its message saved meanwhile, keeps it.
        let ticket = self.staging.ticket(url);
        if self.staging.is_held(url) {
            return;
        }
        match self.store.file_referenced(url).await {
            Ok(false) => {}
            Ok(true) => return,
            Err(err) => {
                tracing::warn!(%url, error = %err, "kept a file: cannot check its references");
                return;
            }
        }
        // Profile pictures share the image store; a scan of the users, only when an image is
        // released (a delete of the last message showing it).
        match self.store.users().await {
            Ok(users) if users.iter().any(|user| user.profile_pic == url) => return,
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(%url, error = %err, "kept a file: cannot read the users");
                return;
            }
        }
        match self.staging.remove_unless_held(url, ticket, &path) {
            Ok(true) => tracing::debug!(%url, "removed a file no message refers to"),
            Ok(false) => {}
            Err(err) => tracing::warn!(%url, error = %err, "cannot remove an unused file"),
        }
    }

    /// Checks a send's `replyTo`: a message of the conversation keyed `conversation` that the
    /// sender can see.
    pub(super) async fn check_reply(
        &self,
        sender: &str,
        conversation: &str,
        reply_to: &str,
    ) -> Result<(), ChatError> {
        let invalid =
            || ChatError::Invalid("replyTo must be a message of this conversation".to_owned());
        let message = self
            .visible_message(sender, reply_to)
            .await
            .map_err(|err| match err {
                ChatError::NotFound(_) => invalid(),
                other => other,
            })?;
        if message.conversation_key() != conversation {
            return Err(invalid());
        }
        Ok(())
    }

    /// `message` with its reply preview.
    pub async fn view(&self, message: MessageRecord) -> Result<MessageView, ChatError> {
        self.views(vec![message])
            .await?
            .pop()
            .ok_or_else(|| ChatError::Internal("a view went missing".to_owned()))
    }

    /// `messages` with their reply previews (each original and sender read once).
    pub async fn views(&self, messages: Vec<MessageRecord>) -> Result<Vec<MessageView>, ChatError> {
        let mut originals: HashMap<String, Option<MessageRecord>> = HashMap::new();
        let mut senders: HashMap<String, String> = HashMap::new();
        let mut views = Vec::with_capacity(messages.len());
        for message in messages {
            let Some(reply_id) = message.reply_to.clone() else {
                views.push(MessageView::plain(message));
                continue;
            };
            if !originals.contains_key(&reply_id) {
                let original = self.store.message(&reply_id).await?;
                originals.insert(reply_id.clone(), original);
            }
            let original = originals.get(&reply_id).cloned().flatten();
            let reply = match original {
                // Only ever a message of the same conversation (checked at send; kept so).
                Some(original) if original.conversation_key() == message.conversation_key() => {
                    if !senders.contains_key(&original.sender_id) {
                        let name = self
                            .store
                            .user_by_id(&original.sender_id)
                            .await?
                            .map(|user| names::clean(&user.full_name))
                            .unwrap_or_default();
                        senders.insert(original.sender_id.clone(), name);
                    }
                    let sender_name = senders
                        .get(&original.sender_id)
                        .cloned()
                        .unwrap_or_default();
                    Some(ReplyPreview {
                        id: original.id.clone(),
                        deleted: original.is_deleted(),
                        text: original.text,
                        image: original.image,
                        sender_id: original.sender_id,
                        sender_name,
                    })
                }
                Some(_) => None,
                // Gone with its sender's account: shown as deleted.
                None => Some(ReplyPreview {
                    id: reply_id,
                    text: String::new(),
                    image: String::new(),
                    sender_id: String::new(),
                    sender_name: String::new(),
                    deleted: true,
                }),
            };
            views.push(MessageView { message, reply });
        }
        Ok(views)
    }
}

/// A reaction as stored: one emoji (with its modifiers, a flag, a keycap or a ZWJ sequence), or
/// a short token such as `+1` or `:party:` (ASCII letters, digits, `_+-:`), at most
/// [`MAX_REACTION_BYTES`] bytes.
pub fn check_reaction(reaction: &str) -> Result<String, ChatError> {
    let reaction = reaction.trim();
    let invalid = || {
        ChatError::Invalid(format!(
            "reaction must be one emoji or a short token (at most {MAX_REACTION_BYTES} bytes of A-Z, a-z, 0-9, _ + - :)"
        ))
    };
    if reaction.is_empty() || reaction.len() > MAX_REACTION_BYTES {
        return Err(invalid());
    }
    let token = reaction
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b':'));
    if token || is_one_emoji(reaction) {
        Ok(reaction.to_owned())
    } else {
        Err(invalid())
    }
}

fn is_pictograph(c: char) -> bool {
    matches!(c as u32,
        0x00A9 | 0x00AE | 0x203C | 0x2049 | 0x2122 | 0x2139 | 0x2194..=0x21AA | 0x231A..=0x23FF
        | 0x24C2 | 0x25AA..=0x27BF | 0x2934 | 0x2935 | 0x2B05..=0x2B55 | 0x3030 | 0x303D
        | 0x3297 | 0x3299 | 0x1F000..=0x1F1E5 | 0x1F200..=0x1FAFF)
}

fn is_regional_indicator(c: char) -> bool {
    (0x1F1E6..=0x1F1FF).contains(&(c as u32))
}

/// Whether `text` is exactly one emoji: a flag (two regional indicators), a keycap (`#`, `*` or a
/// digit, optionally U+FE0F, then U+20E3), or pictographs joined by ZWJ, each optionally followed
/// by a variation selector, a skin tone or tag characters (subdivision flags).
fn is_one_emoji(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    match chars.as_slice() {
        [a, b] if is_regional_indicator(*a) && is_regional_indicator(*b) => return true,
        [key, '\u{20E3}'] | [key, '\u{FE0F}', '\u{20E3}']
            if key.is_ascii_digit() || matches!(key, '#' | '*') =>
        {
            return true
        }
        _ => {}
    }
    let mut expect_pictograph = true;
    for c in chars {
        let code = c as u32;
        if expect_pictograph {
            if !is_pictograph(c) {
                return false;
            }
            expect_pictograph = false;
        } else if c == '\u{200D}' {
            expect_pictograph = true;
        } else if !(matches!(code, 0xFE0E | 0xFE0F | 0x1F3FB..=0x1F3FF | 0xE0020..=0xE007F)) {
            return false;
        }
    }
    !expect_pictograph
}

/// Checks a send's attachment fields: a `fileUrl` of the files API (`/api/files/<sha256 hex>`,
/// optionally `/<name>` after it) and bounded name, type and size. `None` when no field is set.
pub fn check_attachment(input: AttachmentInput) -> Result<Option<Attachment>, ChatError> {
    if input.is_empty() {
        return Ok(None);
    }
    let invalid = |what: &str| Err(ChatError::Invalid(what.to_owned()));
    let Some(url) = input.url.filter(|url| !url.is_empty()) else {
        return invalid("fileUrl is required with a file");
    };
    let Some(rest) = url.strip_prefix(FILES_URL_PREFIX) else {
        return invalid("fileUrl must be a file uploaded to /api/files/upload");
    };
    let (hash, suffix) = rest.split_at(rest.len().min(64));
    let suffix_ok = suffix.is_empty()
        || suffix.strip_prefix('/').is_some_and(|name| {
            !name.is_empty()
                && name.chars().count() <= MAX_FILE_NAME_CHARS
                && !name
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '/' | '?' | '#'))
        });
    if !images::is_image_hash(hash) || !suffix_ok {
        return invalid("fileUrl must be a file uploaded to /api/files/upload");
    }
    let name = input.name.unwrap_or_default();
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_FILE_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return invalid(&format!(
            "fileName must be 1 to {MAX_FILE_NAME_CHARS} characters, without control characters"
        ));
    }
    let size = input.size.unwrap_or(0);
    if size > MAX_FILE_SIZE {
        return invalid("fileSize is too large");
    }
    let file_type = input.file_type.unwrap_or_default();
    if file_type.len() > MAX_FILE_TYPE_CHARS
        || !file_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    {
        return invalid(&format!(
            "fileType must be at most {MAX_FILE_TYPE_CHARS} of A-Z, a-z, 0-9, - _ . /"
        ));
    }
    let mime_type = input
        .mime_type
        .filter(|mime| !mime.is_empty())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let mime_ok = mime_type.len() <= MAX_MIME_TYPE_CHARS
        && mime_type.split_once('/').is_some_and(|(kind, sub)| {
            let token = |part: &str| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
            };
            token(kind) && token(sub)
        });
    if !mime_ok {
        return invalid("mimeType must be a media type such as application/pdf");
    }
    Ok(Some(Attachment {
        url,
        name: name.to_owned(),
        size,
        file_type,
        mime_type,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reactions_are_one_emoji_or_a_short_token() {
        for good in [
            "👍",
            "👍🏽",
            "❤️",
            "🇫🇷",
            "1️⃣",
            "#⃣",
            "👩‍👩‍👧",
            "🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
            "+1",
            ":party:",
            "thumbs_up",
            "ok",
        ] {
            assert_eq!(check_reaction(good).unwrap(), good, "{good}");
        }
        for bad in [
            "",
            " ",
            "👍👍",
            "a b",
            "<script>",
            "\u{202E}",
            "é",
            "🇫",
            "x".repeat(33).as_str(),
            "👍a",
            "\u{200D}👍",
            "👍\u{200D}",
        ] {
            assert!(check_reaction(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attachments_must_point_at_the_files_api() {
        let hash = "ab".repeat(32);
        let input = |url: &str| AttachmentInput {
            url: Some(url.to_owned()),
            name: Some("notes.pdf".to_owned()),
            size: Some(10),
            file_type: Some("document".to_owned()),
            mime_type: Some("application/pdf".to_owned()),
        };
        assert!(check_attachment(AttachmentInput::default())
            .unwrap()
            .is_none());
        for good in [
            format!("/api/files/{hash}"),
            format!("/api/files/{hash}/notes.pdf"),
        ] {
            assert!(check_attachment(input(&good)).unwrap().is_some(), "{good}");
        }
        for bad in [
            "https://evil.example/x".to_owned(),
            format!("/api/files/{}", "AB".repeat(32)),
            format!("/api/files/{hash}x"),
            format!("/api/files/{hash}/a/b"),
            format!("/api/files/{hash}/"),
            "/api/files/../etc/passwd".to_owned(),
            format!("/uploads/{hash}"),
        ] {
            assert!(check_attachment(input(&bad)).is_err(), "{bad}");
        }
        let url = format!("/api/files/{hash}");
        let mut long_name = input(&url);
        long_name.name = Some("n".repeat(MAX_FILE_NAME_CHARS + 1));
        assert!(check_attachment(long_name).is_err());
        let mut bad_mime = input(&url);
        bad_mime.mime_type = Some("text/html; charset=utf-8".to_owned());
        assert!(check_attachment(bad_mime).is_err());
        let mut no_url = input(&url);
        no_url.url = None;
        assert!(check_attachment(no_url).is_err());
    }
}
