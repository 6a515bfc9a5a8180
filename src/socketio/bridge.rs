//! One Socket.IO connection: the namespace connect (authenticated like `/ws`), then Courier's
//! own session loop ([`run_session`]) between the hub and the Engine.IO session, then
//! connection-state recovery for a client that comes back.
//!
//! Outbound, every hub frame `{"type": T, "data": D}` becomes the event `42["T",D]`, whatever
//! `T` is, so frame kinds added to the hub flow without changes here. Events that are not
//! momentary (all but presence, typing, pong and error) carry a recovery offset as their last
//! argument, which socket.io-client sends back when it reconnects. Inbound, `typing`, `markRead`
//! and `ping` become the frames `/ws` takes; the MERN client's `message_reaction`, `join_group`,
//! `leave_group` and `join_user_room` are accepted and do nothing (the REST routes notify, and
//! what a socket receives follows the user's real conversations and memberships).
//!
//! Recovery: a connection that ends without the client leaving on purpose keeps, for
//! [`RECOVERY_WINDOW`], what it sent last (with offsets) and the highest `seq` it sent in each
//! conversation. When the client reconnects with its `pid` and last offset, it gets the events
//! it sent but did not receive, then every direct message saved since (from the store: Courier's
//! own catch-up), each exactly once, before live events; it sees `socket.recovered`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use futures_util::{sink, stream};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::engine::{self, EngineSocket, Engines, Inbound, Packet};
use super::packet::{self, ClientPacket, EnginePacket};
use crate::chat::Chat;
use crate::http::wire::MessageJson;
use crate::http::AppState;
use crate::store::chat::{HistoryPage, UserRecord};
use crate::ws::{
    run_session, Frame, Hub, InboundHandler, InboundMessage, OutboundMessage, ServerFrame,
    SessionEnd,
};

/// How long a handshake may wait for its namespace connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(45);

/// How long a dropped connection can be recovered (Socket.IO's default).
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(120);

/// Events kept per connection for recovery (sent, maybe not received).
const SENT_LOG: usize = 64;

/// Most direct messages one recovery replays from the store; past it the client is told it
/// was not recovered and reloads as after a fresh connect.
const MAX_REPLAY: usize = 2_000;

/// Recoverable connections kept at most (the oldest go first).
const MAX_RECOVERIES: usize = 100_000;

/// Events that describe a moment, not a change: never replayed, so they carry no offset.
const MOMENTARY: [&str; 4] = ["\"getOnlineUsers\"", "\"typing\"", "\"pong\"", "\"error\""];

/// Client events accepted and ignored (the MERN client's; see the module docs).
const HARMLESS: [&str; 4] = [
    "message_reaction",
    "join_group",
    "leave_group",
    "join_user_room",
];

/// What the handshake's HTTP request brought, for the namespace connect.
#[derive(Debug)]
pub struct Handshake {
    pub cookie: Option<String>,
    /// Why the cookie may not be used from the handshake's origin, if it may not.
    pub origin_refusal: Option<&'static str>,
    pub user_id: Option<String>,
}

/// What recovery needs of one connection.
#[derive(Debug, Default)]
struct Csr {
    user_id: String,
    /// The Socket.IO socket id, kept across a recovery.
    socket_id: String,
    next_offset: u64,
    /// The last events sent with an offset, oldest first.
    sent: VecDeque<(u64, Packet)>,
    /// Offsets at or below this are gone from `sent`.
    floor: u64,
    /// Highest direct-message `seq` sent (or known at connect), by the other participant.
    positions: HashMap<String, u64>,
    /// Set on a recovered connection: live messages at or below `positions` are duplicates of
    /// the replay.
    recovered: bool,
}

struct Kept {
    csr: Csr,
    until: Instant,
}

/// Recoverable connections by private id (`pid`).
#[derive(Default)]
pub struct Recoveries {
    kept: Mutex<HashMap<String, Kept>>,
}

impl Recoveries {
    fn keep(&self, pid: String, csr: Csr) {
        let now = Instant::now();
        let mut kept = self.kept.lock();
        if kept.len() >= MAX_RECOVERIES {
            kept.retain(|_, entry| entry.until > now);
            if kept.len() >= MAX_RECOVERIES {
                if let Some(oldest) = kept
                    .iter()
                    .min_by_key(|(_, entry)| entry.until)
                    .map(|(pid, _)| pid.clone())
                {
                    kept.remove(&oldest);
                }
            }
        }
        kept.insert(
            pid,
            Kept {
                csr,
                until: now + RECOVERY_WINDOW,
            },
        );
    }

