//! Engine.IO v4 sessions and their two transports, WebSocket and HTTP long-polling, with the
//! upgrade from the one to the other; the routes of `/socket.io/`.
//!
//! Each session has a driver task ([`bridge::drive`]) that reads client packets from one
//! channel and writes server packets to another; a transport only moves packets between those
//! channels and the network. A WebSocket session lives in its socket's task; a polling session
//! sits in [`Engines::polling`] under its `sid`, where the requests of its client find it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use ws_tungstenite::tungstenite::handshake::derive_accept_key;
use ws_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use ws_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use ws_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use ws_tungstenite::tungstenite::{Bytes, Message};
use ws_tungstenite::WebSocketStream;

use super::bridge::{self, Handshake, Recoveries};
use super::packet::{self, SEPARATOR};
use crate::http::AppState;

/// One packet for the client, already in its wire form; shared when several sockets get the
/// same one (a presence list).
pub type Packet = Arc<str>;

/// Largest client payload (a polling POST, a WebSocket message): client events are small.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Longest text frame sent whole; longer ones go out in fragments (as on `/ws`, so that
/// tungstenite's write buffer stays small for the life of the socket).
const FRAGMENT_BYTES: usize = 2 * 1024;

/// Most packets in one long-polling answer, and most bytes (one packet may exceed it).
const MAX_POLL_PACKETS: usize = 256;
const MAX_POLL_BYTES: usize = 256 * 1024;

/// Server packets a session may have waiting for its transport before the driver waits.
const OUTBOX: usize = 64;

/// Engine.IO sessions that have not authenticated yet, at most (each is a handshake without a
/// namespace connect, closed after [`bridge::CONNECT_TIMEOUT`]).
const MAX_PENDING: usize = 10_000;

/// What the driver reads from the transports.
#[derive(Debug)]
pub enum Inbound {
    /// One Engine.IO packet, as text.
    Packet(String),
    /// The WebSocket closed or failed: the client is gone (it may come back and recover).
    TransportClosed,
}

/// One Engine.IO session, shared by its driver and its transports.
pub struct EngineSocket {
    pub sid: Box<str>,
    /// Server packets; a transport takes the receiver for as long as it writes.
    pub out: mpsc::Sender<Packet>,
    out_rx: tokio::sync::Mutex<mpsc::Receiver<Packet>>,
    /// Client packets, to the driver.
    pub inbound: mpsc::Sender<Inbound>,
    /// Cancelled when the session ends: the transports flush what is left and close.
    pub closed: CancellationToken,
    /// Set once a WebSocket took over from polling.
    upgraded: AtomicBool,
}

/// The state the routes share: polling sessions by `sid`, and recoverable connections.
#[derive(Default)]
pub struct Engines {
    polling: Mutex<HashMap<Box<str>, Arc<EngineSocket>>>,
    pub recoveries: Recoveries,
    /// Sessions whose namespace connect has not succeeded yet.
    pub pending: AtomicUsize,
}

impl Engines {
    fn polling_session(&self, sid: &str) -> Option<Arc<EngineSocket>> {
        self.polling.lock().get(sid).cloned()
    }

    pub fn remove_polling(&self, sid: &str) {
        self.polling.lock().remove(sid);
    }
}

pub fn router() -> Router<AppState> {
    let engines = Arc::new(Engines::default());
    Router::new()
        .route("/socket.io/", get(get_request).post(post_request))
        .route("/socket.io", get(get_request).post(post_request))
        .layer(Extension(engines))
}

#[derive(Debug, Deserialize)]
struct EngineQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
    /// The MERN client names its user; accepted only when it is the signed-in one.
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

/// An Engine.IO error answer: the protocol's `code` and Courier's `message`.
fn engine_error(status: StatusCode, code: u8, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "code": code, "message": message })),
    )
        .into_response()
}

fn unknown_session() -> Response {
    engine_error(StatusCode::BAD_REQUEST, 1, "Session ID unknown")
}

fn check_query(query: &EngineQuery) -> Result<bool, Box<Response>> {
    if query.eio.as_deref() != Some("4") {
        return Err(Box::new(engine_error(
            StatusCode::BAD_REQUEST,
            5,
            "Unsupported protocol version: EIO=4 (socket.io-client 3 or later) is required",
        )));
    }
    match query.transport.as_deref() {
        Some("polling") => Ok(false),
        Some("websocket") => Ok(true),
        _ => Err(Box::new(engine_error(
            StatusCode::BAD_REQUEST,
            0,
            "Transport unknown: use polling or websocket",
        ))),
    }
}

