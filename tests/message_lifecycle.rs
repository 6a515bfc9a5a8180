//! The message life-cycle through the real server: edit, delete, reactions, replies and
//! attachments over HTTP, their events on real WebSockets (both participants, a second tab, and
//! never a third user), catch-up with `?updatedAfter=`, and the authorization matrix: a third
//! user can neither read, edit, delete nor react to another conversation's message, and every
//! refused request leaves the message as it was.

mod common;

use base64::Engine as _;
use common::{eventually, Socket, TestServer, User};
use serde_json::{json, Value};

#[allow(dead_code)]
#[path = "../src/chat/images/test_images.rs"]
mod test_images;

/// Sends `body` from `from` to `to` and waits until the message is saved; its id.
async fn send_saved(from: &User, to: &User, body: Value) -> String {
    let (status, sent) = from.send_json(&to.id, body).await;
    assert_eq!(status, 202, "send: {sent}");
    let id = sent["messageId"].as_str().unwrap().to_owned();
    eventually("the message is saved", || async {
        message_in(from, to, &id).await.is_some()
    })
    .await;
    id
}

/// Message `id` as `viewer` sees it in the conversation with `other`.
async fn message_in(viewer: &User, other: &User, id: &str) -> Option<Value> {
    viewer
        .history(other, "?limit=200")
        .await
        .into_iter()
        .find(|message| message["_id"] == id)
}

