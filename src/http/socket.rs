//! The HTTP side of WebSockets: `GET /ws` (authenticated upgrade → [`run_session`]) and the
//! [`Delivery`] the chat domain pushes through, which turns domain events into wire frames.
//!
//! The upgrade is done here rather than with axum's `WebSocketUpgrade`, to reach tungstenite's
//! frames: a text frame longer than [`FRAGMENT_BYTES`] goes out in fragments. tungstenite copies
//! every frame it writes into a per-socket buffer that keeps its largest size for the life of the
//! socket, so one `getOnlineUsers` list of a thousand users (27 KB) sent whole to 10,000 sockets
//! left 270 MB behind. Frames are shared, not copied, on their way to tungstenite.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{stream, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use ws_tungstenite::tungstenite::handshake::derive_accept_key;
use ws_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use ws_tungstenite::tungstenite::protocol::frame::{CloseFrame as WsCloseFrame, Frame as WsFrame};
use ws_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use ws_tungstenite::tungstenite::{Bytes, Message};
use ws_tungstenite::WebSocketStream;

use super::wire::{GroupEventJson, GroupJson, GroupMessageJson, MessageJson};
use super::{ApiError, AppState};
use crate::chat::{Chat, ChatEvent, Delivery};
use crate::time::iso_time;
use crate::ws::{
    run_session, CloseFrame, Frame, GroupRemovedFrame, Hub, InboundHandler, InboundMessage,
    MessageStatusFrame, MessagesReadFrame, NotificationFrame, OutboundMessage, ServerFrame,
    TypingFrame,
};
use crate::ws::{
    EditFrame, MessageDeletedFrame, MessageEditedFrame, ReactionFrame, ReactionUpdateFrame,
};

/// Longest text frame sent whole; longer ones go out in fragments of this size.
pub const FRAGMENT_BYTES: usize = 2 * 1024;

/// The largest client message accepted (client frames are small: typing, read marks, pings).
const MAX_INBOUND_BYTES: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    token: Option<String>,
    /// The user the page believes is signed in; another user's cookie is refused with 409
    /// (see `http::session::EXPECTED_USER_HEADER`), so a tab never listens as someone else.
    user: Option<String>,
}

/// Per-socket buffers: tungstenite's defaults allocate 128 KiB per socket up front. Client
/// frames are small, and writes collect at most [`FRAGMENT_BYTES`] before going out.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(FRAGMENT_BYTES)
        .max_message_size(Some(MAX_INBOUND_BYTES))
        .max_frame_size(Some(MAX_INBOUND_BYTES))
}

/// Whether a header's comma-separated values include `token` (case-insensitive).
fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|value| value.trim().eq_ignore_ascii_case(token))
}

/// Checks an HTTP/1.1 WebSocket upgrade request (RFC 6455 section 4.2.1); returns its key.
fn upgrade_key(request: &Request) -> Result<HeaderValue, ApiError> {
    let headers = request.headers();
    if request.method() != Method::GET {
        return Err(ApiError::bad_request("websocket upgrades use GET"));
    }
    if !header_has(headers, header::CONNECTION, "upgrade")
        || !header_has(headers, header::UPGRADE, "websocket")
    {
        return Err(ApiError::bad_request(
            "expected a websocket upgrade (Connection: upgrade, Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|version| version.as_bytes() != b"13")
    {
        return Err(ApiError::bad_request("Sec-WebSocket-Version must be 13"));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or_else(|| ApiError::bad_request("Sec-WebSocket-Key is missing"))
}

async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let key = upgrade_key(&request)?;
    let mut headers = request.headers().clone();
    if let Some(token) = query.token {
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| ApiError::unauthorized("Unauthorized - Invalid Token"))?;
        // An explicit token wins over the cookie (see `request_token`).
        headers.insert(header::AUTHORIZATION, bearer);
    }
    if let Some(expected) = query.user {
        let expected = expected
            .parse()
            .map_err(|_| ApiError::bad_request("invalid user"))?;
        headers.insert(super::EXPECTED_USER_HEADER, expected);
    }
    let caller = super::authenticate(&state, &headers).await?;
    let (user, session_id) = (caller.user, caller.session_id);
    let (chat, hub) = state.realtime()?;
    // Before the first presence frame: users who block this one stay hidden from it.
    chat.load_presence_rules(&user.id).await?;
    let (chat, hub) = (chat.clone(), hub.clone());
    let on_upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::bad_request("this connection cannot be upgraded"))?;
    // A child of the HTTP layer's token: shutdown closes the socket, and the session's end stops
    // its session check. Tracked, so shutdown waits for the closing handshake.
    let socket_token = state.shutdown_token().child_token();
    // The upgrade completes (or fails) as soon as hyper has sent the 101, so it is not raced
    // against shutdown: a socket opened at that moment still gets its 1001.
    state.tasks().clone().spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "websocket upgrade failed");
                return;
            }
        };
        let socket = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(socket_config()),
        )
        .await;
        session(socket, state, socket_token, chat, hub, user.id, session_id).await;
    });
    let accept = derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(axum::body::Body::empty())
        .map_err(|err| ApiError::Internal(anyhow::anyhow!(err)))
}