    /// The connection `pid` of `user_id`, if still recoverable.
    fn take(&self, pid: &str, user_id: &str) -> Option<Csr> {
        let mut kept = self.kept.lock();
        let entry = kept.get(pid)?;
        if entry.csr.user_id != user_id {
            return None;
        }
        let entry = kept.remove(pid)?;
        (entry.until > Instant::now()).then_some(entry.csr)
    }
}

/// Why a namespace connect was refused, for `connect_error`.
fn refusal(error: crate::http::ApiError) -> String {
    if error.status().is_client_error() {
        error.to_string()
    } else {
        tracing::warn!(%error, "socket.io connect failed");
        "the server could not check the session, try again".to_owned()
    }
}

/// Authenticates a namespace connect: `auth.token`, else the handshake's cookie (from an
/// allowed origin only), verified as `/ws` does; `userId` must name the same user.
async fn authenticate(
    state: &AppState,
    handshake: &Handshake,
    auth: Option<&Value>,
) -> Result<crate::chat::Authenticated, String> {
    let mut headers = HeaderMap::new();
    match auth
        .and_then(|auth| auth.get("token"))
        .and_then(Value::as_str)
    {
        Some(token) => {
            let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "Unauthorized - Invalid Token".to_owned())?;
            headers.insert(header::AUTHORIZATION, bearer);
        }
        None => {
            if let Some(cookie) = &handshake.cookie {
                if let Some(refusal) = handshake.origin_refusal {
                    return Err(refusal.to_owned());
                }
                let cookie = HeaderValue::from_str(cookie)
                    .map_err(|_| "Unauthorized - Invalid Token".to_owned())?;
                headers.insert(header::COOKIE, cookie);
            }
        }
    }
    let caller = crate::http::authenticate(state, &headers)
        .await
        .map_err(refusal)?;
    let named = handshake.user_id.as_deref().or_else(|| {
        auth.and_then(|auth| auth.get("userId"))
            .and_then(Value::as_str)
    });
    if let Some(named) = named {
        if named != caller.user.id {
            return Err("userId names another user than the one signed in".to_owned());
        }
    }
    Ok(caller)
}

/// Waits for the namespace connect, answering pings; `None` when the client went away.
async fn wait_connect(
    state: &AppState,
    engine: &EngineSocket,
    inbound: &mut mpsc::Receiver<Inbound>,
    handshake: &Handshake,
) -> Option<(crate::chat::Authenticated, Option<Value>)> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let next = tokio::select! {
            next = inbound.recv() => next,
            () = tokio::time::sleep_until(deadline) => return None,
            () = state.shutdown_started() => return None,
        };
        let Some(Inbound::Packet(text)) = next else {
            return None;
        };
        match EnginePacket::parse(&text) {
            Ok(EnginePacket::Ping(data)) => {
                let _ = engine.out.try_send(Packet::from(format!("3{data}")));
            }
            Ok(EnginePacket::Message(message)) => match ClientPacket::parse(message) {
                Ok(ClientPacket::Connect { namespace, auth }) if namespace == "/" => {
                    // Boxed, here and below: a future held by every idle connection reserves room
                    // for its largest await, so the rare, deep ones live on the heap while they run.
                    match Box::pin(authenticate(state, handshake, auth.as_ref())).await {
                        Ok(caller) => return Some((caller, auth)),
                        Err(message) => {
                            let refused = packet::connect_error("/", &message);
                            if engine.out.send(Packet::from(refused)).await.is_err() {
                                return None;
                            }
                        }
                    }
                }
                Ok(ClientPacket::Connect { namespace, .. }) => {
                    let refused = packet::connect_error(&namespace, "Invalid namespace");
                    if engine.out.send(Packet::from(refused)).await.is_err() {
                        return None;
                    }
                }
                _ => {}
            },
            Ok(EnginePacket::Close) => return None,
            _ => {}
        }
    }
}

