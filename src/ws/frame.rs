//! The wire shapes of socket frames: [`ServerFrame`], everything the server sends, and
//! [`ClientFrame`], everything a client may send. Both are `{"type": ..., "data": ...}` (a frame
//! without data, such as `pong`, has no `data` key).
//!
//! A server frame is serialised once into a shared [`Frame`] and handed to every socket it goes
//! to. The chat message inside `newMessage` is the API's own JSON shape, which `http::wire` owns;
//! it is a type parameter here so this module depends on neither `http` nor the chat domain.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One pre-serialised JSON text frame, shared by every socket it is sent to: a message to N
/// sockets is serialised once and each outbox holds a pointer.
pub type Frame = Arc<str>;

/// A frame the server sends. `M` is the JSON shape of what the chat frames carry (a message in
/// `newMessage` and `newGroupMessage`, a group in `groupUpdated`); frames that carry none leave it
/// at [`NoMessage`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "camelCase")]
pub enum ServerFrame<'a, M = NoMessage> {
    /// A message was saved: to both participants.
    NewMessage(&'a M),
    /// A message (or system message, `isSystemMessage`) was saved in a group: to every member.
    NewGroupMessage(&'a M),
    /// A group was created or changed: to every member, so their group lists refresh.
    GroupUpdated(&'a M),
    /// The socket's user is no longer in the group (removed, left, deleted).
    GroupRemoved(GroupRemovedFrame<'a>),
    /// The sender's message job changed state.
    MessageStatus(MessageStatusFrame<'a>),
    /// A message was edited: to everyone who can see it.
    MessageEdited(MessageEditedFrame<'a>),
    /// A message was deleted: to everyone who can see it.
    MessageDeleted(MessageDeletedFrame<'a>),
    /// A reaction was added or taken back: to everyone who can see the message. (The MERN
    /// app's name, and, unlike that app, never to anyone else.)
    #[serde(rename = "message_reaction_update")]
    MessageReactionUpdate(ReactionUpdateFrame<'a>),
    /// The other participant started or stopped typing.
    Typing(TypingFrame<'a>),
    /// The other participant read the conversation up to a `seq`.
    MessagesRead(MessagesReadFrame<'a>),
    /// A notification for a user who was offline when the message was sent.
    Notification(NotificationFrame<'a>),
    /// The ids of the users online that this socket's user may see, sorted.
    GetOnlineUsers(&'a [&'a str]),
    /// A client frame was refused; the socket stays open.
    Error(ErrorFrame<'a>),
    /// The answer to a client's `ping`.
    Pong,
}

/// The message type of frames that carry no chat message: it has no values.
#[derive(Debug, Clone, Copy)]
pub enum NoMessage {}

impl Serialize for NoMessage {
    fn serialize<S: serde::Serializer>(&self, _serializer: S) -> Result<S::Ok, S::Error> {
        match *self {}
    }
}

/// `data` of a `messageStatus` frame: the sender's message job changed state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStatusFrame<'a> {
    pub message_id: &'a str,
    pub job_id: &'a str,
    pub state: &'a str,
}

/// `data` of a `messageEdited` frame.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEditedFrame<'a> {
    pub message_id: &'a str,
    pub text: &'a str,
    pub is_edited: bool,
    pub edit_history: Vec<EditFrame<'a>>,
    /// ISO-8601.
    pub updated_at: String,
    pub change_seq: u64,
}

/// One previous text in `editHistory`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EditFrame<'a> {
    pub text: &'a str,
    /// ISO-8601.
    pub edited_at: String,
}

/// `data` of a `messageDeleted` frame.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageDeletedFrame<'a> {
    pub message_id: &'a str,
    pub is_deleted: bool,
    /// ISO-8601.
    pub deleted_at: Option<String>,
    pub change_seq: u64,
}

/// `data` of a `message_reaction_update` frame, with the message's reactions as they are now.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactionUpdateFrame<'a> {
    pub message_id: &'a str,
    pub reaction: &'a str,
    pub user_id: &'a str,
    pub is_add: bool,
    pub reactions: Vec<ReactionFrame<'a>>,
    pub change_seq: u64,
}

/// One reaction on a message: who gave it and how many they are.
#[derive(Debug, Clone, Serialize)]
pub struct ReactionFrame<'a> {
    pub emoji: &'a str,
    pub users: &'a [String],
    pub count: usize,
}

/// `data` of a `typing` frame.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingFrame<'a> {
    pub sender_id: &'a str,
    pub is_typing: bool,
}

/// `data` of a `messagesRead` frame: the reader has read everything up to `upToSeq`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagesReadFrame<'a> {
    pub reader_id: &'a str,
    pub up_to_seq: u64,
}

/// `data` of a `notification` frame; `type` is the notification's own kind.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub message: &'a str,
    pub data: &'a serde_json::Value,
    /// ISO-8601, as every timestamp on the wire.
    pub timestamp: String,
}

/// `data` of a `groupRemoved` frame.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRemovedFrame<'a> {
    pub group_id: &'a str,
}