async fn session<S>(
    socket: WebSocketStream<S>,
    state: AppState,
    token: CancellationToken,
    chat: Arc<Chat>,
    hub: Hub,
    user_id: String,
    session_id: String,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (sink, stream) = socket.split();
    let sink = sink.with_flat_map(|message: OutboundMessage| {
        stream::iter(to_tungstenite(message).into_iter().map(Ok))
    });
    let stream = stream.map(|message| message.map(from_tungstenite));
    let handler = ChatHandler { chat };
    state.tasks().spawn(watch_session(
        Arc::clone(&handler.chat),
        hub.clone(),
        user_id.clone(),
        session_id.clone(),
        token.clone(),
    ));
    let end = run_session(
        &hub,
        &user_id,
        Some(&session_id),
        sink,
        stream,
        &handler,
        token.clone().cancelled_owned(),
    )
    .await;
    // Stops the session check.
    token.cancel();
    tracing::debug!(user = %user_id, reason = end.as_str(), "websocket closed");
}

/// Closes the socket once its session has ended. This process's own logouts close sockets at
/// once (`Delivery::end_sessions`); this check covers a session that ended between the upgrade's
/// check and the socket's registration, and one ended by another process sharing the store.
/// Ends when `token` is cancelled (the socket closed, or shutdown).
async fn watch_session(
    chat: Arc<Chat>,
    hub: Hub,
    user_id: String,
    session_id: String,
    token: CancellationToken,
) {
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = crate::chat::sessions::RECHECK;
        let live = tokio::select! {
            () = token.cancelled() => return,
            live = chat.session_is_live(&user_id, &session_id) => live,
        };
        match live {
            Ok(true) => {}
            Ok(false) => {
                hub.end_sessions(&user_id, std::slice::from_ref(&session_id));
                return;
            }
            Err(err) => tracing::debug!(error = %err, "cannot check a socket's session"),
        }
    }
}

/// The bytes of a shared frame, without copying them.
fn frame_bytes(frame: Frame) -> Bytes {
    struct Shared(Frame);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    Bytes::from_owner(Shared(frame))
}

/// The WebSocket messages for one outbound message: a long text frame becomes a first text
/// fragment and continuations (each cut on a character boundary, though the protocol does not
/// require it).
fn to_tungstenite(message: OutboundMessage) -> Vec<Message> {
    match message {
        OutboundMessage::Text(frame) if frame.len() <= FRAGMENT_BYTES => vec![Message::Frame(
            WsFrame::message(frame_bytes(frame), OpCode::Data(Data::Text), true),
        )],
        OutboundMessage::Text(frame) => {
            let mut cuts = Vec::with_capacity(frame.len() / FRAGMENT_BYTES + 2);
            let mut start = 0;
            while start < frame.len() {
                let mut end = (start + FRAGMENT_BYTES).min(frame.len());
                while !frame.is_char_boundary(end) {
                    end -= 1;
                }
                cuts.push((start, end));
                start = end;
            }
            let bytes = frame_bytes(frame);
            let last = cuts.len() - 1;
            cuts.into_iter()
                .enumerate()
                .map(|(index, (start, end))| {
                    let opcode = if index == 0 {
                        Data::Text
                    } else {
                        Data::Continue
                    };
                    Message::Frame(WsFrame::message(
                        bytes.slice(start..end),
                        OpCode::Data(opcode),
                        index == last,
                    ))
                })
                .collect()
        }
        OutboundMessage::Ping(payload) => vec![Message::Ping(payload.into())],
        OutboundMessage::Close(frame) => vec![Message::Close(frame.map(|frame| WsCloseFrame {
            code: frame.code.into(),
            reason: frame.reason.into(),
        }))],
    }
}

