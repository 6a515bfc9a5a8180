//! The WebSocket fan-out hub and session driver, over real tokio channels (no HTTP).
//!
//! Hub tests drive `Connection`s directly; session tests run `run_session` in a task with a
//! channel-backed sink and stream, as the axum adapter will with a real socket. Time-based
//! behaviour (heartbeats, close timeouts) runs on a paused clock.

use std::convert::Infallible;
use std::time::Duration;

use courier::ws::{
    run_session, CloseReason, Connection, Frame, Hub, HubConfig, InboundHandler, InboundMessage,
    OutboundMessage, Outgoing, ServerFrame, SessionEnd, TypingFrame, CLOSE_GOING_AWAY,
    CLOSE_NORMAL, CLOSE_POLICY_VIOLATION, CLOSE_TOO_BIG, CLOSE_TRY_AGAIN_LATER,
};
use futures_util::{SinkExt, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, PollSender};

// ---------------------------------------------------------------------------------------------
// Hub

/// Every frame the connection has ready now, as parsed JSON.
fn ready(connection: &mut Connection) -> Vec<Value> {
    let mut frames = Vec::new();
    while let Some(next) = connection.try_next() {
        match next {
            Outgoing::Frame(frame) => frames.push(parse(&frame)),
            Outgoing::Close(reason) => panic!("unexpected close: {reason:?}"),
        }
    }
    frames
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("frames are JSON")
}

fn online(users: &[&str]) -> Value {
    json!({"type": "getOnlineUsers", "data": users})
}

fn message(text: &str) -> Frame {
    ServerFrame::NewMessage(&json!({"text": text})).encode()
}

fn message_value(text: &str) -> Value {
    json!({"type": "newMessage", "data": {"text": text}})
}

#[test]
fn a_second_tab_neither_steals_deliveries_nor_silences_the_first() {
    let hub = Hub::default();
    let mut first_tab = hub.connect("alice");
    assert_eq!(ready(&mut first_tab), vec![online(&["alice"])]);

    // A second tab is not a presence change: nobody is re-sent the list, but the new tab gets it.
    let mut second_tab = hub.connect("alice");
    assert_eq!(ready(&mut first_tab), Vec::<Value>::new());
    assert_eq!(ready(&mut second_tab), vec![online(&["alice"])]);
    assert_eq!(hub.user_connection_count("alice"), 2);

    let mut bob = hub.connect("bob");
    assert_eq!(ready(&mut bob), vec![online(&["alice", "bob"])]);
    assert_eq!(ready(&mut first_tab), vec![online(&["alice", "bob"])]);
    assert_eq!(ready(&mut second_tab), vec![online(&["alice", "bob"])]);

    assert_eq!(hub.send_to_user("alice", message("one")), 2);
    assert_eq!(ready(&mut first_tab), vec![message_value("one")]);
    assert_eq!(ready(&mut second_tab), vec![message_value("one")]);

    // Closing the second tab leaves alice online and the first tab still receiving.
    drop(second_tab);
    assert!(hub.is_online("alice"));
    assert_eq!(hub.user_connection_count("alice"), 1);
    assert_eq!(ready(&mut bob), Vec::<Value>::new());
    assert_eq!(hub.send_to_user("alice", message("two")), 1);
    assert_eq!(ready(&mut first_tab), vec![message_value("two")]);

    // The last tab closing is a presence change.
    drop(first_tab);
    assert!(!hub.is_online("alice"));
    assert_eq!(ready(&mut bob), vec![online(&["bob"])]);
    assert_eq!(hub.send_to_user("alice", message("three")), 0);

    let stats = hub.stats();
    assert_eq!(stats.presence_changes, 3, "alice on, bob on, alice off");
    assert_eq!((stats.connections, stats.users_online), (1, 1));
    assert_eq!((stats.connections_opened, stats.connections_closed), (3, 2));
}

