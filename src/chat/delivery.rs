//! What the chat domain pushes to connected clients, and the seam it pushes through.
//!
//! The domain speaks in [`ChatEvent`]s; the WebSocket layer implements [`Delivery`] and turns
//! each event into its wire frame. The domain never sees a socket or a JSON field name.

use super::groups::{GroupMessage, GroupView};
use crate::store::chat::MessageRecord;

/// A message as its participants see it: the stored record, and a preview of the message it
/// replies to (resolved by the domain, which checked the reply is in the same conversation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    pub message: MessageRecord,
    pub reply: Option<ReplyPreview>,
}

impl MessageView {
    /// A view without a reply preview.
    pub fn plain(message: MessageRecord) -> MessageView {
        MessageView {
            message,
            reply: None,
        }
    }
}

/// What a reply shows of the message it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyPreview {
    pub id: String,
    /// Empty when the original was deleted.
    pub text: String,
    pub image: String,
    pub sender_id: String,
    pub sender_name: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    NewMessage(Box<MessageView>),
    /// A message (or system message) saved in a group: to every member.
    NewGroupMessage(Box<GroupMessage>),
    /// A group was created or changed (members, admin, details): to every member.
    GroupUpdated(Box<GroupView>),
    /// The user is no longer a member of the group (removed, left, or it was deleted).
    GroupRemoved {
        group_id: String,
    },
    /// A message's text was edited: to everyone who can see it.
    MessageEdited(Box<MessageRecord>),
    /// A message was (soft) deleted: to everyone who can see it.
    MessageDeleted(Box<MessageRecord>),
    /// `user_id` added (`is_add`) or took back `reaction` on `message` (as it is now).
    ReactionUpdate {
        message: Box<MessageRecord>,
        reaction: String,
        user_id: String,
        is_add: bool,
    },
    /// The sender's message job moved to `state` (`waiting`, `active`, `delayed`, `completed`,
    /// `failed`).
    MessageStatus {
        message_id: String,
        job_id: String,
        state: String,
    },
    Typing {
        sender_id: String,
        is_typing: bool,
    },
    MessagesRead {
        reader_id: String,
        up_to_seq: u64,
    },
    Notification {
        kind: String,
        message: String,
        data: serde_json::Value,
        timestamp: u64,
    },
}

pub trait Delivery: Send + Sync + 'static {
    /// Sends an event to every connected socket of each user (each user once). Never blocks.
    fn deliver(&self, users: &[&str], event: ChatEvent);

    /// Whether the user has at least one connected socket.
    fn is_online(&self, user: &str) -> bool;

    /// `viewer` no longer sees `hidden` online (they block the viewer); replaces the last list.
    fn hide_presence(&self, viewer: &str, hidden: Vec<String>);

    /// Closes `user`'s sockets that were opened with one of `sessions` (which just ended).
    fn end_sessions(&self, user: &str, sessions: &[String]);
}

/// Delivers nowhere: for processes with no WebSocket layer (tools, some tests).
pub struct NoDelivery;

impl Delivery for NoDelivery {
    fn deliver(&self, _users: &[&str], _event: ChatEvent) {}

    fn is_online(&self, _user: &str) -> bool {
        false
    }

    fn hide_presence(&self, _viewer: &str, _hidden: Vec<String>) {}

    fn end_sessions(&self, _user: &str, _sessions: &[String]) {}
}