fn from_tungstenite(message: Message) -> InboundMessage {
    match message {
        Message::Text(text) => InboundMessage::Text(text.as_str().to_owned()),
        Message::Binary(bytes) => InboundMessage::Binary(bytes.to_vec()),
        Message::Ping(bytes) => InboundMessage::Ping(bytes.to_vec()),
        Message::Pong(bytes) => InboundMessage::Pong(bytes.to_vec()),
        Message::Close(frame) => InboundMessage::Close(frame.map(|frame| CloseFrame {
            code: frame.code.into(),
            reason: frame.reason.as_str().to_owned(),
        })),
        // tungstenite never yields raw frames when reading; count one as a sign of life.
        Message::Frame(_) => InboundMessage::Pong(Vec::new()),
    }
}

struct ChatHandler {
    chat: Arc<Chat>,
}

impl InboundHandler for ChatHandler {
    async fn typing(&self, sender: &str, receiver: &str, is_typing: bool) {
        self.chat.typing(sender, receiver, is_typing).await;
    }

    async fn mark_read(&self, reader: &str, other: &str, seq: u64) {
        if let Err(err) = self.chat.mark_read(reader, other, seq).await {
            tracing::debug!(reader, other, error = %err, "read receipt refused");
        }
    }
}

/// The frames of chat events: their messages are the API's JSON shape.
type ChatFrame<'a> = ServerFrame<'a, MessageJson>;

/// The frames of group events: messages with their sender populated, and groups.
type GroupFrame<'a> = ServerFrame<'a, GroupEventJson>;

/// Delivers chat events to sockets as the MERN app's frames.
pub struct HubDelivery {
    hub: Hub,
}

impl HubDelivery {
    pub fn new(hub: Hub) -> HubDelivery {
        HubDelivery { hub }
    }
}

impl Delivery for HubDelivery {
    fn deliver(&self, users: &[&str], event: ChatEvent) {
        let frame = match &event {
            ChatEvent::NewMessage(view) => {
                ChatFrame::NewMessage(&MessageJson::from(&**view)).encode()
            }
            // Serialised once here, for every member's sockets.
            ChatEvent::NewGroupMessage(message) => GroupFrame::NewGroupMessage(
                &GroupEventJson::Message(GroupMessageJson::from(&**message)),
            )
            .encode(),
            ChatEvent::GroupUpdated(view) => {
                GroupFrame::GroupUpdated(&GroupEventJson::Group(Box::new(GroupJson::from(&**view))))
                    .encode()
            }
            ChatEvent::GroupRemoved { group_id } => {
                GroupFrame::GroupRemoved(GroupRemovedFrame { group_id }).encode()
            }
            ChatEvent::MessageEdited(message) => ChatFrame::MessageEdited(MessageEditedFrame {
                message_id: &message.id,
                text: &message.text,
                is_edited: message.edited_at.is_some(),
                edit_history: message
                    .edit_history
                    .iter()
                    .map(|edit| EditFrame {
                        text: &edit.text,
                        edited_at: iso_time(edit.edited_at),
                    })
                    .collect(),
                updated_at: iso_time(message.updated_at),
                change_seq: message.change,
            })
            .encode(),
            ChatEvent::MessageDeleted(message) => ChatFrame::MessageDeleted(MessageDeletedFrame {
                message_id: &message.id,
                is_deleted: message.is_deleted(),
                deleted_at: message.deleted_at.map(iso_time),
                change_seq: message.change,
            })
            .encode(),
            ChatEvent::ReactionUpdate {
                message,
                reaction,
                user_id,
                is_add,
            } => ChatFrame::MessageReactionUpdate(ReactionUpdateFrame {
                message_id: &message.id,
                reaction,
                user_id,
                is_add: *is_add,
                reactions: message
                    .reactions
                    .iter()
                    .map(|reaction| ReactionFrame {
                        emoji: &reaction.emoji,
                        users: &reaction.users,
                        count: reaction.users.len(),
                    })
                    .collect(),
                change_seq: message.change,
            })
            .encode(),
            ChatEvent::MessageStatus {
                message_id,
                job_id,
                state,
            } => ChatFrame::MessageStatus(MessageStatusFrame {
                message_id,
                job_id,
                state,
            })
            .encode(),
            ChatEvent::Typing {
                sender_id,
                is_typing,
            } => ChatFrame::Typing(TypingFrame {
                sender_id,
                is_typing: *is_typing,
            })
            .encode(),
            ChatEvent::MessagesRead {
                reader_id,
                up_to_seq,
            } => ChatFrame::MessagesRead(MessagesReadFrame {
                reader_id,
                up_to_seq: *up_to_seq,
            })
            .encode(),
            ChatEvent::Notification {
                kind,
                message,
                data,
                timestamp,
            } => ChatFrame::Notification(NotificationFrame {
                kind,
                message,
                data,
                timestamp: iso_time(*timestamp),
            })
            .encode(),
        };
        self.hub.send_to_users(users, frame);
    }

