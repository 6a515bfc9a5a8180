//! What the chat domain pushes to connected clients, and the seam it pushes through.
//!
//! The domain speaks in [`ChatEvent`]s; the WebSocket layer implements [`Delivery`] and turns
//! each event into its wire frame. The domain never sees a socket or a JSON field name.

use crate::store::chat::MessageRecord;

#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    NewMessage(MessageRecord),
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