/// Runs one Engine.IO session to its end.
pub async fn drive(
    state: AppState,
    engines: Arc<Engines>,
    engine: Arc<EngineSocket>,
    mut inbound: mpsc::Receiver<Inbound>,
    handshake: Handshake,
) {
    let connected = wait_connect(&state, &engine, &mut inbound, &handshake).await;
    engines.pending.fetch_sub(1, Ordering::Relaxed);
    drop(handshake);
    if let Some((caller, auth)) = connected {
        run_connection(&state, &engines, &engine, inbound, caller, auth).await;
    }
    engine.closed.cancel();
    // A polling client reads what is left (a disconnect) and the close with its next poll.
    let until = Instant::now() + Duration::from_secs(5);
    while engine.out.capacity() < engine.out.max_capacity()
        && Instant::now() < until
        && !state.is_shutting_down()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engines.remove_polling(&engine.sid);
}

async fn run_connection(
    state: &AppState,
    engines: &Engines,
    engine: &Arc<EngineSocket>,
    inbound: mpsc::Receiver<Inbound>,
    caller: crate::chat::Authenticated,
    auth: Option<Value>,
) {
    let Ok((chat, hub)) = state.realtime() else {
        return;
    };
    let (chat, hub) = (Arc::clone(chat), hub.clone());
    let user = caller.user;
    let session_id = caller.session_id;
    // Before the first presence frame: users who block this one stay hidden from it.
    if let Err(error) = Box::pin(chat.load_presence_rules(&user.id)).await {
        tracing::warn!(%error, "socket.io connect: presence rules failed");
        let _ = engine
            .out
            .send(Packet::from(packet::connect_error("/", "try again")))
            .await;
        return;
    }
    let offered = auth.as_ref().and_then(|auth| {
        let pid = auth.get("pid")?.as_str()?.to_owned();
        let offset = match auth.get("offset") {
            Some(Value::String(offset)) => offset.parse().ok()?,
            _ => 0,
        };
        Some((pid, offset))
    });
    let recovered = offered.and_then(|(pid, offset)| {
        let csr = engines.recoveries.take(&pid, &user.id)?;
        // The client's offset must still be in the log, or some events are gone.
        (offset >= csr.floor).then_some((pid, offset, csr))
    });
    let (pid, replay_after, csr) = match recovered {
        Some((pid, offset, mut csr)) => {
            csr.recovered = true;
            (pid, Some(offset), csr)
        }
        None => (
            engine::random_id(),
            None,
            Csr {
                user_id: user.id.clone(),
                socket_id: engine::random_id(),
                next_offset: 1,
                ..Csr::default()
            },
        ),
    };
    let connected = packet::connected(&csr.socket_id, &pid);
    if engine.out.send(Packet::from(connected)).await.is_err() {
        return;
    }
    let csr = Arc::new(Mutex::new(csr));
    let shutdown = state.shutdown_token().child_token();
    let (ping_interval, _) =
        engine::timings(state).unwrap_or((Duration::from_secs(25), Duration::from_secs(20)));

    let reader = Reader {
        inbound,
        engine: Arc::clone(engine),
        next_ping: Instant::now() + ping_interval,
        ping_interval,
        next_check: Instant::now() + Duration::from_secs(1),
        chat: Arc::clone(&chat),
        hub: hub.clone(),
        user_id: user.id.clone(),
        session_id: session_id.clone(),
    };
    let stream = stream::unfold(reader, |mut reader| async move {
        let message = reader.next().await?;
        Some((Ok::<_, Infallible>(message), reader))
    });
    let writer = Writer {
        out: engine.out.clone(),
        csr: Arc::clone(&csr),
        chat: Arc::clone(&chat),
        user: user.clone(),
        start: Some(replay_after),
    };
    let sink = sink::unfold(writer, |mut writer, message: OutboundMessage| async move {
        writer.write(message).await?;
        Ok::<_, &'static str>(writer)
    });
    let handler = ChatHandler {
        chat: Arc::clone(&chat),
    };
    let end = run_session(
        &hub,
        &user.id,
        Some(&session_id),
        sink,
        stream,
        &handler,
        shutdown.cancelled_owned(),
    )
    .await;
    tracing::debug!(user = %user.id, reason = end.as_str(), "socket.io connection ended");
    match end {
        // Ended for good: the client must not reconnect by itself (`io server disconnect`).
        SessionEnd::SessionEnded | SessionEnd::Disconnected => {
            let _ = engine.out.try_send(Packet::from(packet::DISCONNECT));
        }
        // The client left on purpose: nothing to recover.
        SessionEnd::ClientClosed => {}
        // Dropped (network, timeout, overflow, shutdown): the client reconnects and recovers.
        _ => {
            let csr = std::mem::take(&mut *csr.lock());
            engines.recoveries.keep(pid, csr);
        }
    }
}

