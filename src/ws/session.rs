//! One WebSocket session, driven over any `Sink`/`Stream` pair: registers the socket with the
//! [`Hub`], writes its outbox, answers and dispatches client frames, keeps the heartbeat, and
//! closes on timeout, overflow, flood, oversize frames, shutdown or the client leaving.
//!
//! Owns the transport-neutral message enums ([`InboundMessage`], [`OutboundMessage`]) that the axum adapter converts to and from. Must not
//! depend on axum or the chat domain: the domain is reached only through [`InboundHandler`].

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;

use super::frame::{ClientFrame, Frame, ServerFrame};
use super::heartbeat::{Heartbeat, InboundBudget, Liveness};
use super::hub::{CloseReason, Connection, Hub, Outgoing};

/// A message the session writes to the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundMessage {
    /// A JSON text frame, shared with the other sockets it went to.
    Text(Frame),
    /// A WebSocket ping (the session sends an empty payload).
    Ping(Vec<u8>),
    /// A close frame; the session calls `close` on the sink right after.
    Close(Option<CloseFrame>),
}

/// A message the session reads from the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundMessage {
    Text(String),
    Binary(Vec<u8>),
    /// The transport answers pings itself (tungstenite does); the session only counts them as
    /// signs of life.
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<CloseFrame>),
}

/// A WebSocket close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: String,
}

/// The domain's side of client frames. Calls run inline in the session, one at a time and in
/// order, so they should be quick (a store write, a few hub sends); a call still running at
/// shutdown is dropped.
pub trait InboundHandler: Send + Sync {
    /// `sender` is the authenticated user of the socket; `receiver` is as the client sent it.
    fn typing(
        &self,
        sender: &str,
        receiver: &str,
        is_typing: bool,
    ) -> impl Future<Output = ()> + Send;

    /// `reader` is the authenticated user; `other` is the conversation's other participant.
    fn mark_read(&self, reader: &str, other: &str, seq: u64) -> impl Future<Output = ()> + Send;
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEnd {
    /// The client sent a close frame.
    ClientClosed,
    /// The inbound stream ended without a close frame.
    StreamEnded,
    /// Reading from the socket failed.
    StreamError,
    /// Writing to the socket failed.
    WriteFailed,
    /// A write took longer than `write_timeout`.
    WriteTimeout,
    /// Nothing arrived for `heartbeat_timeout`.
    HeartbeatTimeout,
    /// The outbox overflowed: the client was not reading fast enough.
    Overflow,
    /// The hub closed the socket ([`Hub::disconnect_user`]).
    Disconnected,
    /// The sign-in session ended ([`Hub::end_sessions`]): the client must sign in again.
    SessionEnded,
    /// The server is shutting down.
    Shutdown,
    /// An inbound message was larger than `max_inbound_bytes`.
    MessageTooBig,
    /// The client sent frames faster than its inbound budget.
    Flood,
}

impl SessionEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::ClientClosed => "client closed",
            SessionEnd::StreamEnded => "stream ended",
            SessionEnd::StreamError => "stream error",
            SessionEnd::WriteFailed => "write failed",
            SessionEnd::WriteTimeout => "write timeout",
            SessionEnd::HeartbeatTimeout => "heartbeat timeout",
            SessionEnd::Overflow => "outbox overflow",
            SessionEnd::Disconnected => "disconnected",
            SessionEnd::SessionEnded => "session ended",
            SessionEnd::Shutdown => "server shutting down",
            SessionEnd::MessageTooBig => "message too big",
            SessionEnd::Flood => "too many frames",
        }
    }

    /// The close frame the session sends for this ending; `None` when the client already closed
    /// or the socket is broken.
    pub fn close_frame(self) -> Option<CloseFrame> {
        let code = match self {
            SessionEnd::ClientClosed
            | SessionEnd::StreamEnded
            | SessionEnd::StreamError
            | SessionEnd::WriteFailed => return None,
            SessionEnd::HeartbeatTimeout | SessionEnd::Disconnected => CLOSE_NORMAL,
            SessionEnd::Shutdown => CLOSE_GOING_AWAY,
            // "Try again later": the client should reconnect and catch up with `?after=<seq>`.
            SessionEnd::Overflow | SessionEnd::WriteTimeout => CLOSE_TRY_AGAIN_LATER,
            SessionEnd::MessageTooBig => CLOSE_TOO_BIG,
            // Like HTTP's 401: reconnecting with the same credentials will not work.
            SessionEnd::SessionEnded => CLOSE_SESSION_ENDED,
            SessionEnd::Flood => CLOSE_POLICY_VIOLATION,
        };
        Some(CloseFrame {
            code,
            reason: self.as_str().to_owned(),
        })
    }
}

