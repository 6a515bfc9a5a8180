//! Real-time delivery through real WebSocket clients: messages, statuses, presence across tabs,
//! catch-up after a reconnect, typing and read receipts.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{TestServer, User};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn online(frame: &Value) -> HashSet<String> {
    frame
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

/// Reads `getOnlineUsers` frames until one satisfies `check`.
async fn until_online(
    socket: &mut common::Socket,
    check: impl Fn(&HashSet<String>) -> bool,
) -> HashSet<String> {
    loop {
        let users = online(&socket.next_of("getOnlineUsers").await);
        if check(&users) {
            return users;
        }
    }
}

#[tokio::test]
async fn both_participants_get_the_message_and_the_sender_sees_its_states() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let carol = User::signup(&server, "Carol").await;
    let mut alice_socket = alice.socket().await;
    let mut bob_socket = bob.socket().await;
    let mut carol_socket = carol.socket().await;
    until_online(&mut alice_socket, |users| {
        users.contains(&bob.id) && users.contains(&carol.id)
    })
    .await;

    let sent = alice.send(&bob, "hi bob <script>alert(1)</script>").await;
    let received = bob_socket.next_of("newMessage").await;
    assert_eq!(received["_id"], sent["messageId"]);
    assert_eq!(received["senderId"], alice.id.as_str());
    assert_eq!(received["receiverId"], bob.id.as_str());
    assert_eq!(received["text"], "hi bob <script>alert(1)</script>");
    assert_eq!(received["seq"], 1);
    // The sender gets its own queued message back, and the job's states, in order.
    let mut own = None;
    let mut states = Vec::new();
    while states.last() != Some(&json!("completed")) {
        let frame = alice_socket.next().await;
        match frame["type"].as_str() {
            Some("newMessage") => own = Some(frame["data"].clone()),
            Some("messageStatus") => {
                // The frame's exact shape: these three fields and no others.
                let keys: Vec<&String> = frame["data"].as_object().unwrap().keys().collect();
                assert_eq!(keys.len(), 3, "messageStatus fields: {keys:?}");
                assert_eq!(frame.as_object().unwrap().len(), 2, "envelope: {frame}");
                assert_eq!(frame["data"]["messageId"], sent["messageId"]);
                assert_eq!(frame["data"]["jobId"], sent["jobId"]);
                states.push(frame["data"]["state"].clone());
            }
            _ => {}
        }
    }
    assert_eq!(own.as_ref(), Some(&received));
    assert_eq!(
        states,
        vec![json!("waiting"), json!("active"), json!("completed")]
    );
    // The receiver gets a notification; a third user gets nothing.
    let notification = bob_socket.next_of("notification").await;
    assert_eq!(notification["type"], "newMessage");
    let mut keys: Vec<&String> = notification.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["data", "message", "timestamp", "type"]);
    assert!(notification["message"].is_string());
    assert!(notification["timestamp"].is_string());
    assert_eq!(notification["data"]["senderId"], alice.id.as_str());
    let stray = carol_socket
        .collect("newMessage", Duration::from_millis(300))
        .await;
    assert!(stray.is_empty(), "carol saw {stray:?}");
    // Prometheus sees the three open sockets.
    let metrics = alice
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("courier_ws_connections") && line.ends_with(" 3")),
        "{}",
        metrics
            .lines()
            .filter(|line| line.contains("ws_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_second_tab_neither_steals_deliveries_nor_silences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let mut alice_socket = alice.socket().await;
    let mut tab1 = bob.socket().await;
    until_online(&mut alice_socket, |users| users.contains(&bob.id)).await;
    let mut tab2 = bob.socket().await;

    alice.send(&bob, "to both tabs").await;
    assert_eq!(tab1.next_of("newMessage").await["text"], "to both tabs");
    assert_eq!(tab2.next_of("newMessage").await["text"], "to both tabs");

    tab2.close().await;
    alice.send(&bob, "after closing tab 2").await;
    assert_eq!(
        tab1.next_of("newMessage").await["text"],
        "after closing tab 2"
    );
    // Bob stayed online throughout: closing one tab announced nothing.
    let announcements = alice_socket
        .collect("getOnlineUsers", Duration::from_millis(300))
        .await;
    assert!(
        announcements
            .iter()
            .all(|frame| online(frame).contains(&bob.id)),
        "{announcements:?}"
    );

    tab1.close().await;
    until_online(&mut alice_socket, |users| !users.contains(&bob.id)).await;
    server.stop().await;
}

#[tokio::test]
async fn catching_up_after_a_reconnect_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let mut bob_socket = bob.socket().await;
    alice.send(&bob, "m1").await;
    let first = bob_socket.next_of("newMessage").await;
    let mut seen: Vec<u64> = vec![first["seq"].as_u64().unwrap()];
    bob_socket.close().await;

    // Sent while Bob is away.
    for n in 2..=5 {
        alice.send(&bob, &format!("m{n}")).await;
    }
    let last_seen = *seen.last().unwrap();
    let mut bob_socket = bob.socket().await;
    // Sent while Bob reconnects and catches up: may arrive by socket, by history, or both.
    alice.send(&bob, "m6").await;
    common::eventually("all six stored", || async {
        bob.history(&alice, "").await.len() == 6
    })
    .await;
    for message in bob.history(&alice, &format!("?after={last_seen}")).await {
        seen.push(message["seq"].as_u64().unwrap());
    }
    for frame in bob_socket
        .collect("newMessage", Duration::from_millis(300))
        .await
    {
        let seq = frame["seq"].as_u64().unwrap();
        // A client merges by seq (or _id): what it already has is not shown twice.
        if !seen.contains(&seq) {
            seen.push(seq);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(
        bob.history_texts(&alice, "").await,
        ["m1", "m2", "m3", "m4", "m5", "m6"]
    );
    server.stop().await;
}

#[tokio::test]
async fn typing_and_read_receipts_reach_the_other_side() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let mut alice_socket = alice.socket().await;
    let mut bob_socket = bob.socket().await;

    bob_socket
        .send(json!({ "type": "typing", "data": { "receiverId": alice.id, "isTyping": true } }))
        .await;
    let typing = alice_socket.next_of("typing").await;
    assert_eq!(typing, json!({ "senderId": bob.id, "isTyping": true }));

    for n in 1..=3 {
        alice.send(&bob, &format!("unread {n}")).await;
        bob_socket.next_of("newMessage").await;
    }
    let unread = |sidebar: &Value| {
        sidebar
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["_id"] == alice.id.as_str())
            .unwrap()["unreadCount"]
            .clone()
    };
    assert_eq!(unread(&bob.get("/api/messages/users").await.1), 3);
    bob_socket
        .send(json!({ "type": "markRead", "data": { "userId": alice.id, "seq": 2 } }))
        .await;
    let receipt = alice_socket.next_of("messagesRead").await;
    assert_eq!(receipt, json!({ "readerId": bob.id, "upToSeq": 2 }));
    assert_eq!(unread(&bob.get("/api/messages/users").await.1), 1);
    // Alice's sidebar carries Bob's read mark, for read receipts after a reload.
    let (_, alice_sidebar) = alice.get("/api/messages/users").await;
    let bob_row = alice_sidebar
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["_id"] == bob.id.as_str())
        .unwrap();
    assert_eq!(bob_row["readByOtherUpTo"], 2);

    bob_socket.send(json!({ "type": "ping" })).await;
    bob_socket.next_of("pong").await;
    bob_socket.send(json!({ "type": "nonsense" })).await;
    assert!(bob_socket.next_of("error").await["message"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn sockets_need_a_valid_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let alice = User::signup(&server, "Alice").await;
    let ws = server.url("/ws").replacen("http://", "ws://", 1);
    // No cookie, no token; a forged token; a user id alone (the old app's hole).
    for url in [
        ws.clone(),
        format!("{ws}?token=forged"),
        format!("{ws}?userId={}", alice.id),
    ] {
        let error = tokio_tungstenite::connect_async(url.clone())
            .await
            .expect_err(&url);
        match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                assert_eq!(response.status(), 401, "{url}")
            }
            other => panic!("{url}: {other}"),
        }
    }
    // ?token= works for clients that cannot send cookies.
    let request = format!("{ws}?token={}", alice.token())
        .into_client_request()
        .unwrap();
    let (mut stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.to_text().unwrap().contains("getOnlineUsers"));
    server.stop().await;
}