/// The session loop's inbound side: Engine.IO packets from the transports, as the messages
/// `/ws` reads; also the Engine.IO pings, and the periodic check that the sign-in session
/// still exists (as `/ws` does).
struct Reader {
    inbound: mpsc::Receiver<Inbound>,
    engine: Arc<EngineSocket>,
    next_ping: Instant,
    ping_interval: Duration,
    next_check: Instant,
    chat: Arc<Chat>,
    hub: Hub,
    user_id: String,
    session_id: String,
}

impl Reader {
    async fn next(&mut self) -> Option<InboundMessage> {
        loop {
            tokio::select! {
                biased;
                next = self.inbound.recv() => {
                    let Some(Inbound::Packet(text)) = next else { return None };
                    if text.starts_with(packet::CLOSE) {
                        // The transport closing (socket.io's "transport close"): recoverable.
                        return None;
                    }
                    if let Some(message) = self.packet(&text) {
                        return Some(message);
                    }
                }
                () = tokio::time::sleep_until(self.next_ping) => {
                    self.next_ping = Instant::now() + self.ping_interval;
                    // A full outbox is a client not reading; the session loop judges that.
                    let _ = self.engine.out.try_send(Packet::from(packet::PING));
                }
                () = tokio::time::sleep_until(self.next_check) => {
                    self.next_check = Instant::now() + crate::chat::sessions::RECHECK;
                    match Box::pin(self.chat.session_is_live(&self.user_id, &self.session_id)).await {
                        Ok(true) => {}
                        Ok(false) => {
                            self.hub.end_sessions(&self.user_id, std::slice::from_ref(&self.session_id));
                        }
                        Err(error) => tracing::debug!(%error, "cannot check a socket's session"),
                    }
                }
            }
        }
    }

    fn reply(&self, text: String) {
        let _ = self.engine.out.try_send(Packet::from(text));
    }

    /// One Engine.IO packet as what the session loop reads, or `None` when it has no part in it.
    fn packet(&self, text: &str) -> Option<InboundMessage> {
        let message = match EnginePacket::parse(text) {
            Ok(EnginePacket::Message(message)) => message,
            Ok(EnginePacket::Pong(_)) => return Some(InboundMessage::Pong(Vec::new())),
            Ok(EnginePacket::Ping(data)) => {
                self.reply(format!("3{data}"));
                return Some(InboundMessage::Ping(Vec::new()));
            }
            Ok(EnginePacket::Close) => return None,
            Ok(EnginePacket::Upgrade | EnginePacket::Noop) => return None,
            Err(error) => return Some(self.refuse(error)),
        };
        match ClientPacket::parse(message) {
            Ok(ClientPacket::Event {
                namespace,
                ack,
                name,
                args,
            }) if namespace == "/" => {
                if let Some(id) = ack {
                    self.reply(packet::ack(id));
                }
                if HARMLESS.contains(&name.as_str()) {
                    // A sign of life, counted against the inbound budget like any frame.
                    return Some(InboundMessage::Pong(Vec::new()));
                }
                // The frame `/ws` reads; a name it does not know gets its `error` answer.
                let data = args.into_iter().next().unwrap_or(Value::Null);
                let frame = serde_json::json!({ "type": name, "data": data });
                Some(InboundMessage::Text(frame.to_string()))
            }
            Ok(ClientPacket::Disconnect { namespace }) if namespace == "/" => {
                Some(InboundMessage::Close(None))
            }
            Ok(ClientPacket::Ack { .. }) => None,
            Ok(_) => Some(self.refuse("only the main namespace \"/\" is served")),
            Err(error) => Some(self.refuse(error)),
        }
    }

    /// Answers a packet Courier cannot read with an `error` event; the connection stays.
    fn refuse(&self, message: &str) -> InboundMessage {
        let frame = ServerFrame::error(message).encode();
        if let Some((name, data)) = packet::split_frame(&frame) {
            self.reply(packet::event(&name, data.as_deref(), None));
        }
        InboundMessage::Pong(Vec::new())
    }
}

/// The identity of a direct message, from a `newMessage` frame's data.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageKey {
    sender_id: String,
    receiver_id: String,
    seq: u64,
}

/// The last frame turned into a packet without an offset, shared by every socket it goes to
/// (a presence change reaches every socket with the same frame).
static SHARED: Mutex<Option<(Frame, Packet)>> = Mutex::new(None);