#[test]
fn queries_reflect_the_registry() {
    let hub = Hub::default();
    assert_eq!(hub.online_users(), Vec::<String>::new());
    let _carol = hub.connect("carol");
    let _alice_one = hub.connect("alice");
    let alice_two = hub.connect("alice");
    assert_eq!(
        hub.online_users(),
        vec!["alice".to_owned(), "carol".to_owned()]
    );
    assert_eq!(hub.connection_count(), 3);
    assert_eq!(hub.user_connection_count("alice"), 2);
    assert_eq!(hub.user_connection_count("nobody"), 0);
    assert_eq!(alice_two.user_id(), "alice");
    assert!(!hub.is_online("nobody"));
    drop(alice_two);
    assert_eq!(hub.connection_count(), 2);
}

#[test]
fn a_message_reaches_both_participants_once_per_socket() {
    let hub = Hub::default();
    let mut alice_one = hub.connect("alice");
    let mut alice_two = hub.connect("alice");
    let mut bob = hub.connect("bob");
    let mut carol = hub.connect("carol");
    for connection in [&mut alice_one, &mut alice_two, &mut bob, &mut carol] {
        ready(connection);
    }

    assert_eq!(hub.send_to_users(&["alice", "bob"], message("hi")), 3);
    assert_eq!(ready(&mut alice_one), vec![message_value("hi")]);
    assert_eq!(ready(&mut alice_two), vec![message_value("hi")]);
    assert_eq!(ready(&mut bob), vec![message_value("hi")]);
    assert_eq!(ready(&mut carol), Vec::<Value>::new());

    // A message to yourself names you twice and still arrives once per socket.
    assert_eq!(
        hub.send_to_users(&["alice", "alice"], message("note to self")),
        2
    );
    assert_eq!(ready(&mut alice_one), vec![message_value("note to self")]);
    assert_eq!(ready(&mut alice_two), vec![message_value("note to self")]);

    // Long lists dedupe too.
    let mut many = vec!["bob"; 20];
    many.push("carol");
    many.push("nobody");
    assert_eq!(hub.send_to_users(&many, message("many")), 2);
    assert_eq!(ready(&mut bob), vec![message_value("many")]);
    assert_eq!(ready(&mut carol), vec![message_value("many")]);

    assert_eq!(hub.broadcast(message("all")), 4);
    for connection in [&mut alice_one, &mut alice_two, &mut bob, &mut carol] {
        assert_eq!(ready(connection), vec![message_value("all")]);
    }
}

#[tokio::test]
async fn a_slow_socket_is_closed_while_the_others_receive_everything() {
    let hub = Hub::new(HubConfig {
        outbox_capacity: 4,
        ..HubConfig::default()
    });
    let mut slow = hub.connect("slow");
    let mut fast = hub.connect("fast");
    let mut slow_users_other_tab = hub.connect("slow");
    ready(&mut slow);
    ready(&mut fast);
    ready(&mut slow_users_other_tab);

    let mut received = Vec::new();
    for index in 0..10 {
        let frame = message(&index.to_string());
        hub.send_to_users(&["slow", "fast"], frame);
        received.extend(ready(&mut fast));
        ready(&mut slow_users_other_tab);
    }
    let expected: Vec<Value> = (0..10)
        .map(|index| message_value(&index.to_string()))
        .collect();
    assert_eq!(received, expected);

    // Its queued frames are abandoned: the close comes first and stays.
    assert!(slow.overflowed());
    assert_eq!(slow.close_reason(), Some(CloseReason::Overflow));
    assert_eq!(
        slow.try_next(),
        Some(Outgoing::Close(CloseReason::Overflow))
    );
    assert_eq!(slow.recv().await, Outgoing::Close(CloseReason::Overflow));
    assert_eq!(slow.closed().await, CloseReason::Overflow);
    assert!(!fast.overflowed());
    assert!(!slow_users_other_tab.overflowed());

    let stats = hub.stats();
    assert_eq!(stats.sockets_overflowed, 1);
    // 4 queued, the 5th overflowed, 5 more skipped.
    assert_eq!(stats.frames_dropped, 6);
    assert_eq!(stats.frames_queued, 4 + 10 + 10);

    // The user stays online through the other tab until the slow session drops its connection.
    drop(slow);
    assert!(hub.is_online("slow"));
    assert_eq!(hub.send_to_user("slow", message("after")), 1);
}