/// Shutdown cancels every socket through the server's cancellation tree and waits for their
/// tasks: each client gets "going away" (1001) and then sees the server drop the connection,
/// `serve` returns, and by then no tracked task is left and the hub holds no socket.
#[tokio::test]
async fn shutdown_closes_every_socket_and_waits_for_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let server = courier::server::Server::start(courier::config::Config::for_tests(dir.path()))
        .await
        .expect("server starts");
    let state = server.state().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let mut sockets = Vec::new();
    for (name, tabs) in [("alice", 2), ("bob", 1)] {
        let response = http
            .post(format!("http://{addr}/api/auth/signup"))
            .json(&json!({
                "fullName": name,
                "email": format!("{name}@example.com"),
                "password": "secret123",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let cookie = response
            .cookies()
            .find(|cookie| cookie.name() == "jwt")
            .expect("a session cookie")
            .value()
            .to_owned();
        for _ in 0..tabs {
            let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
            request
                .headers_mut()
                .insert("cookie", format!("jwt={cookie}").parse().unwrap());
            let (stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            let mut socket = common::Socket { stream };
            // Registered once it has had its first presence frame.
            socket.next_of("getOnlineUsers").await;
            sockets.push(socket);
        }
    }
    let (_, hub) = state.realtime().unwrap();
    assert_eq!(hub.connection_count(), 3);

    stop.send(()).unwrap();
    for socket in &mut sockets {
        assert_eq!(socket.closed_code().await, Some(1001));
        let end = tokio::time::timeout(Duration::from_secs(10), socket.stream.next())
            .await
            .expect("the server drops the connection within 10 s");
        assert!(
            !matches!(end, Some(Ok(_))),
            "nothing follows the close: {end:?}"
        );
    }
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("shutdown returns within 30 s")
        .unwrap()
        .expect("the server stops cleanly");
    assert!(state.is_shutting_down());
    assert!(
        state.tasks().is_empty(),
        "{} tasks outlived shutdown",
        state.tasks().len()
    );
    assert_eq!(hub.connection_count(), 0);
}