fn text_response(body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn get_request(
    State(state): State<AppState>,
    Extension(engines): Extension<Arc<Engines>>,
    Query(query): Query<EngineQuery>,
    request: Request,
) -> Response {
    let websocket = match check_query(&query) {
        Ok(websocket) => websocket,
        Err(response) => return *response,
    };
    if websocket {
        return websocket_upgrade(state, engines, query, request);
    }
    match &query.sid {
        None => open_polling(state, engines, &query, request.headers()),
        Some(sid) => match engines.polling_session(sid) {
            None => unknown_session(),
            Some(engine) => poll(&engine).await,
        },
    }
}

async fn post_request(
    Extension(engines): Extension<Arc<Engines>>,
    Query(query): Query<EngineQuery>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(response) = check_query(&query) {
        return *response;
    }
    let Some(engine) = query
        .sid
        .as_deref()
        .and_then(|sid| engines.polling_session(sid))
    else {
        return unknown_session();
    };
    if body.len() > MAX_PAYLOAD {
        return engine_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            0,
            "payload is too large (maxPayload)",
        );
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return engine_error(StatusCode::BAD_REQUEST, 0, "payload is not UTF-8 text");
    };
    for packet in text.split(SEPARATOR) {
        if engine
            .inbound
            .send(Inbound::Packet(packet.to_owned()))
            .await
            .is_err()
        {
            return unknown_session();
        }
    }
    text_response("ok".to_owned())
}

/// The handshake's credentials, kept until the namespace connect: the cookie, whether the
/// handshake's origin may use it, and the `userId` the client named.
fn handshake(state: &AppState, headers: &HeaderMap, query: &EngineQuery) -> Handshake {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    let origin_refusal =
        crate::http::cookie_origin_refusal(headers, &state.config().http.allowed_origins());
    Handshake {
        cookie: (!cookie.is_empty()).then_some(cookie),
        origin_refusal,
        user_id: query.user_id.clone(),
    }
}

/// A new session: its channels, and its driver task.
fn new_session(
    state: &AppState,
    engines: &Arc<Engines>,
    handshake: Handshake,
) -> Result<Arc<EngineSocket>, Box<Response>> {
    if engines.pending.load(Ordering::Relaxed) >= MAX_PENDING {
        return Err(Box::new(engine_error(
            StatusCode::SERVICE_UNAVAILABLE,
            0,
            "too many connections are waiting to authenticate",
        )));
    }
    if state.is_shutting_down() {
        return Err(Box::new(engine_error(
            StatusCode::SERVICE_UNAVAILABLE,
            0,
            "service is shutting down",
        )));
    }
    let (out, out_rx) = mpsc::channel(OUTBOX);
    let (inbound, inbound_rx) = mpsc::channel(16);
    let engine = Arc::new(EngineSocket {
        sid: random_id().into(),
        out,
        out_rx: tokio::sync::Mutex::new(out_rx),
        inbound,
        closed: CancellationToken::new(),
        upgraded: AtomicBool::new(false),
    });
    engines.pending.fetch_add(1, Ordering::Relaxed);
    state.tasks().spawn(bridge::drive(
        state.clone(),
        Arc::clone(engines),
        Arc::clone(&engine),
        inbound_rx,
        handshake,
    ));
    Ok(engine)
}

/// A random id for a session, a connection or a recovery (128 bits, URL-safe).
pub fn random_id() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// The open packet's timings: the hub's heartbeat (the server pings every interval; a client
/// that hears nothing for interval + timeout gives up).
pub fn timings(state: &AppState) -> Option<(Duration, Duration)> {
    let (_, hub) = state.realtime().ok()?;
    let config = hub.config();
    let interval = config.heartbeat_interval;
    let timeout = config
        .heartbeat_timeout
        .saturating_sub(interval)
        .max(Duration::from_secs(1));
    Some((interval, timeout))
}

fn open_packet(state: &AppState, sid: &str, upgrades: bool) -> String {
    let (interval, timeout) =
        timings(state).unwrap_or((Duration::from_secs(25), Duration::from_secs(20)));
    packet::open(
        sid,
        upgrades,
        interval.as_millis() as u64,
        timeout.as_millis() as u64,
        MAX_PAYLOAD,
    )
}