/// The session loop's outbound side: hub frames as Socket.IO events, into the Engine.IO
/// outbox; on a recovered connection, the replay goes first.
struct Writer {
    out: mpsc::Sender<Packet>,
    csr: Arc<Mutex<Csr>>,
    chat: Arc<Chat>,
    user: UserRecord,
    /// Before the first frame: `Some(None)` takes the catch-up baseline, `Some(Some(offset))`
    /// replays after `offset`.
    start: Option<Option<u64>>,
}

impl Writer {
    async fn write(&mut self, message: OutboundMessage) -> Result<(), &'static str> {
        let OutboundMessage::Text(frame) = message else {
            // Engine.IO pings are the reader's; closing is the driver's.
            return Ok(());
        };
        // The first frame is the presence snapshot, which the hub yields once the socket is
        // registered: from here on every new message reaches this socket live.
        if let Some(start) = self.start.take() {
            match start {
                None => Box::pin(self.baseline()).await,
                Some(offset) => Box::pin(self.replay(offset)).await?,
            }
        }
        if let Some(packet) = self.packet(&frame) {
            self.out.send(packet).await.map_err(|_| "session closed")?;
        }
        Ok(())
    }

    /// The last `seq` of each conversation now: what the client has (it loads history).
    async fn baseline(&mut self) {
        match self.chat.conversations(&self.user.id).await {
            Ok(conversations) => {
                let mut csr = self.csr.lock();
                for conversation in conversations {
                    if let Some(last) = conversation.last_message {
                        let position = csr.positions.entry(conversation.other_id).or_default();
                        *position = (*position).max(last.seq);
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "socket.io: no catch-up baseline"),
        }
    }

    /// Sends what the client missed: logged events after `offset`, then the direct messages
    /// saved after each conversation's position.
    async fn replay(&mut self, offset: u64) -> Result<(), &'static str> {
        let logged: Vec<Packet> = {
            let csr = self.csr.lock();
            csr.sent
                .iter()
                .filter(|(sent, _)| *sent > offset)
                .map(|(_, packet)| Packet::clone(packet))
                .collect()
        };
        for packet in logged {
            self.out.send(packet).await.map_err(|_| "session closed")?;
        }
        let conversations = match self.chat.conversations(&self.user.id).await {
            Ok(conversations) => conversations,
            Err(error) => {
                tracing::warn!(%error, "socket.io recovery: conversations failed");
                return Ok(());
            }
        };
        let mut replayed = 0;
        for conversation in conversations {
            let Some(last) = conversation.last_message else {
                continue;
            };
            let other = conversation.other_id;
            let mut position = self.csr.lock().positions.get(&other).copied().unwrap_or(0);
            while position < last.seq && replayed < MAX_REPLAY {
                let page = HistoryPage::After {
                    seq: position,
                    limit: crate::chat::MAX_PAGE,
                };
                let messages = match self.chat.history(&self.user, &other, page).await {
                    Ok(messages) => messages,
                    Err(error) => {
                        tracing::warn!(%error, "socket.io recovery: history failed");
                        break;
                    }
                };
                if messages.is_empty() {
                    break;
                }
                for message in &messages {
                    let frame = ServerFrame::NewMessage(&MessageJson::from(message)).encode();
                    if let Some(packet) = self.packet(&frame) {
                        self.out.send(packet).await.map_err(|_| "session closed")?;
                        replayed += 1;
                    }
                    position = position.max(message.message.seq);
                }
            }
        }
        Ok(())
    }

    /// The event for one hub frame; `None` for a message this connection already sent.
    fn packet(&self, frame: &Frame) -> Option<Packet> {
        frame_event(frame, &mut self.csr.lock(), &self.user.id)
    }
}

/// The event for one hub frame of `user_id`'s connection, by the frame's name, whatever it is:
/// momentary ones shared and without an offset, the others stamped and logged for recovery;
/// `None` for a direct message a recovered connection already sent.
fn frame_event(frame: &Frame, csr: &mut Csr, user_id: &str) -> Option<Packet> {
    let (name, data) = packet::split_frame(frame)?;
    if MOMENTARY.contains(&name.as_str()) {
        let mut shared = SHARED.lock();
        if let Some((last, packet)) = shared.as_ref() {
            if Arc::ptr_eq(last, frame) {
                return Some(Packet::clone(packet));
            }
        }
        let packet = Packet::from(packet::event(&name, data.as_deref(), None));
        *shared = Some((Frame::clone(frame), Packet::clone(&packet)));
        return Some(packet);
    }
    if name == "\"newMessage\"" {
        if let Some(key) = data
            .as_deref()
            .and_then(|data| serde_json::from_str::<MessageKey>(data).ok())
        {
            let other = if key.sender_id == user_id {
                key.receiver_id
            } else {
                key.sender_id
            };
            let recovered = csr.recovered;
            let position = csr.positions.entry(other).or_default();
            if recovered && key.seq <= *position {
                return None;
            }
            *position = (*position).max(key.seq);
        }
    }
    let offset = csr.next_offset;
    csr.next_offset += 1;
    let packet = Packet::from(packet::event(&name, data.as_deref(), Some(offset)));
    if csr.sent.len() >= SENT_LOG {
        if let Some((dropped, _)) = csr.sent.pop_front() {
            csr.floor = dropped;
        }
    }
    csr.sent.push_back((offset, Packet::clone(&packet)));
    Some(packet)
}