    fn is_online(&self, user: &str) -> bool {
        self.hub.is_online(user)
    }

    fn end_sessions(&self, user: &str, sessions: &[String]) {
        let closed = self.hub.end_sessions(user, sessions);
        if closed > 0 {
            tracing::info!(%user, sockets = closed, "closed the sockets of ended sessions");
        }
    }

    fn hide_presence(&self, viewer: &str, hidden: Vec<String>) {
        self.hub.hide_presence(viewer, hidden);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (opcode, is_final, payload) of each message, which must all be raw frames.
    fn frames(messages: Vec<Message>) -> Vec<(OpCode, bool, Vec<u8>)> {
        messages
            .into_iter()
            .map(|message| match message {
                Message::Frame(frame) => (
                    frame.header().opcode,
                    frame.header().is_final,
                    frame.payload().to_vec(),
                ),
                other => panic!("expected a raw frame, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn short_text_frames_go_out_whole() {
        let sent = frames(to_tungstenite(OutboundMessage::Text(Frame::from(
            "{\"type\":\"pong\"}",
        ))));
        assert_eq!(
            sent,
            vec![(
                OpCode::Data(Data::Text),
                true,
                b"{\"type\":\"pong\"}".to_vec()
            )]
        );
    }

    #[test]
    fn long_text_frames_go_out_in_fragments_cut_on_characters() {
        // 'é' is two bytes, so some fragment boundaries fall inside a character.
        let text: String = "é".repeat(FRAGMENT_BYTES * 2 + 7);
        let sent = frames(to_tungstenite(OutboundMessage::Text(Frame::from(
            text.as_str(),
        ))));
        assert!(sent.len() >= 5, "{} fragments", sent.len());
        let mut joined = Vec::new();
        for (index, (opcode, is_final, payload)) in sent.iter().enumerate() {
            let expected = if index == 0 {
                Data::Text
            } else {
                Data::Continue
            };
            assert_eq!(*opcode, OpCode::Data(expected), "fragment {index}");
            assert_eq!(*is_final, index == sent.len() - 1, "fragment {index}");
            assert!(payload.len() <= FRAGMENT_BYTES);
            assert!(
                std::str::from_utf8(payload).is_ok(),
                "fragment {index} splits a character"
            );
            joined.extend_from_slice(payload);
        }
        assert_eq!(joined, text.as_bytes());
    }

    #[test]
    fn control_messages_keep_their_kind() {
        assert!(matches!(
            to_tungstenite(OutboundMessage::Ping(Vec::new())).as_slice(),
            [Message::Ping(_)]
        ));
        let close = to_tungstenite(OutboundMessage::Close(Some(CloseFrame {
            code: 1013,
            reason: "outbox overflow".to_owned(),
        })));
        match close.as_slice() {
            [Message::Close(Some(frame))] => {
                assert_eq!(u16::from(frame.code), 1013);
                assert_eq!(frame.reason.as_str(), "outbox overflow");
            }
            other => panic!("{other:?}"),
        }
    }

    /// The exact bytes of each chat event's frame, as the MERN client reads them. A failing one
    /// means the wire changed.
    #[test]
    fn chat_event_frames_keep_their_exact_wire_form() {
        let hub = Hub::default();
        let mut connection = hub.connect("a");
        // The first frame is the presence snapshot.
        assert_eq!(
            connection.try_next(),
            Some(crate::ws::Outgoing::Frame(Frame::from(
                r#"{"type":"getOnlineUsers","data":["a"]}"#
            )))
        );
        let delivery = HubDelivery::new(hub.clone());
        let mut message = crate::store::chat::MessageRecord::new_at(
            crate::store::chat::NewMessage {
                id: "m1".into(),
                sender_id: "a".into(),
                receiver_id: "b".into(),
                text: "hi \"you\"".into(),
                ..Default::default()
            },
            3,
            3,
        );
        message.updated_at = 1000;
        let mut changed = message.clone();
        changed.text = "edited".into();
        changed.edit_history = vec![crate::store::chat::Edit {
            text: "hi".into(),
            edited_at: 2000,
        }];
        changed.edited_at = Some(2000);
        changed.updated_at = 2000;
        changed.reactions = vec![crate::store::chat::Reaction {
            emoji: "👍".into(),
            users: vec!["b".into()],
        }];
        changed.change = 4;
        let mut deleted = message.clone();
        deleted.deleted_at = Some(3000);
        deleted.change = 5;
        let cases = [
            (
                ChatEvent::MessageEdited(Box::new(changed.clone())),
                r#"{"type":"messageEdited","data":{"messageId":"m1","text":"edited","isEdited":true,"editHistory":[{"text":"hi","editedAt":"1970-01-01T00:00:02.000Z"}],"updatedAt":"1970-01-01T00:00:02.000Z","changeSeq":4}}"#,
            ),
            (
                ChatEvent::MessageDeleted(Box::new(deleted)),
                r#"{"type":"messageDeleted","data":{"messageId":"m1","isDeleted":true,"deletedAt":"1970-01-01T00:00:03.000Z","changeSeq":5}}"#,
            ),
            (
                ChatEvent::ReactionUpdate {
                    message: Box::new(changed),
                    reaction: "👍".into(),
                    user_id: "b".into(),
                    is_add: true,
                },
                r#"{"type":"message_reaction_update","data":{"messageId":"m1","reaction":"👍","userId":"b","isAdd":true,"reactions":[{"emoji":"👍","users":["b"],"count":1}],"changeSeq":4}}"#,
            ),
            (
                ChatEvent::NewMessage(Box::new(crate::chat::MessageView::plain(message))),
                r#"{"type":"newMessage","data":{"_id":"m1","senderId":"a","receiverId":"b","groupId":null,"text":"hi \"you\"","image":"","seq":3,"createdAt":"1970-01-01T00:00:00.000Z","updatedAt":"1970-01-01T00:00:01.000Z","replyTo":null,"fileUrl":null,"fileName":null,"fileSize":null,"fileType":null,"mimeType":null,"isEdited":false,"editHistory":[],"isDeleted":false,"deletedAt":null,"reactions":[],"isSystemMessage":false,"changeSeq":3}}"#,
            ),
            (
                ChatEvent::MessageStatus {
                    message_id: "m1".into(),
                    job_id: "m1".into(),
                    state: "completed".into(),
                },
                r#"{"type":"messageStatus","data":{"messageId":"m1","jobId":"m1","state":"completed"}}"#,
            ),
            (
                ChatEvent::Typing {
                    sender_id: "b".into(),
                    is_typing: true,
                },
                r#"{"type":"typing","data":{"senderId":"b","isTyping":true}}"#,
            ),
            (
                ChatEvent::MessagesRead {
                    reader_id: "b".into(),
                    up_to_seq: 7,
                },
                r#"{"type":"messagesRead","data":{"readerId":"b","upToSeq":7}}"#,
            ),
            (
                ChatEvent::Notification {
                    kind: "new_message".into(),
                    message: "New message".into(),
                    data: serde_json::json!({"messageId": "m1"}),
                    timestamp: 1000,
                },
                r#"{"type":"notification","data":{"type":"new_message","message":"New message","data":{"messageId":"m1"},"timestamp":"1970-01-01T00:00:01.000Z"}}"#,
            ),
        ];
        for (event, expected) in cases {
            delivery.deliver(&["a"], event);
            match connection.try_next() {
                Some(crate::ws::Outgoing::Frame(frame)) => assert_eq!(&*frame, expected),
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }
}
