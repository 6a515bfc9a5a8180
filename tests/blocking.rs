//! Blocking: the blocked user can no longer message the blocker or see them online (on the
//! sidebar or in `getOnlineUsers`), typing stops both ways, and it all holds after a restart
//! until the block is lifted.

mod common;

use std::time::Duration;

use common::{eventually, TestServer, User};
use serde_json::{json, Value};

fn server_url(user: &User, path: &str) -> String {
    format!("{}{path}", user.base_url())
}

async fn set_block(user: &User, other: &User, on: bool) -> u16 {
    let url = server_url(user, &format!("/api/users/{}/block", other.id));
    let request = if on {
        user.http.post(url)
    } else {
        user.http.delete(url)
    };
    request.send().await.unwrap().status().as_u16()
}

async fn shown_online(viewer: &User, other: &User) -> bool {
    let (_, sidebar) = viewer.get("/api/messages/users").await;
    sidebar
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["_id"] == other.id.as_str())
        .map(|user| user["online"] == true)
        .unwrap()
}

fn lists(frame: &Value, id: &str) -> bool {
    frame.as_array().unwrap().iter().any(|user| user == id)
}

#[tokio::test]
async fn a_blocked_user_cannot_message_or_see_the_blocker_online() {
    let server = TestServer::memory().await;
    let bob = User::signup(&server, "Bob").await;
    let mallory = User::signup(&server, "Mallory").await;
    let carol = User::signup(&server, "Carol").await;
    let mut bob_socket = bob.socket().await;
    let mut mallory_socket = mallory.socket().await;
    eventually("mallory sees bob online", || async {
        shown_online(&mallory, &bob).await
    })
    .await;

    assert_eq!(set_block(&bob, &mallory, true).await, 204);
    assert_eq!(set_block(&bob, &mallory, true).await, 204, "idempotent");
    // Mallory's open socket gets a presence list without Bob at once.
    loop {
        let online = mallory_socket.next_of("getOnlineUsers").await;
        if !lists(&online, &bob.id) {
            break;
        }
    }
    assert!(!shown_online(&mallory, &bob).await);
    assert!(shown_online(&carol, &bob).await, "others still see Bob");

    let (status, body) = mallory.send_json(&bob.id, json!({ "text": "hi" })).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["message"], "This user does not accept your messages");
    let (status, _) = bob.send_json(&mallory.id, json!({ "text": "hi" })).await;
    assert_eq!(status, 403, "the blocker must unblock to write");
    assert!(bob.history(&mallory, "").await.is_empty());

    // Typing stops too; Carol's still arrives (the positive control).
    mallory_socket
        .send(json!({ "type": "typing", "data": { "receiverId": bob.id, "isTyping": true } }))
        .await;
    let mut carol_socket = carol.socket().await;
    carol_socket
        .send(json!({ "type": "typing", "data": { "receiverId": bob.id, "isTyping": true } }))
        .await;
    let typing = bob_socket
        .collect("typing", Duration::from_millis(500))
        .await;
    assert!(
        typing
            .iter()
            .all(|frame| frame["senderId"] == carol.id.as_str()),
        "{typing:?}"
    );
    assert!(!typing.is_empty(), "Carol's typing arrives");

    // A new socket of Mallory's starts without Bob in its presence list.
    let mut second = mallory.socket().await;
    let online = second.next_of("getOnlineUsers").await;
    assert!(!lists(&online, &bob.id), "{online}");

    let (status, blocked) = bob.get("/api/users/blocked").await;
    assert_eq!(status, 200);
    assert_eq!(
        blocked,
        json!([{ "_id": mallory.id, "fullName": "Mallory", "profilePic": "" }])
    );
    let (_, sidebar) = bob.get("/api/messages/users").await;
    let entry = sidebar
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["_id"] == mallory.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["isBlocked"], true);

    assert_eq!(set_block(&bob, &bob, true).await, 400);
    let url = server.url("/api/users/0123456789abcdef01234567/block");
    assert_eq!(bob.http.post(url).send().await.unwrap().status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn a_block_lasts_across_a_restart_until_it_is_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let bob = User::signup(&server, "Bob").await;
    let mallory = User::signup(&server, "Mallory").await;
    assert_eq!(set_block(&bob, &mallory, true).await, 204);
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let bob = User::login(&server, &bob.email, "secret123").await.unwrap();
    let mallory = User::login(&server, &mallory.email, "secret123")
        .await
        .unwrap();
    let _bob_socket = bob.socket().await;
    let mut mallory_socket = mallory.socket().await;
    let online = mallory_socket.next_of("getOnlineUsers").await;
    assert!(!lists(&online, &bob.id), "{online}");
    assert!(!shown_online(&mallory, &bob).await);
    let (status, _) = mallory.send_json(&bob.id, json!({ "text": "hi" })).await;
    assert_eq!(status, 403);

    assert_eq!(set_block(&bob, &mallory, false).await, 204);
    loop {
        let online = mallory_socket.next_of("getOnlineUsers").await;
        if lists(&online, &bob.id) {
            break;
        }
    }
    assert!(shown_online(&mallory, &bob).await);
    let (status, body) = mallory.send_json(&bob.id, json!({ "text": "sorry" })).await;
    assert_eq!(status, 202, "{body}");
    server.stop().await;
}
