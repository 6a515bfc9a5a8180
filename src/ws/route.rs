//! The axum side of WebSockets: `GET /ws` (authenticated upgrade → [`run_session`]) and the
//! [`Delivery`] the chat domain pushes through, which turns domain events into wire frames.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame as AxumCloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{future, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::{frame, run_session, CloseFrame, Hub, InboundHandler, InboundMessage, OutboundMessage};
use crate::chat::{Chat, ChatEvent, Delivery};
use crate::http::wire::{iso_time, MessageJson};
use crate::http::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    mut headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if let Some(token) = query.token {
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| ApiError::unauthorized("Unauthorized - Invalid Token"))?;
        // The cookie still wins if both are given (see `request_token`).
        headers.insert(axum::http::header::AUTHORIZATION, bearer);
    }
    let user = crate::http::authenticate(&state, &headers).await?;
    let (chat, hub) = state.realtime()?;
    let (chat, hub) = (chat.clone(), hub.clone());
    Ok(upgrade
        // tungstenite's defaults allocate 128 KiB per socket up front; frames here are small.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| session(socket, state, chat, hub, user.id)))
}

async fn session(socket: WebSocket, state: AppState, chat: Arc<Chat>, hub: Hub, user_id: String) {
    let (sink, stream) = socket.split();
    let sink =
        sink.with(|message: OutboundMessage| future::ready(Ok::<_, axum::Error>(to_axum(message))));
    let stream = stream.map(|message| message.map(from_axum));
    let handler = ChatHandler { chat };
    let shutdown = {
        let state = state.clone();
        async move { state.shutdown_started().await }
    };
    let end = run_session(&hub, &user_id, sink, stream, &handler, shutdown).await;
    tracing::debug!(user = %user_id, reason = end.as_str(), "websocket closed");
}

fn to_axum(message: OutboundMessage) -> Message {
    match message {
        OutboundMessage::Text(frame) => Message::Text((&*frame).into()),
        OutboundMessage::Ping(payload) => Message::Ping(payload.into()),
        OutboundMessage::Close(frame) => Message::Close(frame.map(|frame| AxumCloseFrame {
            code: frame.code,
            reason: frame.reason.into(),
        })),
    }
}

fn from_axum(message: Message) -> InboundMessage {
    match message {
        Message::Text(text) => InboundMessage::Text(text.as_str().to_owned()),
        Message::Binary(bytes) => InboundMessage::Binary(bytes.to_vec()),
        Message::Ping(bytes) => InboundMessage::Ping(bytes.to_vec()),
        Message::Pong(bytes) => InboundMessage::Pong(bytes.to_vec()),
        Message::Close(frame) => InboundMessage::Close(frame.map(|frame| CloseFrame {
            code: frame.code,
            reason: frame.reason.as_str().to_owned(),
        })),
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
            ChatEvent::NewMessage(message) => frame("newMessage", &MessageJson::from(message)),
            ChatEvent::MessageStatus {
                message_id,
                job_id,
                state,
            } => frame(
                "messageStatus",
                &json!({ "messageId": message_id, "jobId": job_id, "state": state }),
            ),
            ChatEvent::Typing {
                sender_id,
                is_typing,
            } => frame(
                "typing",
                &json!({ "senderId": sender_id, "isTyping": is_typing }),
            ),
            ChatEvent::MessagesRead {
                reader_id,
                up_to_seq,
            } => frame(
                "messagesRead",
                &json!({ "readerId": reader_id, "upToSeq": up_to_seq }),
            ),
            ChatEvent::Notification {
                kind,
                message,
                data,
                timestamp,
            } => frame(
                "notification",
                &json!({ "type": kind, "message": message, "data": data, "timestamp": iso_time(*timestamp) }),
            ),
        };
        self.hub.send_to_users(users, frame);
    }

    fn is_online(&self, user: &str) -> bool {
        self.hub.is_online(user)
    }
}