#[tokio::test]
async fn recv_waits_for_frames_and_wakes_on_close() {
    let hub = Hub::default();
    let mut alice = hub.connect("alice");
    assert_eq!(
        alice.recv().await,
        Outgoing::Frame(ServerFrame::online_users(&["alice"]).encode())
    );

    let sender = hub.clone();
    let send = tokio::spawn(async move {
        tokio::task::yield_now().await;
        sender.send_to_user("alice", message("later"));
    });
    assert_eq!(alice.recv().await, Outgoing::Frame(message("later")));
    send.await.expect("sender task");

    let waiter = tokio::spawn(async move { alice.recv().await });
    tokio::task::yield_now().await;
    assert_eq!(hub.disconnect_user("alice"), 1);
    assert_eq!(
        waiter.await.expect("waiter task"),
        Outgoing::Close(CloseReason::Disconnected)
    );
    assert_eq!(
        hub.connection_count(),
        0,
        "the dropped connection deregistered"
    );
}

#[test]
fn presence_snapshots_alternate_with_queued_frames() {
    let hub = Hub::default();
    let mut alice = hub.connect("alice");
    ready(&mut alice);
    hub.send_to_user("alice", message("one"));
    hub.send_to_user("alice", message("two"));
    let _bob = hub.connect("bob");
    let _carol = hub.connect("carol");
    // Two presence changes collapse into one snapshot of the latest set, and it takes its turn
    // after a queued frame because the last frame alice took was a snapshot.
    assert_eq!(
        ready(&mut alice),
        vec![
            message_value("one"),
            online(&["alice", "bob", "carol"]),
            message_value("two")
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Typing {
        sender: String,
        receiver: String,
        is_typing: bool,
    },
    MarkRead {
        reader: String,
        other: String,
        seq: u64,
    },
}

/// Records calls, and forwards typing to the receiver through the hub as the domain will.
struct Recorder {
    hub: Hub,
    calls: mpsc::UnboundedSender<Call>,
}

impl InboundHandler for Recorder {
    async fn typing(&self, sender: &str, receiver: &str, is_typing: bool) {
        let frame: ServerFrame = ServerFrame::Typing(TypingFrame {
            sender_id: sender,
            is_typing,
        });
        self.hub.send_to_user(receiver, frame.encode());
        let call = Call::Typing {
            sender: sender.into(),
            receiver: receiver.into(),
            is_typing,
        };
        let _ = self.calls.send(call);
    }

    async fn mark_read(&self, reader: &str, other: &str, seq: u64) {
        let _ = self.calls.send(Call::MarkRead {
            reader: reader.into(),
            other: other.into(),
            seq,
        });
    }
}

/// The client's end of one session.
struct Client {
    to_server: mpsc::Sender<InboundMessage>,
    from_server: mpsc::Receiver<OutboundMessage>,
    shutdown: CancellationToken,
    session: JoinHandle<SessionEnd>,
}

fn start(hub: &Hub, user_id: &str, calls: &mpsc::UnboundedSender<Call>) -> Client {
    start_with_sink_capacity(hub, user_id, calls, 1024)
}

/// A session whose socket accepts `sink_capacity` messages before writes wait on the client.
fn start_with_sink_capacity(
    hub: &Hub,
    user_id: &str,
    calls: &mpsc::UnboundedSender<Call>,
    sink_capacity: usize,
) -> Client {
    let (to_server, inbound) = mpsc::channel(1024);
    let (outbound, from_server) = mpsc::channel(sink_capacity);
    let shutdown = CancellationToken::new();
    let handler = Recorder {
        hub: hub.clone(),
        calls: calls.clone(),
    };
    let (hub, user_id, stop) = (hub.clone(), user_id.to_owned(), shutdown.clone());
    let session = tokio::spawn(async move {
        let sink = PollSender::new(outbound);
        run_session(
            &hub,
            &user_id,
            None,
            sink,
            channel_stream(inbound),
            &handler,
            stop.cancelled_owned(),
        )
        .await
    });
    Client {
        to_server,
        from_server,
        shutdown,
        session,
    }
}

fn channel_stream(
    receiver: mpsc::Receiver<InboundMessage>,
) -> impl Stream<Item = Result<InboundMessage, Infallible>> {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|message| (Ok(message), receiver))
    })
}