/// `data` of an `error` frame.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorFrame<'a> {
    pub message: &'a str,
}

/// What an `error` frame says when a frame could not be built.
const INTERNAL_ERROR: &str = r#"{"type":"error","data":{"message":"internal error"}}"#;

impl<M: Serialize> ServerFrame<'_, M> {
    /// Serialises the frame once, for every socket it goes to.
    ///
    /// Data that cannot be serialised (a map with non-string keys, a failing `Serialize` impl)
    /// is a programming error: it is logged and the frame becomes a generic `error` frame.
    pub fn encode(&self) -> Frame {
        match self.try_encode() {
            Ok(frame) => frame,
            Err(error) => {
                tracing::error!(kind = self.kind(), %error, "websocket frame data does not serialise");
                Frame::from(INTERNAL_ERROR)
            }
        }
    }

    /// Serialises the frame, returning the serialisation error.
    pub fn try_encode(&self) -> Result<Frame, serde_json::Error> {
        serde_json::to_string(self).map(Frame::from)
    }
}

impl<M> ServerFrame<'_, M> {
    /// The frame's `type`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::NewMessage(_) => "newMessage",
            ServerFrame::NewGroupMessage(_) => "newGroupMessage",
            ServerFrame::GroupUpdated(_) => "groupUpdated",
            ServerFrame::GroupRemoved(_) => "groupRemoved",
            ServerFrame::MessageStatus(_) => "messageStatus",
            ServerFrame::MessageEdited(_) => "messageEdited",
            ServerFrame::MessageDeleted(_) => "messageDeleted",
            ServerFrame::MessageReactionUpdate(_) => "message_reaction_update",
            ServerFrame::Typing(_) => "typing",
            ServerFrame::MessagesRead(_) => "messagesRead",
            ServerFrame::Notification(_) => "notification",
            ServerFrame::GetOnlineUsers(_) => "getOnlineUsers",
            ServerFrame::Error(_) => "error",
            ServerFrame::Pong => "pong",
        }
    }
}

/// Constructors of the frames without a chat message, which pin `M` (a type parameter's
/// default does not steer inference in expressions).
impl<'a> ServerFrame<'a> {
    /// An `error` frame saying `message`.
    pub fn error(message: &'a str) -> ServerFrame<'a> {
        ServerFrame::Error(ErrorFrame { message })
    }

    /// A `getOnlineUsers` frame listing `users`.
    pub fn online_users(users: &'a [&'a str]) -> ServerFrame<'a> {
        ServerFrame::GetOnlineUsers(users)
    }

    pub fn pong() -> ServerFrame<'a> {
        ServerFrame::Pong
    }
}

/// A frame a client sends, `{"type": ..., "data": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    tag = "type",
    content = "data",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ClientFrame {
    /// `typing {receiverId, isTyping}`
    Typing {
        receiver_id: String,
        is_typing: bool,
    },
    /// `markRead {userId, seq}`: the reader has read the conversation with `user_id` up to `seq`.
    MarkRead { user_id: String, seq: u64 },
    /// `ping`, answered with `{"type":"pong"}`.
    Ping,
}