async fn request(
    user: &User,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = user
        .http
        .request(method, format!("{}{path}", user.base_url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn edit(user: &User, id: &str, body: Value) -> (u16, Value) {
    request(
        user,
        reqwest::Method::PUT,
        &format!("/api/messages/edit/{id}"),
        Some(body),
    )
    .await
}

async fn delete(user: &User, id: &str) -> (u16, Value) {
    request(
        user,
        reqwest::Method::DELETE,
        &format!("/api/messages/{id}"),
        None,
    )
    .await
}

async fn react(user: &User, id: &str, reaction: &str, add: bool) -> (u16, Value) {
    let method = if add {
        reqwest::Method::POST
    } else {
        reqwest::Method::DELETE
    };
    request(
        user,
        method,
        &format!("/api/messages/reaction/{id}"),
        Some(json!({ "reaction": reaction })),
    )
    .await
}

async fn reactions(user: &User, id: &str) -> (u16, Value) {
    user.get(&format!("/api/messages/reaction/{id}")).await
}

/// A refusal: `status` and a `{"message": ...}` body.
fn refused(answer: &(u16, Value), status: u16) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert!(
        answer.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a message says why: {}",
        answer.1
    );
}

async fn three_users(server: &TestServer) -> (User, User, User) {
    (
        User::signup(server, "Alice").await,
        User::signup(server, "Bob").await,
        User::signup(server, "Carol").await,
    )
}

/// The frames of the life-cycle events `socket` gets before the `newMessage` of `marker`: the
/// marker is sent after the events under test, and frames arrive in order, so whatever was
/// going to reach this socket has by then.
async fn events_before(socket: &mut Socket, marker: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let frame = socket.next().await;
        match frame["type"].as_str() {
            Some("newMessage") if frame["data"]["_id"] == marker => return events,
            Some("messageEdited" | "messageDeleted" | "message_reaction_update") => {
                events.push(frame);
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn edits_keep_their_history_and_reach_history_and_sockets() {
    let server = TestServer::memory().await;
    let (alice, bob, _carol) = three_users(&server).await;
    let id = send_saved(&alice, &bob, json!({ "text": "helo" })).await;
    let mut bob_socket = bob.socket().await;
    let mut alice_tab_1 = alice.socket().await;
    let mut alice_tab_2 = alice.socket().await;

    let (status, edited) = edit(&alice, &id, json!({ "text": "hello" })).await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["text"], "hello");
    assert_eq!(edited["isEdited"], true);
    assert_eq!(edited["editHistory"][0]["text"], "helo");
    assert!(edited["editHistory"][0]["editedAt"].is_string());

    for socket in [&mut bob_socket, &mut alice_tab_1, &mut alice_tab_2] {
        let event = socket.next_of("messageEdited").await;
        assert_eq!(event["messageId"], id.as_str());
        assert_eq!(event["text"], "hello");
        assert_eq!(event["isEdited"], true);
        assert_eq!(event["editHistory"][0]["text"], "helo");
        assert_eq!(event["changeSeq"], edited["changeSeq"]);
    }
    let seen = message_in(&bob, &alice, &id).await.unwrap();
    assert_eq!(seen["text"], "hello");
    assert_eq!(seen["isEdited"], true);
    assert_eq!(seen["editHistory"].as_array().unwrap().len(), 1);

    // The same text again changes nothing and sends nothing; a new one adds to the history.
    let (status, same) = edit(&alice, &id, json!({ "text": "hello" })).await;
    assert_eq!(status, 200);
    assert_eq!(same["changeSeq"], edited["changeSeq"]);
    let (_, again) = edit(&alice, &id, json!({ "text": "hello!" })).await;
    let texts: Vec<&str> = again["editHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edit| edit["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["helo", "hello"]);
    let event = bob_socket.next_of("messageEdited").await;
    assert_eq!(event["text"], "hello!", "the repeated edit sent no event");
    server.stop().await;
}

#[tokio::test]
async fn deletes_are_soft_and_reach_both_users_and_every_tab() {
    let server = TestServer::memory().await;
    let (alice, bob, _carol) = three_users(&server).await;
    let id = send_saved(&alice, &bob, json!({ "text": "oops" })).await;
    let (status, _) = react(&bob, &id, "👍", true).await;
    assert_eq!(status, 200);
    let mut bob_tab_1 = bob.socket().await;
    let mut bob_tab_2 = bob.socket().await;
    let mut alice_socket = alice.socket().await;

    let (status, deleted) = delete(&alice, &id).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["isDeleted"], true);
    assert!(deleted["deletedAt"].is_string());
    for socket in [&mut bob_tab_1, &mut bob_tab_2, &mut alice_socket] {
        let event = socket.next_of("messageDeleted").await;
        assert_eq!(event["messageId"], id.as_str());
        assert_eq!(event["isDeleted"], true);
        assert_eq!(event["deletedAt"], deleted["deletedAt"]);
    }
    let seen = message_in(&bob, &alice, &id).await.expect("still listed");
    assert_eq!(seen["isDeleted"], true);
    assert_eq!(seen["text"], "");
    assert_eq!(seen["reactions"], json!([]));
    // Deleting again is fine and changes nothing; editing or reacting now is refused.
    let (status, again) = delete(&alice, &id).await;
    assert_eq!(status, 200);
    assert_eq!(again["deletedAt"], deleted["deletedAt"]);
    refused(&edit(&alice, &id, json!({ "text": "back" })).await, 400);
    refused(&react(&bob, &id, "🎉", true).await, 400);
    assert_eq!(message_in(&alice, &bob, &id).await.unwrap(), seen);
    server.stop().await;
}

#[tokio::test]
async fn reactions_are_listed_counted_and_pushed_to_participants_only() {
    let server = TestServer::memory().await;
    let (alice, bob, carol) = three_users(&server).await;
    let id = send_saved(&alice, &bob, json!({ "text": "party?" })).await;
    let mut alice_tab_1 = alice.socket().await;
    let mut alice_tab_2 = alice.socket().await;
    let mut bob_socket = bob.socket().await;
    let mut carol_socket = carol.socket().await;

    let (status, body) = react(&bob, &id, "🎉", true).await;
    assert_eq!(status, 200, "{body}");
    react(&alice, &id, "🎉", true).await;
    let (_, body) = react(&alice, &id, "+1", true).await;
    assert_eq!(
        body["reactions"],
        json!([
            {"emoji": "🎉", "users": [bob.id, alice.id], "count": 2},
            {"emoji": "+1", "users": [alice.id], "count": 1},
        ])
    );
    let (status, listed) = reactions(&bob, &id).await;
    assert_eq!(status, 200);
    assert_eq!(listed["reactions"], body["reactions"]);
    let (_, body) = react(&alice, &id, "+1", false).await;
    assert_eq!(body["reactions"].as_array().unwrap().len(), 1);
    let seen = message_in(&bob, &alice, &id).await.unwrap();
    assert_eq!(
        seen["reactions"],
        json!([{"emoji": "🎉", "users": [bob.id, alice.id], "count": 2}])
    );

    for socket in [&mut alice_tab_1, &mut alice_tab_2, &mut bob_socket] {
        let mut updates = Vec::new();
        for _ in 0..4 {
            let update = socket.next_of("message_reaction_update").await;
            assert_eq!(update["messageId"], id.as_str());
            updates.push((
                update["reaction"].as_str().unwrap().to_owned(),
                update["userId"].as_str().unwrap().to_owned(),
                update["isAdd"].as_bool().unwrap(),
            ));
        }
        assert_eq!(
            updates,
            [
                ("🎉".to_owned(), bob.id.clone(), true),
                ("🎉".to_owned(), alice.id.clone(), true),
                ("+1".to_owned(), alice.id.clone(), true),
                ("+1".to_owned(), alice.id.clone(), false),
            ]
        );
    }
    // Carol's socket got none of it: the marker sent to her afterwards is the first event.
    let marker = send_saved(&alice, &carol, json!({ "text": "marker" })).await;
    assert!(events_before(&mut carol_socket, &marker).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_third_user_can_neither_read_edit_delete_nor_react() {
    let server = TestServer::memory().await;
    let (alice, bob, carol) = three_users(&server).await;
    let id = send_saved(&alice, &bob, json!({ "text": "between us" })).await;
    react(&bob, &id, "👍", true).await;
    let before = message_in(&alice, &bob, &id).await.unwrap();
    let mut alice_socket = alice.socket().await;
    let mut bob_socket = bob.socket().await;
    let mut carol_socket = carol.socket().await;

    // Someone else's message is not found, whatever is asked of it.
    refused(&reactions(&carol, &id).await, 404);
    refused(&edit(&carol, &id, json!({ "text": "mine" })).await, 404);
    refused(&delete(&carol, &id).await, 404);
    refused(&react(&carol, &id, "👎", true).await, 404);
    refused(&react(&carol, &id, "👍", false).await, 404);
    // Nor can she quote it in her own conversations.
    refused(
        &carol
            .send_json(&alice.id, json!({ "text": "look", "replyTo": id }))
            .await,
        400,
    );
    // The other participant may react but not edit or delete.
    refused(&edit(&bob, &id, json!({ "text": "mine" })).await, 403);
    refused(&delete(&bob, &id).await, 403);
    // Unknown ids are the same not found.
    refused(
        &edit(&alice, "0123456789abcdef01234567", json!({ "text": "x" })).await,
        404,
    );
    refused(&delete(&alice, &"x".repeat(500)).await, 404);

    assert_eq!(message_in(&alice, &bob, &id).await.unwrap(), before);
    let marker = send_saved(&alice, &bob, json!({ "text": "marker" })).await;
    assert!(events_before(&mut alice_socket, &marker).await.is_empty());
    assert!(events_before(&mut bob_socket, &marker).await.is_empty());
    let marker = send_saved(&alice, &carol, json!({ "text": "marker" })).await;
    assert!(events_before(&mut carol_socket, &marker).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn edits_end_with_the_edit_window() {
    // A window of 0 minutes: every message is already past it when it can be edited.
    let server = TestServer::memory_with(|config| config.message_edit_window_minutes = 0).await;
    let (alice, bob, _carol) = three_users(&server).await;
    let id = send_saved(&alice, &bob, json!({ "text": "final" })).await;
    let before = message_in(&alice, &bob, &id).await.unwrap();
    let answer = edit(&alice, &id, json!({ "text": "changed" })).await;
    refused(&answer, 403);
    assert!(answer.1["message"].as_str().unwrap().contains("0 minutes"));
    assert_eq!(message_in(&alice, &bob, &id).await.unwrap(), before);
    // Deleting and reacting have no window.
    assert_eq!(react(&bob, &id, "👍", true).await.0, 200);
    assert_eq!(delete(&alice, &id).await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_refused_and_change_nothing() {
    let server = TestServer::memory().await;
    let (alice, bob, _carol) = three_users(&server).await;
    let id = send_saved(&alice, &bob, json!({ "text": "steady" })).await;
    let before = message_in(&alice, &bob, &id).await.unwrap();

    for body in [
        json!({}),
        json!({ "text": 5 }),
        json!({ "text": "   " }),
        json!({ "text": "x".repeat(10_001) }),
    ] {
        refused(&edit(&alice, &id, body).await, 400);
    }
    let raw = alice
        .http
        .put(format!("{}/api/messages/edit/{id}", alice.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    for reaction in [
        json!({}),
        json!({ "reaction": "" }),
        json!({ "reaction": "👍👍" }),
        json!({ "reaction": "<img src=x>" }),
        json!({ "reaction": "x".repeat(33) }),
        json!({ "reaction": 1 }),
    ] {
        let answer = request(
            &bob,
            reqwest::Method::POST,
            &format!("/api/messages/reaction/{id}"),
            Some(reaction.clone()),
        )
        .await;
        refused(&answer, 400);
    }
    // At most 20 different reactions on a message.
    for n in 0..20 {
        assert_eq!(react(&bob, &id, &format!("r{n}"), true).await.0, 200);
    }
    refused(&react(&bob, &id, "r20", true).await, 400);
    let (_, listed) = reactions(&alice, &id).await;
    assert_eq!(listed["reactions"].as_array().unwrap().len(), 20);
    for n in 0..20 {
        react(&bob, &id, &format!("r{n}"), false).await;
    }
    assert_eq!(
        message_in(&alice, &bob, &id).await.unwrap()["text"],
        before["text"]
    );

    // Sends: a reply to something that is not in this conversation, a file not uploaded here.
    let hash = "ab".repeat(32);
    for body in [
        json!({ "text": "re", "replyTo": "0123456789abcdef01234567" }),
        json!({ "text": "f", "fileUrl": "https://evil.example/x.html", "fileName": "x.html" }),
        json!({ "text": "f", "fileUrl": format!("/api/files/{hash}/../../x"), "fileName": "x" }),
        json!({ "text": "f", "fileUrl": format!("/api/files/{hash}"), "fileName": "n".repeat(256) }),
        json!({ "text": "f", "fileUrl": format!("/api/files/{hash}"), "fileName": "a", "mimeType": "text/html; x" }),
        json!({ "fileName": "no url" }),
    ] {
        refused(&alice.send_json(&bob.id, body).await, 400);
    }
    // One cursor at a time.
    refused(
        &alice
            .get(&format!("/api/messages/{}?after=1&updatedAfter=1", bob.id))
            .await,
        400,
    );
    let history = alice.history(&bob, "").await;
    assert_eq!(history.len(), 1, "no refused send was queued");
    server.stop().await;
}

#[tokio::test]
async fn replies_carry_a_preview_of_the_original_in_history_and_events() {
    let server = TestServer::memory().await;
    let (alice, bob, carol) = three_users(&server).await;
    let original = send_saved(&alice, &bob, json!({ "text": "lunch?" })).await;
    let mut alice_socket = alice.socket().await;
    let (status, sent) = bob
        .send_json(&alice.id, json!({ "text": "yes!", "replyTo": original }))
        .await;
    assert_eq!(status, 202, "{sent}");
    let reply_id = sent["messageId"].as_str().unwrap().to_owned();
    let event = loop {
        let message = alice_socket.next_of("newMessage").await;
        if message["_id"] == reply_id.as_str() {
            break message;
        }
    };
    let expected = json!({
        "_id": original,
        "text": "lunch?",
        "image": "",
        "isDeleted": false,
        "senderId": {"_id": alice.id, "fullName": "Alice"},
    });
    assert_eq!(event["replyTo"], expected);
    let in_history = message_in(&bob, &alice, &reply_id).await.unwrap();
    assert_eq!(in_history["replyTo"], expected);
    // A deleted original shows as deleted, without its text.
    delete(&alice, &original).await;
    let in_history = message_in(&alice, &bob, &reply_id).await.unwrap();
    assert_eq!(in_history["replyTo"]["isDeleted"], true);
    assert_eq!(in_history["replyTo"]["text"], "");
    // A reply must stay in its conversation, even for a participant of both.
    let other = send_saved(&alice, &carol, json!({ "text": "hi Carol" })).await;
    refused(
        &alice
            .send_json(&bob.id, json!({ "text": "fwd", "replyTo": other }))
            .await,
        400,
    );
    server.stop().await;
}

#[tokio::test]
async fn attachments_are_sent_as_json_or_multipart_and_listed() {
    let server = TestServer::memory().await;
    let (alice, bob, _carol) = three_users(&server).await;
    let url = format!("/api/files/{}/report.pdf", "cd".repeat(32));
    let id = send_saved(
        &alice,
        &bob,
        json!({
            "fileUrl": url,
            "fileName": "report.pdf",
            "fileSize": 48_213,
            "fileType": "document",
            "mimeType": "application/pdf",
        }),
    )
    .await;
    let seen = message_in(&bob, &alice, &id).await.unwrap();
    assert_eq!(seen["fileUrl"], url.as_str());
    assert_eq!(seen["fileName"], "report.pdf");
    assert_eq!(seen["fileSize"], 48_213);
    assert_eq!(seen["fileType"], "document");
    assert_eq!(seen["mimeType"], "application/pdf");

    let form = reqwest::multipart::Form::new()
        .text("text", "see attached")
        .text("fileUrl", format!("/api/files/{}", "ef".repeat(32)))
        .text("fileName", "notes.txt")
        .text("fileSize", "12")
        .text("mimeType", "text/plain");
    let response = reqwest::Client::new()
        .post(format!("{}/api/messages/send/{}", server.base, bob.id))
        .bearer_auth(alice.token())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let sent: Value = response.json().await.unwrap();
    let id = sent["messageId"].as_str().unwrap().to_owned();
    eventually("the multipart message is saved", || async {
        message_in(&bob, &alice, &id).await.is_some()
    })
    .await;
    let seen = message_in(&bob, &alice, &id).await.unwrap();
    assert_eq!(seen["fileName"], "notes.txt");
    assert_eq!(seen["fileSize"], 12);
    assert_eq!(seen["text"], "see attached");
    // A message without a file has none of the fields set.
    let plain = send_saved(&alice, &bob, json!({ "text": "plain" })).await;
    let plain = message_in(&bob, &alice, &plain).await.unwrap();
    assert_eq!(plain["fileUrl"], Value::Null);
    assert_eq!(plain["isSystemMessage"], false);
    assert_eq!(plain["groupId"], Value::Null);
    server.stop().await;
}

fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[tokio::test]
async fn deleting_the_last_message_with_an_image_removes_the_stored_file() {
    let server = TestServer::memory().await;
    let (alice, bob, _carol) = three_users(&server).await;
    let image = data_url(&test_images::png(7, 5, &[]));
    let first = send_saved(&alice, &bob, json!({ "image": image })).await;
    let second = send_saved(&alice, &bob, json!({ "image": image })).await;
    let url = message_in(&alice, &bob, &first).await.unwrap()["image"]
        .as_str()
        .unwrap()
        .to_owned();
    let hash = url.strip_prefix("/uploads/").expect("a local image");
    let file = server.data_dir.join("uploads").join(hash);
    assert!(file.exists());
    assert_eq!(
        message_in(&alice, &bob, &second).await.unwrap()["image"],
        url.as_str(),
        "one stored file for both"
    );
    // The second message still shows it.
    assert_eq!(delete(&alice, &first).await.0, 200);
    assert!(file.exists());
    let (status, _) = bob.get(&url).await;
    assert_eq!(status, 200);
    assert_eq!(delete(&alice, &second).await.0, 200);
    assert!(!file.exists(), "nothing refers to it any more");
    assert_eq!(
        message_in(&bob, &alice, &second).await.unwrap()["image"],
        ""
    );
    server.stop().await;
}

/// The same image sent again while the last message showing it is deleted: the queued send
/// holds the stored file, so the new message shows it once saved.
#[tokio::test]
async fn an_image_sent_while_its_last_message_is_deleted_is_kept() {
    let server = TestServer::memory().await;
    let (alice, bob, _carol) = three_users(&server).await;
    let image = data_url(&test_images::png(6, 4, &[]));
    let first = send_saved(&alice, &bob, json!({ "image": image })).await;
    let url = message_in(&alice, &bob, &first).await.unwrap()["image"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = server
        .data_dir
        .join("uploads")
        .join(url.strip_prefix("/uploads/").unwrap());

    let messages = server.queues.queue("message").unwrap();
    messages.pause().await.unwrap();
    let (status, sent) = alice.send_json(&bob.id, json!({ "image": image })).await;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(delete(&alice, &first).await.0, 200);
    assert!(file.exists(), "the queued send holds the file");
    messages.resume().await.unwrap();
    let second = sent["messageId"].as_str().unwrap().to_owned();
    eventually("the second message is saved", || async {
        message_in(&alice, &bob, &second).await.is_some()
    })
    .await;
    assert_eq!(
        message_in(&bob, &alice, &second).await.unwrap()["image"],
        url.as_str()
    );
    let (status, _) = bob.get(&url).await;
    assert_eq!(status, 200);
    // Once nothing refers to it and nothing holds it, it goes.
    assert_eq!(delete(&alice, &second).await.0, 200);
    assert!(!file.exists());
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_was_away_catches_up_on_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let (alice, bob, _carol) = three_users(&server).await;
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(send_saved(&alice, &bob, json!({ "text": text })).await);
    }
    // Bob's client has seen everything so far: it keeps the highest changeSeq.
    let history = bob.history(&alice, "").await;
    let cursor = history
        .iter()
        .map(|message| message["changeSeq"].as_u64().unwrap())
        .max()
        .unwrap();
    // While Bob is away: an edit, a reaction, a delete, and a new message.
    edit(&alice, &ids[0], json!({ "text": "one, edited" })).await;
    react(&alice, &ids[1], "👀", true).await;
    delete(&alice, &ids[2]).await;
    let fourth = send_saved(&alice, &bob, json!({ "text": "four" })).await;
    // Caught up after a restart too: the index is in the store.
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    let bob = User::login(&server, &bob.email, "secret123").await.unwrap();
    let alice_id = alice.id.clone();

    let (status, missed) = bob
        .get(&format!("/api/messages/{alice_id}?updatedAfter={cursor}"))
        .await;
    assert_eq!(status, 200, "{missed}");
    let missed = missed.as_array().unwrap();
    let missed_ids: Vec<&str> = missed.iter().map(|m| m["_id"].as_str().unwrap()).collect();
    assert_eq!(missed_ids, [&ids[0], &ids[1], &ids[2], &fourth]);
    assert_eq!(missed[0]["text"], "one, edited");
    assert_eq!(missed[1]["reactions"][0]["emoji"], "👀");
    assert_eq!(missed[2]["isDeleted"], true);
    let stamps: Vec<u64> = missed
        .iter()
        .map(|m| m["changeSeq"].as_u64().unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|pair| pair[0] < pair[1]),
        "{stamps:?}"
    );
    assert!(stamps[0] > cursor);
    // Paged with limit, and nothing after the newest stamp.
    let (_, page) = bob
        .get(&format!(
            "/api/messages/{alice_id}?updatedAfter={cursor}&limit=2"
        ))
        .await;
    assert_eq!(page.as_array().unwrap().len(), 2);
    let last = stamps.last().unwrap();
    let (_, nothing) = bob
        .get(&format!("/api/messages/{alice_id}?updatedAfter={last}"))
        .await;
    assert_eq!(nothing, json!([]));
    server.stop().await;
}

/// Until the groups module answers `Chat::group_member`, a group message is its sender's alone:
/// they may edit, react to and delete it and get its events; nobody else sees it.
#[tokio::test]
async fn a_group_message_is_visible_to_its_sender_only_until_groups_exist() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let (alice, bob, _carol) = three_users(&server).await;
    server.stop().await;
    let (jobs, chat) = common::open_stores(dir.path()).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let id = "0123456789abcdef0123456a";
    chat.save_message(courier::store::chat::NewMessage {
        id: id.to_owned(),
        sender_id: alice.id.clone(),
        group_id: Some("0123456789abcdef0123ffff".to_owned()),
        text: "team update".to_owned(),
        created_at: now,
        ..Default::default()
    })
    .await
    .unwrap();
    drop((jobs, chat));
    let server = TestServer::start(dir.path()).await;
    let alice = User::login(&server, &alice.email, "secret123")
        .await
        .unwrap();
    let bob = User::login(&server, &bob.email, "secret123").await.unwrap();
    let mut alice_socket = alice.socket().await;
    let mut bob_socket = bob.socket().await;

    refused(&reactions(&bob, id).await, 404);
    refused(&edit(&bob, id, json!({ "text": "x" })).await, 404);
    refused(&react(&bob, id, "👍", true).await, 404);
    refused(&delete(&bob, id).await, 404);
    refused(
        &bob.send_json(&alice.id, json!({ "text": "re", "replyTo": id }))
            .await,
        400,
    );
    let (status, edited) = edit(&alice, id, json!({ "text": "team update v2" })).await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["groupId"], "0123456789abcdef0123ffff");
    assert_eq!(edited["receiverId"], Value::Null);
    assert_eq!(react(&alice, id, "👍", true).await.0, 200);
    assert_eq!(alice_socket.next_of("messageEdited").await["messageId"], id);
    assert_eq!(
        alice_socket.next_of("message_reaction_update").await["messageId"],
        id
    );
    let marker = send_saved(&alice, &bob, json!({ "text": "marker" })).await;
    assert!(events_before(&mut bob_socket, &marker).await.is_empty());
    assert_eq!(delete(&alice, id).await.0, 200);
    server.stop().await;
}