impl From<CloseReason> for SessionEnd {
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::Overflow => SessionEnd::Overflow,
            CloseReason::Disconnected => SessionEnd::Disconnected,
            CloseReason::SessionEnded => SessionEnd::SessionEnded,
        }
    }
}

pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// In the private range (4000–4999): the session the socket was opened with has ended.
pub const CLOSE_SESSION_ENDED: u16 = 4401;

/// How long the closing handshake may take before the session gives up on it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most outbox frames written before one flush, so a burst costs one flush, not one per frame.
const MAX_BATCH: usize = 64;

/// Runs one socket for `user_id` (opened with sign-in session `session_id`) until it ends, and
/// says why. The socket is registered with `hub` for exactly as long as this runs. `shutdown`
/// completing closes the socket with 1001.
pub async fn run_session<S, R, H, F, SinkError, StreamError>(
    hub: &Hub,
    user_id: &str,
    session_id: Option<&str>,
    sink: S,
    stream: R,
    handler: &H,
    shutdown: F,
) -> SessionEnd
where
    S: Sink<OutboundMessage, Error = SinkError>,
    SinkError: Display,
    R: Stream<Item = Result<InboundMessage, StreamError>>,
    StreamError: Display,
    H: InboundHandler,
    F: Future<Output = ()>,
{
    let config = hub.config();
    let mut connection = hub.connect_in_session(user_id, session_id);
    let started = Instant::now();
    let mut liveness = Liveness::new(started, config.heartbeat_interval, config.heartbeat_timeout);
    let mut budget = InboundBudget::new(started, config.inbound_per_second, config.inbound_burst);
    // Reused for every write, so a session allocates its batch once.
    let mut batch: Vec<OutboundMessage> = Vec::new();

    let heartbeat = tokio::time::sleep_until(liveness.next_deadline());
    tokio::pin!(sink, stream, shutdown, heartbeat);

    let end = loop {
        // Shutdown first; then inbound before outbound, so a pong already received is counted
        // before the heartbeat is judged, and the inbound budget keeps a client from starving
        // its own outbox.
        let event = tokio::select! {
            biased;
            () = &mut shutdown => break SessionEnd::Shutdown,
            inbound = stream.next() => Event::Inbound(inbound),
            outgoing = connection.recv() => Event::Outgoing(outgoing),
            () = &mut heartbeat => Event::Heartbeat,
        };

        match event {
            Event::Inbound(None) => break SessionEnd::StreamEnded,
            Event::Inbound(Some(Err(error))) => {
                tracing::debug!(user_id, %error, "websocket read failed");
                break SessionEnd::StreamError;
            }
            Event::Inbound(Some(Ok(message))) => {
                let now = Instant::now();
                liveness.seen(now);
                if !budget.allow(now) {
                    break SessionEnd::Flood;
                }
                let reply = match message {
                    InboundMessage::Text(text) if text.len() > config.max_inbound_bytes => {
                        break SessionEnd::MessageTooBig
                    }
                    InboundMessage::Binary(data) if data.len() > config.max_inbound_bytes => {
                        break SessionEnd::MessageTooBig
                    }
                    InboundMessage::Text(text) => match ClientFrame::parse(&text) {
                        Ok(ClientFrame::Ping) => Some(ServerFrame::pong().encode()),
                        Ok(ClientFrame::Typing {
                            receiver_id,
                            is_typing,
                        }) => {
                            tokio::select! {
                                biased;
                                () = &mut shutdown => break SessionEnd::Shutdown,
                                () = handler.typing(user_id, &receiver_id, is_typing) => None,
                            }
                        }
                        Ok(ClientFrame::MarkRead {
                            user_id: other,
                            seq,
                        }) => {
                            tokio::select! {
                                biased;
                                () = &mut shutdown => break SessionEnd::Shutdown,
                                () = handler.mark_read(user_id, &other, seq) => None,
                            }
                        }
                        Err(message) => Some(ServerFrame::error(&message).encode()),
                    },
                    InboundMessage::Binary(_) => {
                        Some(ServerFrame::error("binary frames are not supported").encode())
                    }
                    InboundMessage::Ping(_) | InboundMessage::Pong(_) => None,
                    InboundMessage::Close(_) => break SessionEnd::ClientClosed,
                };
                if let Some(reply) = reply {
                    batch.push(OutboundMessage::Text(reply));
                    let written = write_batch(
                        sink.as_mut(),
                        &mut batch,
                        &connection,
                        shutdown.as_mut(),
                        config.write_timeout,
                    );
                    if let Err(end) = written.await {
                        break end;
                    }
                }
            }
            Event::Outgoing(Outgoing::Close(reason)) => break reason.into(),
            Event::Outgoing(Outgoing::Frame(frame)) => {
                batch.push(OutboundMessage::Text(frame));
                let mut closing = None;
                while batch.len() < MAX_BATCH {
                    match connection.try_next() {
                        Some(Outgoing::Frame(frame)) => batch.push(OutboundMessage::Text(frame)),
                        Some(Outgoing::Close(reason)) => {
                            closing = Some(reason);
                            break;
                        }
                        None => break,
                    }
                }
                if let Some(reason) = closing {
                    break reason.into();
                }
                let written = write_batch(
                    sink.as_mut(),
                    &mut batch,
                    &connection,
                    shutdown.as_mut(),
                    config.write_timeout,
                );
                if let Err(end) = written.await {
                    break end;
                }
            }
            Event::Heartbeat => match liveness.check(Instant::now()) {
                Heartbeat::Dead => break SessionEnd::HeartbeatTimeout,
                Heartbeat::Wait(deadline) => heartbeat.as_mut().reset(deadline),
                Heartbeat::Ping => {
                    heartbeat.as_mut().reset(liveness.next_deadline());
                    batch.push(OutboundMessage::Ping(Vec::new()));
                    let written = write_batch(
                        sink.as_mut(),
                        &mut batch,
                        &connection,
                        shutdown.as_mut(),
                        config.write_timeout,
                    );
                    if let Err(end) = written.await {
                        break end;
                    }
                }
            },
        }
    };

    // Deregister before the closing handshake, so presence does not wait on a slow peer.
    let connection_id = connection.id();
    drop(connection);
    tracing::debug!(
        user_id,
        connection_id,
        reason = end.as_str(),
        "websocket session ended"
    );

    let close_frame = end.close_frame();
    let closing = async {
        if let Some(close_frame) = close_frame {
            sink.feed(OutboundMessage::Close(Some(close_frame))).await?;
        }
        sink.close().await
    };
    match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(user_id, connection_id, %error, "websocket close failed"),
        Err(_) => tracing::debug!(user_id, connection_id, "websocket close timed out"),
    }
    end
}