impl ClientFrame {
    /// Parses one text frame; the error is a message fit to send back to the client.
    pub fn parse(text: &str) -> Result<ClientFrame, String> {
        serde_json::from_str(text).map_err(|error| format!("invalid frame: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact bytes of every kind the server sends. A failing one means the wire changed.
    #[test]
    fn server_frames_keep_their_exact_wire_form() {
        #[derive(Serialize)]
        struct Message {
            text: &'static str,
        }
        let data = serde_json::json!({"messageId": "m"});
        let users = ["a".to_owned(), "b".to_owned()];
        let cases: [(ServerFrame<'_, Message>, &str); 11] = [
            (
                ServerFrame::MessageEdited(MessageEditedFrame {
                    message_id: "m",
                    text: "new",
                    is_edited: true,
                    edit_history: vec![EditFrame {
                        text: "old",
                        edited_at: "1970-01-01T00:00:01.000Z".to_owned(),
                    }],
                    updated_at: "1970-01-01T00:00:01.000Z".to_owned(),
                    change_seq: 4,
                }),
                r#"{"type":"messageEdited","data":{"messageId":"m","text":"new","isEdited":true,"editHistory":[{"text":"old","editedAt":"1970-01-01T00:00:01.000Z"}],"updatedAt":"1970-01-01T00:00:01.000Z","changeSeq":4}}"#,
            ),
            (
                ServerFrame::MessageDeleted(MessageDeletedFrame {
                    message_id: "m",
                    is_deleted: true,
                    deleted_at: Some("1970-01-01T00:00:02.000Z".to_owned()),
                    change_seq: 5,
                }),
                r#"{"type":"messageDeleted","data":{"messageId":"m","isDeleted":true,"deletedAt":"1970-01-01T00:00:02.000Z","changeSeq":5}}"#,
            ),
            (
                ServerFrame::MessageReactionUpdate(ReactionUpdateFrame {
                    message_id: "m",
                    reaction: "👍",
                    user_id: "b",
                    is_add: true,
                    reactions: vec![ReactionFrame {
                        emoji: "👍",
                        users: &users,
                        count: 2,
                    }],
                    change_seq: 6,
                }),
                r#"{"type":"message_reaction_update","data":{"messageId":"m","reaction":"👍","userId":"b","isAdd":true,"reactions":[{"emoji":"👍","users":["a","b"],"count":2}],"changeSeq":6}}"#,
            ),
            (
                ServerFrame::NewMessage(&Message { text: "hi" }),
                r#"{"type":"newMessage","data":{"text":"hi"}}"#,
            ),
            (
                ServerFrame::MessageStatus(MessageStatusFrame {
                    message_id: "m",
                    job_id: "j",
                    state: "active",
                }),
                r#"{"type":"messageStatus","data":{"messageId":"m","jobId":"j","state":"active"}}"#,
            ),
            (
                ServerFrame::Typing(TypingFrame {
                    sender_id: "a",
                    is_typing: false,
                }),
                r#"{"type":"typing","data":{"senderId":"a","isTyping":false}}"#,
            ),
            (
                ServerFrame::MessagesRead(MessagesReadFrame {
                    reader_id: "a",
                    up_to_seq: 9,
                }),
                r#"{"type":"messagesRead","data":{"readerId":"a","upToSeq":9}}"#,
            ),
            (
                ServerFrame::Notification(NotificationFrame {
                    kind: "new_message",
                    message: "New",
                    data: &data,
                    timestamp: "1970-01-01T00:00:00.000Z".to_owned(),
                }),
                r#"{"type":"notification","data":{"type":"new_message","message":"New","data":{"messageId":"m"},"timestamp":"1970-01-01T00:00:00.000Z"}}"#,
            ),
            (
                ServerFrame::GetOnlineUsers(&["a", "b"]),
                r#"{"type":"getOnlineUsers","data":["a","b"]}"#,
            ),
            (
                ServerFrame::Error(ErrorFrame {
                    message: "bad \"frame\"",
                }),
                r#"{"type":"error","data":{"message":"bad \"frame\""}}"#,
            ),
            (ServerFrame::Pong, r#"{"type":"pong"}"#),
        ];
        let group_cases: [(ServerFrame<'_, Message>, &str); 3] = [
            (
                ServerFrame::NewGroupMessage(&Message { text: "hi all" }),
                r#"{"type":"newGroupMessage","data":{"text":"hi all"}}"#,
            ),
            (
                ServerFrame::GroupUpdated(&Message { text: "group" }),
                r#"{"type":"groupUpdated","data":{"text":"group"}}"#,
            ),
            (
                ServerFrame::GroupRemoved(GroupRemovedFrame { group_id: "g" }),
                r#"{"type":"groupRemoved","data":{"groupId":"g"}}"#,
            ),
        ];
        for (frame, expected) in group_cases {
            assert_eq!(&*frame.encode(), expected, "{}", frame.kind());
        }
        for (frame, expected) in cases {
            assert_eq!(&*frame.encode(), expected, "{}", frame.kind());
        }
        assert_eq!(
            &*ServerFrame::online_users(&[]).encode(),
            r#"{"type":"getOnlineUsers","data":[]}"#
        );
    }

    #[test]
    fn unserialisable_data_becomes_an_error_frame() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(vec![1u8], 1);
        assert_eq!(&*ServerFrame::NewMessage(&map).encode(), INTERNAL_ERROR);
    }

    #[test]
    fn client_frames_parse_from_wire_names() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"typing","data":{"receiverId":"b","isTyping":true}}"#),
            Ok(ClientFrame::Typing {
                receiver_id: "b".into(),
                is_typing: true
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"markRead","data":{"userId":"b","seq":42,"extra":1}}"#),
            Ok(ClientFrame::MarkRead {
                user_id: "b".into(),
                seq: 42
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping)
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping","data":null}"#),
            Ok(ClientFrame::Ping)
        );
    }

    #[test]
    fn bad_client_frames_explain_themselves() {
        for text in [
            "not json",
            r#"{"type":"shout","data":{}}"#,
            r#"{"type":"typing","data":{"receiverId":"b"}}"#,
            r#"{"type":"markRead","data":{"userId":"b","seq":-1}}"#,
            r#"{"data":{}}"#,
        ] {
            let message = ClientFrame::parse(text).expect_err(text);
            assert!(message.starts_with("invalid frame: "), "{message}");
        }
    }
}