impl Client {
    async fn send_text(&self, text: &str) {
        self.send(InboundMessage::Text(text.to_owned())).await;
    }

    async fn send(&self, message: InboundMessage) {
        self.to_server
            .send(message)
            .await
            .expect("session is reading");
    }

    async fn next(&mut self) -> OutboundMessage {
        self.from_server
            .recv()
            .await
            .expect("session wrote something")
    }

    async fn next_json(&mut self) -> Value {
        match self.next().await {
            OutboundMessage::Text(text) => parse(&text),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Reads until the close frame, skipping text frames; returns its code.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                OutboundMessage::Close(frame) => return frame.map(|frame| frame.code),
                OutboundMessage::Text(_) | OutboundMessage::Ping(_) => {}
            }
        }
    }

    async fn end(self) -> SessionEnd {
        self.session.await.expect("session task")
    }
}

fn calls() -> (mpsc::UnboundedSender<Call>, mpsc::UnboundedReceiver<Call>) {
    mpsc::unbounded_channel()
}

#[tokio::test(start_paused = true)]
async fn typing_and_mark_read_reach_the_handler() {
    let hub = Hub::default();
    let (record, mut recorded) = calls();
    let mut alice = start(&hub, "alice", &record);
    assert_eq!(alice.next_json().await, online(&["alice"]));
    let mut bob = start(&hub, "bob", &record);
    assert_eq!(bob.next_json().await, online(&["alice", "bob"]));
    assert_eq!(alice.next_json().await, online(&["alice", "bob"]));

    alice
        .send_text(r#"{"type":"typing","data":{"receiverId":"bob","isTyping":true}}"#)
        .await;
    let expected = Call::Typing {
        sender: "alice".into(),
        receiver: "bob".into(),
        is_typing: true,
    };
    assert_eq!(recorded.recv().await, Some(expected));
    assert_eq!(
        bob.next_json().await,
        json!({"type": "typing", "data": {"senderId": "alice", "isTyping": true}})
    );

    bob.send_text(r#"{"type":"markRead","data":{"userId":"alice","seq":7}}"#)
        .await;
    let expected = Call::MarkRead {
        reader: "bob".into(),
        other: "alice".into(),
        seq: 7,
    };
    assert_eq!(recorded.recv().await, Some(expected));

    alice.shutdown.cancel();
    bob.shutdown.cancel();
    assert_eq!(alice.end().await, SessionEnd::Shutdown);
    assert_eq!(bob.end().await, SessionEnd::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn ping_gets_pong_and_bad_frames_get_errors_without_closing() {
    let hub = Hub::default();
    let (record, _recorded) = calls();
    let mut alice = start(&hub, "alice", &record);
    assert_eq!(alice.next_json().await, online(&["alice"]));

    alice.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(
        alice.next().await,
        OutboundMessage::Text(Frame::from(r#"{"type":"pong"}"#))
    );

    for bad in [
        "{not json",
        r#"{"type":"shout","data":{}}"#,
        r#"{"type":"markRead","data":{"userId":"b"}}"#,
    ] {
        alice.send_text(bad).await;
        let reply = alice.next_json().await;
        assert_eq!(reply["type"], "error", "{bad}");
        let explanation = reply["data"]["message"].as_str().expect("an error message");
        assert!(explanation.starts_with("invalid frame"), "{explanation}");
    }
    alice.send(InboundMessage::Binary(vec![1, 2, 3])).await;
    assert_eq!(
        alice.next_json().await,
        json!({"type": "error", "data": {"message": "binary frames are not supported"}})
    );

    // Still open, still answering.
    alice.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(alice.next_json().await, json!({"type": "pong"}));
    assert!(hub.is_online("alice"));

    // The client leaving ends the session and its presence.
    alice.send(InboundMessage::Close(None)).await;
    let Client {
        from_server: mut replies,
        session,
        ..
    } = alice;
    assert_eq!(
        session.await.expect("session task"),
        SessionEnd::ClientClosed
    );
    assert!(!hub.is_online("alice"));
    assert_eq!(
        replies.recv().await,
        None,
        "no close frame echoed; the sink was closed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_pinged_then_closed_on_heartbeat_timeout() {
    let hub = Hub::default();
    let (record, _recorded) = calls();
    let started = Instant::now();
    let mut alice = start(&hub, "alice", &record);
    assert_eq!(alice.next_json().await, online(&["alice"]));

    assert_eq!(alice.next().await, OutboundMessage::Ping(Vec::new()));
    assert_eq!(started.elapsed(), Duration::from_secs(25));
    assert_eq!(alice.next().await, OutboundMessage::Ping(Vec::new()));
    assert_eq!(started.elapsed(), Duration::from_secs(50));
    assert_eq!(alice.close_code().await, Some(CLOSE_NORMAL));
    assert_eq!(started.elapsed(), Duration::from_secs(60));

    assert_eq!(alice.end().await, SessionEnd::HeartbeatTimeout);
    assert!(!hub.is_online("alice"));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_pings_stays_connected() {
    let hub = Hub::default();
    let (record, _recorded) = calls();
    let started = Instant::now();
    let mut alice = start(&hub, "alice", &record);
    assert_eq!(alice.next_json().await, online(&["alice"]));
    for _ in 0..12 {
        assert_eq!(alice.next().await, OutboundMessage::Ping(Vec::new()));
        alice.send(InboundMessage::Pong(Vec::new())).await;
    }
    assert_eq!(started.elapsed(), Duration::from_secs(12 * 25));
    assert!(hub.is_online("alice"));

    alice.shutdown.cancel();
    assert_eq!(alice.close_code().await, Some(CLOSE_GOING_AWAY));
    assert_eq!(alice.end().await, SessionEnd::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_every_session() {
    let hub = Hub::default();
    let (record, _recorded) = calls();
    let mut alice = start(&hub, "alice", &record);
    let mut bob = start(&hub, "bob", &record);
    alice.next_json().await;
    bob.next_json().await;
    assert_eq!(hub.connection_count(), 2);

    alice.shutdown.cancel();
    bob.shutdown.cancel();
    assert_eq!(alice.close_code().await, Some(CLOSE_GOING_AWAY));
    assert_eq!(bob.close_code().await, Some(CLOSE_GOING_AWAY));
    assert_eq!(alice.end().await, SessionEnd::Shutdown);
    assert_eq!(bob.end().await, SessionEnd::Shutdown);
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn closing_one_tab_leaves_the_other_receiving() {
    let hub = Hub::default();
    let (record, _recorded) = calls();
    let mut first_tab = start(&hub, "alice", &record);
    assert_eq!(first_tab.next_json().await, online(&["alice"]));
    let mut second_tab = start(&hub, "alice", &record);
    assert_eq!(second_tab.next_json().await, online(&["alice"]));

    hub.send_to_users(&["alice", "bob"], message("both tabs"));
    assert_eq!(first_tab.next_json().await, message_value("both tabs"));
    assert_eq!(second_tab.next_json().await, message_value("both tabs"));

    second_tab.send(InboundMessage::Close(None)).await;
    assert_eq!(second_tab.end().await, SessionEnd::ClientClosed);
    assert!(hub.is_online("alice"));

    hub.send_to_users(&["alice", "bob"], message("first tab only"));
    assert_eq!(first_tab.next_json().await, message_value("first tab only"));

    // The client's inbound half vanishing ends the stream.
    let Client {
        to_server,
        from_server: _kept,
        session,
        ..
    } = first_tab;
    drop(to_server);
    assert_eq!(
        session.await.expect("session task"),
        SessionEnd::StreamEnded
    );
    assert!(!hub.is_online("alice"));
}

#[tokio::test(start_paused = true)]
async fn a_session_stuck_behind_a_slow_client_is_closed_on_overflow() {
    let hub = Hub::new(HubConfig {
        outbox_capacity: 8,
        ..HubConfig::default()
    });
    let (record, _recorded) = calls();
    // The slow client's socket takes one message and then never reads.
    let slow = start_with_sink_capacity(&hub, "slow", &record, 1);
    let mut fast = start(&hub, "fast", &record);
    assert_eq!(fast.next_json().await, online(&["fast", "slow"]));
    tokio::task::yield_now().await;

    let mut received = Vec::new();
    for index in 0..100 {
        hub.send_to_users(&["slow", "fast"], message(&index.to_string()));
        while received.len() <= index {
            let frame = fast.next_json().await;
            if frame["type"] == "newMessage" {
                received.push(frame);
            }
        }
    }
    assert_eq!(received.len(), 100);

    // The slow session was stuck writing; the overflow closes it anyway.
    let Client {
        session,
        from_server: _never_read,
        ..
    } = slow;
    assert_eq!(session.await.expect("session task"), SessionEnd::Overflow);
    assert!(!hub.is_online("slow"));
    assert_eq!(hub.stats().sockets_overflowed, 1);
    assert!(hub.is_online("fast"));
}

#[tokio::test(start_paused = true)]
async fn oversized_frames_and_floods_close_the_socket() {
    let config = HubConfig {
        max_inbound_bytes: 1024,
        inbound_per_second: 10,
        inbound_burst: 5,
        ..HubConfig::default()
    };
    let hub = Hub::new(config);
    let (record, _recorded) = calls();

    let mut big = start(&hub, "big", &record);
    big.next_json().await;
    big.send_text(&format!(
        r#"{{"type":"ping","data":"{}"}}"#,
        "x".repeat(2000)
    ))
    .await;
    assert_eq!(big.close_code().await, Some(CLOSE_TOO_BIG));
    assert_eq!(big.end().await, SessionEnd::MessageTooBig);

    let mut flood = start(&hub, "flood", &record);
    flood.next_json().await;
    for _ in 0..5 {
        flood.send_text(r#"{"type":"ping"}"#).await;
        assert_eq!(flood.next_json().await, json!({"type": "pong"}));
    }
    flood.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(flood.close_code().await, Some(CLOSE_POLICY_VIOLATION));
    assert_eq!(flood.end().await, SessionEnd::Flood);
}

#[tokio::test(start_paused = true)]
async fn disconnect_user_closes_all_their_sessions() {
    let hub = Hub::default();
    let (record, _recorded) = calls();
    let mut first_tab = start(&hub, "alice", &record);
    let mut second_tab = start(&hub, "alice", &record);
    first_tab.next_json().await;
    second_tab.next_json().await;

    assert_eq!(hub.disconnect_user("alice"), 2);
    assert_eq!(first_tab.close_code().await, Some(CLOSE_NORMAL));
    assert_eq!(second_tab.close_code().await, Some(CLOSE_NORMAL));
    assert_eq!(first_tab.end().await, SessionEnd::Disconnected);
    assert_eq!(second_tab.end().await, SessionEnd::Disconnected);
    assert!(!hub.is_online("alice"));
}

#[tokio::test(start_paused = true)]
async fn an_overflowed_session_sends_try_again_later() {
    let hub = Hub::new(HubConfig {
        outbox_capacity: 2,
        ..HubConfig::default()
    });
    let (record, _recorded) = calls();
    let mut alice = start(&hub, "alice", &record);
    alice.next_json().await;
    // The session task has not run between these sends, so the third overflows the outbox.
    for index in 0..3 {
        hub.send_to_user("alice", message(&index.to_string()));
    }
    assert_eq!(alice.close_code().await, Some(CLOSE_TRY_AGAIN_LATER));
    assert_eq!(alice.end().await, SessionEnd::Overflow);
}

/// The sink half is an ordinary `Sink`, so adapters can map it; a broken one ends the session.
#[tokio::test(start_paused = true)]
async fn a_failing_sink_ends_the_session() {
    let hub = Hub::default();
    let (outbound, from_server) = mpsc::channel::<OutboundMessage>(1);
    drop(from_server);
    let sink = PollSender::new(outbound).sink_map_err(|error| error.to_string());
    let (_to_server, inbound) = mpsc::channel(1);
    let (record, _recorded) = calls();
    let handler = Recorder {
        hub: hub.clone(),
        calls: record,
    };
    let end = run_session(
        &hub,
        "alice",
        None,
        sink,
        channel_stream(inbound),
        &handler,
        std::future::pending(),
    )
    .await;
    assert_eq!(end, SessionEnd::WriteFailed);
    assert_eq!(hub.connection_count(), 0);
}

/// The exact bytes of the frames the hub and the session build themselves (presence, pong,
/// errors); the chat events' frames are pinned in `http::socket`. A failing one means the wire
/// changed.
#[tokio::test(start_paused = true)]
async fn session_frames_keep_their_exact_wire_form() {
    let hub = Hub::default();
    let (record, _recorded) = calls();
    let mut alice = start(&hub, "alice", &record);
    let text = |message: OutboundMessage| match message {
        OutboundMessage::Text(text) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    };
    assert_eq!(
        text(alice.next().await),
        r#"{"type":"getOnlineUsers","data":["alice"]}"#
    );
    let _bob = hub.connect("bob");
    assert_eq!(
        text(alice.next().await),
        r#"{"type":"getOnlineUsers","data":["alice","bob"]}"#
    );
    // A viewer with someone hidden gets a list of their own.
    hub.hide_presence("alice", vec!["bob".to_owned()]);
    assert_eq!(
        text(alice.next().await),
        r#"{"type":"getOnlineUsers","data":["alice"]}"#
    );
    let cases = [
        (r#"{"type":"ping"}"#, r#"{"type":"pong"}"#),
        (
            r#"{"type":"shout","data":{}}"#,
            r#"{"type":"error","data":{"message":"invalid frame: unknown variant `shout`, expected one of `typing`, `markRead`, `ping` at line 1 column 15"}}"#,
        ),
        (
            r#"{"type":"markRead","data":{"userId":"b\"c"}}"#,
            r#"{"type":"error","data":{"message":"invalid frame: missing field `seq` at line 1 column 43"}}"#,
        ),
    ];
    for (sent, expected) in cases {
        alice.send_text(sent).await;
        assert_eq!(text(alice.next().await), expected, "{sent}");
    }
    alice.send(InboundMessage::Binary(vec![1])).await;
    assert_eq!(
        text(alice.next().await),
        r#"{"type":"error","data":{"message":"binary frames are not supported"}}"#
    );
    alice.shutdown.cancel();
    assert_eq!(alice.end().await, SessionEnd::Shutdown);
}