/// Client events, handled by the chat domain exactly as on `/ws`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> Csr {
        Csr {
            user_id: "me".into(),
            next_offset: 1,
            ..Csr::default()
        }
    }

    /// Frame kinds the hub does not send yet reach the client by their own name, with their
    /// data untouched: a new kind needs no change here.
    #[test]
    fn any_frame_kind_becomes_the_event_of_its_name() {
        let mut csr = csr();
        for (frame, expected) in [
            (
                r#"{"type":"messageEdited","data":{"messageId":"m","text":"t","isEdited":true}}"#,
                r#"42["messageEdited",{"messageId":"m","text":"t","isEdited":true},"1"]"#,
            ),
            (
                r#"{"type":"newGroupMessage","data":{"groupId":"g","senderId":"a"}}"#,
                r#"42["newGroupMessage",{"groupId":"g","senderId":"a"},"2"]"#,
            ),
            (
                r#"{"type":"message_reaction_update","data":{"messageId":"m","reaction":"+1","userId":"a","isAdd":true}}"#,
                r#"42["message_reaction_update",{"messageId":"m","reaction":"+1","userId":"a","isAdd":true},"3"]"#,
            ),
            (
                r#"{"type":"messageDeleted","data":{"messageId":"m"}}"#,
                r#"42["messageDeleted",{"messageId":"m"},"4"]"#,
            ),
            // Momentary ones carry no offset and are not kept for recovery.
            (
                r#"{"type":"typing","data":{"senderId":"a","isTyping":true}}"#,
                r#"42["typing",{"senderId":"a","isTyping":true}]"#,
            ),
            (
                r#"{"type":"getOnlineUsers","data":["a","me"]}"#,
                r#"42["getOnlineUsers",["a","me"]]"#,
            ),
            (r#"{"type":"pong"}"#, r#"42["pong"]"#),
        ] {
            let packet = frame_event(&Frame::from(frame), &mut csr, "me").expect(frame);
            assert_eq!(&*packet, expected);
        }
        assert_eq!(csr.sent.len(), 4);
        assert_eq!(csr.next_offset, 5);
    }

    #[test]
    fn a_recovered_connection_drops_messages_it_already_sent() {
        let message = |seq: u64| {
            Frame::from(format!(
                r#"{{"type":"newMessage","data":{{"_id":"m{seq}","senderId":"other","receiverId":"me","seq":{seq}}}}}"#
            ))
        };
        let mut csr = csr();
        assert!(frame_event(&message(1), &mut csr, "me").is_some());
        assert!(frame_event(&message(2), &mut csr, "me").is_some());
        assert_eq!(csr.positions["other"], 2);
        // Before recovery nothing is dropped (a late frame is still news to the client).
        assert!(frame_event(&message(2), &mut csr, "me").is_some());
        csr.recovered = true;
        assert!(frame_event(&message(2), &mut csr, "me").is_none());
        assert!(frame_event(&message(3), &mut csr, "me").is_some());
        assert_eq!(csr.positions["other"], 3);
    }

    #[test]
    fn the_log_keeps_the_last_events_and_knows_what_it_lost() {
        let mut csr = csr();
        for index in 0..SENT_LOG as u64 + 5 {
            let frame = Frame::from(format!(
                r#"{{"type":"messageStatus","data":{{"n":{index}}}}}"#
            ));
            frame_event(&frame, &mut csr, "me");
        }
        assert_eq!(csr.sent.len(), SENT_LOG);
        assert_eq!(csr.floor, 5);
        assert_eq!(csr.sent.front().map(|(offset, _)| *offset), Some(6));
    }
}