enum Event<E> {
    Inbound(Option<Result<InboundMessage, E>>),
    Outgoing(Outgoing),
    Heartbeat,
}

/// Writes and flushes `batch` (leaving it empty), giving up on shutdown, on a close request from
/// the hub (an overflow while a write is stuck behind a client that stopped reading), or after
/// `timeout`.
async fn write_batch<S, E, F>(
    mut sink: Pin<&mut S>,
    batch: &mut Vec<OutboundMessage>,
    connection: &Connection,
    shutdown: Pin<&mut F>,
    timeout: Duration,
) -> Result<(), SessionEnd>
where
    S: Sink<OutboundMessage, Error = E>,
    E: Display,
    F: Future<Output = ()>,
{
    let write = async {
        for message in batch.drain(..) {
            sink.feed(message).await?;
        }
        sink.flush().await
    };
    let result = tokio::select! {
        biased;
        () = shutdown => Err(SessionEnd::Shutdown),
        reason = connection.closed() => Err(reason.into()),
        written = tokio::time::timeout(timeout, write) => match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::debug!(user_id = connection.user_id(), %error, "websocket write failed");
                Err(SessionEnd::WriteFailed)
            }
            Err(_) => Err(SessionEnd::WriteTimeout),
        },
    };
    // An interrupted write leaves frames behind; they are not sent anywhere else.
    batch.clear();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ending_that_sends_a_close_frame_has_a_valid_code() {
        let endings = [
            SessionEnd::HeartbeatTimeout,
            SessionEnd::Overflow,
            SessionEnd::Disconnected,
            SessionEnd::Shutdown,
            SessionEnd::MessageTooBig,
            SessionEnd::Flood,
            SessionEnd::WriteTimeout,
        ];
        for end in endings {
            let frame = end.close_frame().expect("a close frame");
            assert!(
                (1000..=1014).contains(&frame.code) && frame.code != 1005 && frame.code != 1006
            );
            // Close reasons must fit a control frame (125 bytes minus the code).
            assert!(frame.reason.len() <= 123);
        }
        assert_eq!(SessionEnd::ClientClosed.close_frame(), None);
    }
}