fn open_polling(
    state: AppState,
    engines: Arc<Engines>,
    query: &EngineQuery,
    headers: &HeaderMap,
) -> Response {
    if let Err(response) = state.realtime() {
        return response.into_response();
    }
    let handshake = handshake(&state, headers, query);
    let engine = match new_session(&state, &engines, handshake) {
        Ok(engine) => engine,
        Err(response) => return *response,
    };
    engines
        .polling
        .lock()
        .insert(engine.sid.clone(), Arc::clone(&engine));
    text_response(open_packet(&state, &engine.sid, true))
}

/// One long-polling GET: waits for server packets and answers with those ready.
async fn poll(engine: &EngineSocket) -> Response {
    if engine.upgraded.load(Ordering::Acquire) {
        return engine_error(
            StatusCode::BAD_REQUEST,
            3,
            "this session has moved to its websocket",
        );
    }
    let Ok(mut rx) = engine.out_rx.try_lock() else {
        return engine_error(
            StatusCode::BAD_REQUEST,
            3,
            "another poll of this session is in progress",
        );
    };
    // The driver pings every heartbeat interval, so a poll ends well before the request
    // timeout; this bound only covers a driver that stopped.
    let first = tokio::select! {
        biased;
        packet = rx.recv() => packet,
        () = engine.closed.cancelled() => None,
        () = tokio::time::sleep(Duration::from_secs(25)) => Some(Packet::from(packet::NOOP)),
    };
    let mut body = String::new();
    let mut count = 0;
    let mut next = first;
    while let Some(packet) = next {
        if count > 0 {
            body.push(SEPARATOR);
        }
        body.push_str(&packet);
        count += 1;
        if count >= MAX_POLL_PACKETS || body.len() >= MAX_POLL_BYTES {
            break;
        }
        next = rx.try_recv().ok();
    }
    if count == 0 || (engine.closed.is_cancelled() && rx.is_empty()) {
        // The session ended: what is left, then the close packet.
        if count > 0 {
            body.push(SEPARATOR);
        }
        body.push_str(packet::CLOSE);
    }
    text_response(body)
}

/// Checks an HTTP/1.1 WebSocket upgrade request; returns its key.
fn upgrade_key(request: &Request) -> Result<HeaderValue, &'static str> {
    let headers = request.headers();
    if request.method() != Method::GET {
        return Err("websocket upgrades use GET");
    }
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|value| value.trim().eq_ignore_ascii_case(token))
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err("expected a websocket upgrade (Connection: upgrade, Upgrade: websocket)");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|version| version.as_bytes() != b"13")
    {
        return Err("Sec-WebSocket-Version must be 13");
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or("Sec-WebSocket-Key is missing")
}

fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(FRAGMENT_BYTES)
        .max_message_size(Some(MAX_PAYLOAD))
        .max_frame_size(Some(MAX_PAYLOAD))
}

fn websocket_upgrade(
    state: AppState,
    engines: Arc<Engines>,
    query: EngineQuery,
    mut request: Request,
) -> Response {
    let key = match upgrade_key(&request) {
        Ok(key) => key,
        Err(message) => return engine_error(StatusCode::BAD_REQUEST, 3, message),
    };
    if let Err(response) = state.realtime() {
        return response.into_response();
    }
    // An upgrade of a polling session, or a session of its own.
    let (engine, fresh) = match &query.sid {
        Some(sid) => match engines.polling_session(sid) {
            Some(engine) if !engine.upgraded.load(Ordering::Acquire) => (engine, false),
            _ => return unknown_session(),
        },
        None => {
            let handshake = handshake(&state, request.headers(), &query);
            match new_session(&state, &engines, handshake) {
                Ok(engine) => (engine, true),
                Err(response) => return *response,
            }
        }
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        engine.closed.cancel();
        return engine_error(
            StatusCode::BAD_REQUEST,
            3,
            "this connection cannot be upgraded",
        );
    };
    let open = fresh.then(|| open_packet(&state, &engine.sid, false));
    let write_timeout = state
        .realtime()
        .map(|(_, hub)| hub.config().write_timeout)
        .unwrap_or(Duration::from_secs(30));
    state.tasks().spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "socket.io upgrade failed");
                if fresh {
                    engine.closed.cancel();
                }
                return;
            }
        };
        let socket = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(socket_config()),
        )
        .await;
        run_websocket(socket, &engine, open, write_timeout).await;
    });
    let accept = derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The bytes of a shared packet, without copying them.
fn packet_bytes(packet: Packet) -> Bytes {
    struct Shared(Packet);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    Bytes::from_owner(Shared(packet))
}

/// The WebSocket frames of one packet: whole, or a text fragment and continuations cut on
/// character boundaries.
pub fn ws_frames(packet: Packet) -> Vec<Message> {
    if packet.len() <= FRAGMENT_BYTES {
        return vec![Message::Frame(WsFrame::message(
            packet_bytes(packet),
            OpCode::Data(Data::Text),
            true,
        ))];
    }
    let mut cuts = Vec::with_capacity(packet.len() / FRAGMENT_BYTES + 2);
    let mut start = 0;
    while start < packet.len() {
        let mut end = (start + FRAGMENT_BYTES).min(packet.len());
        while !packet.is_char_boundary(end) {
            end -= 1;
        }
        cuts.push((start, end));
        start = end;
    }
    let bytes = packet_bytes(packet);
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

/// The WebSocket transport of one session: the probe and upgrade when it takes over from
/// polling, then packets both ways until either side ends.
async fn run_websocket<S>(
    socket: WebSocketStream<S>,
    engine: &EngineSocket,
    open: Option<String>,
    write_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let upgrading = open.is_none();
    if let Some(open) = open {
        if sink.send(Message::text(open)).await.is_err() {
            let _ = engine.inbound.send(Inbound::TransportClosed).await;
            return;
        }
    } else {
        // The probe: `2probe` answered with `3probe`, then `5` moves the session here. The
        // noop ends the poll the client has waiting, so that it can pause polling.
        let probed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                match text.as_str() {
                    packet::PROBE_PING => {
                        sink.send(Message::text(packet::PROBE_PONG)).await.ok()?;
                        let _ = engine.out.try_send(Packet::from(packet::NOOP));
                    }
                    packet::UPGRADE => return Some(()),
                    _ => return None,
                }
            }
            None
        })
        .await;
        if !matches!(probed, Ok(Some(()))) {
            // Polling goes on.
            return;
        }
    }
    let mut rx = engine.out_rx.lock().await;
    if upgrading {
        engine.upgraded.store(true, Ordering::Release);
    }
    let mut batch: Vec<Packet> = Vec::new();
    let reason = loop {
        tokio::select! {
            biased;
            () = engine.closed.cancelled() => {
                // Whatever the driver queued last (a disconnect), then the close.
                while let Ok(packet) = rx.try_recv() {
                    batch.push(packet);
                }
                let _ = tokio::time::timeout(write_timeout, write_all(&mut sink, &mut batch)).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), sink.close()).await;
                return;
            }
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if engine.inbound.send(Inbound::Packet(text.as_str().to_owned())).await.is_err() {
                        break "driver gone";
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    // Courier's events are text; a binary message is answered like bad JSON.
                    if engine.inbound.send(Inbound::Packet("b".to_owned())).await.is_err() {
                        break "driver gone";
                    }
                }
                Some(Ok(Message::Close(_))) | None => break "client closed",
                Some(Ok(_)) => {}
                Some(Err(_)) => break "read failed",
            },
            packet = rx.recv() => {
                let Some(packet) = packet else { break "driver gone" };
                batch.push(packet);
                while batch.len() < 64 {
                    match rx.try_recv() {
                        Ok(packet) => batch.push(packet),
                        Err(_) => break,
                    }
                }
                match tokio::time::timeout(write_timeout, write_all(&mut sink, &mut batch)).await {
                    Ok(Ok(())) => {}
                    _ => break "write failed",
                }
            }
        }
    };
    tracing::debug!(sid = &*engine.sid, reason, "socket.io websocket ended");
    drop(rx);
    let _ = engine.inbound.send(Inbound::TransportClosed).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), sink.close()).await;
}

async fn write_all<S>(sink: &mut S, batch: &mut Vec<Packet>) -> Result<(), S::Error>
where
    S: futures_util::Sink<Message> + Unpin,
{
    for packet in batch.drain(..) {
        for frame in ws_frames(packet) {
            sink.feed(frame).await?;
        }
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_packets_go_out_in_fragments_cut_on_characters() {
        let text = "é".repeat(FRAGMENT_BYTES + 3);
        let frames = ws_frames(Packet::from(text.as_str()));
        assert!(frames.len() >= 2);
        let mut joined = Vec::new();
        for (index, frame) in frames.iter().enumerate() {
            let Message::Frame(frame) = frame else {
                panic!("raw frames expected")
            };
            assert_eq!(frame.header().is_final, index == frames.len() - 1);
            assert!(std::str::from_utf8(frame.payload()).is_ok());
            joined.extend_from_slice(frame.payload());
        }
        assert_eq!(joined, text.as_bytes());
    }
}
