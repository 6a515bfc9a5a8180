//! Groups end to end on a real server: every `/api/groups` route with its authorization (a
//! non-member gets 404 everywhere, a member who is not the admin 403 on admin routes, and nothing
//! changes), system messages, unread counts and last messages, the order of a burst of sends,
//! and real WebSocket fan-out to every member's tabs (never to anyone else), with removal
//! stopping delivery at once.

mod common;

use common::{eventually, Socket, TestServer, User};
use serde_json::{json, Value};

async fn call(user: &User, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{}", user.base_url(), path);
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = user.http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create(owner: &User, name: &str, members: &[&User]) -> Value {
    let ids: Vec<&str> = members.iter().map(|user| user.id.as_str()).collect();
    let (status, group) = call(
        owner,
        "POST",
        "/api/groups",
        Some(json!({ "name": name, "description": "our group", "members": ids })),
    )
    .await;
    assert_eq!(status, 201, "create: {group}");
    group
}

fn id_of(group: &Value) -> String {
    group["_id"].as_str().unwrap().to_owned()
}

fn member_ids(group: &Value) -> Vec<String> {
    group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member["_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn post(user: &User, group: &str, text: &str) -> Value {
    let (status, body) = call(
        user,
        "POST",
        &format!("/api/groups/{group}/messages"),
        Some(json!({ "text": text })),
    )
    .await;
    assert_eq!(status, 202, "send: {body}");
    body
}

async fn history(user: &User, group: &str, query: &str) -> Vec<Value> {
    let (status, body) = call(
        user,
        "GET",
        &format!("/api/groups/{group}/messages{query}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "history: {body}");
    body.as_array().unwrap().clone()
}

fn texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|message| message["text"].as_str().unwrap().to_owned())
        .collect()
}

async fn my_groups(user: &User) -> Vec<Value> {
    let (status, body) = call(user, "GET", "/api/groups", None).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

/// Waits until `count` messages of `group` are saved (the sends are queued jobs).
async fn saved(user: &User, group: &str, count: usize) -> Vec<Value> {
    eventually("the group's messages to be saved", || async {
        history(user, group, "?limit=200").await.len() >= count
    })
    .await;
    history(user, group, "?limit=200").await
}

/// Proves `socket` got no frame of `kind` so far: a direct message sent to its user now is
/// queued behind anything already queued, so it must be the next frame of its kinds.
async fn nothing_of(kind: &str, socket: &mut Socket, user: &User, sentinel_from: &User) {
    static SENTINELS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let number = SENTINELS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sentinel = format!("sentinel {number}");
    sentinel_from.send(user, &sentinel).await;
    loop {
        let frame = socket.next().await;
        assert_ne!(frame["type"], kind, "unexpected {kind}: {frame}");
        if frame["type"] == "newMessage" && frame["data"]["text"] == sentinel.as_str() {
            return;
        }
    }
}

#[tokio::test]
async fn a_created_group_lists_its_members_admin_and_system_message() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let group = create(&alice, "  Book   club ", &[&bob, &bob, &alice]).await;
    assert_eq!(group["name"], "Book club");
    assert_eq!(group["description"], "our group");
    assert_eq!(group["profilePic"], "");
    assert_eq!(group["admin"]["_id"], alice.id.as_str());
    assert_eq!(group["admin"]["fullName"], "Alice");
    assert_eq!(member_ids(&group), [alice.id.clone(), bob.id.clone()]);
    assert!(
        group["members"][0].get("email").is_none(),
        "no e-mail addresses"
    );
    assert!(group["createdAt"].as_str().unwrap().ends_with('Z'));
    let id = id_of(&group);

    let for_bob = my_groups(&bob).await;
    assert_eq!(for_bob.len(), 1);
    assert_eq!(for_bob[0]["_id"], id.as_str());
    assert_eq!(for_bob[0]["unreadCount"], 1);
    let last = &for_bob[0]["lastMessage"];
    assert_eq!(last["isSystemMessage"], true);
    assert_eq!(last["groupId"], id.as_str());
    assert_eq!(last["text"], "Alice created the group \"Book club\"");
    assert_eq!(last["senderId"]["_id"], alice.id.as_str());
    assert_eq!(
        my_groups(&alice).await[0]["unreadCount"],
        0,
        "her own message"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_non_member_gets_404_and_a_member_403_on_every_admin_route_and_nothing_changes() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let carol = User::signup(&server, "Carol").await;
    let group = create(&alice, "Private", &[&bob]).await;
    let id = id_of(&group);
    let member = json!({ "userId": carol.id });
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/api/groups/{id}/messages"), None),
        (
            "POST",
            format!("/api/groups/{id}/messages"),
            Some(json!({"text": "hi"})),
        ),
        ("PUT", format!("/api/groups/{id}/messages/seen"), None),
        (
            "PUT",
            format!("/api/groups/{id}"),
            Some(json!({"name": "Mine"})),
        ),
        (
            "POST",
            format!("/api/groups/{id}/members"),
            Some(member.clone()),
        ),
        (
            "DELETE",
            format!("/api/groups/{id}/members"),
            Some(json!({"userId": bob.id})),
        ),
        (
            "PUT",
            format!("/api/groups/{id}/admin"),
            Some(json!({"newAdminId": carol.id})),
        ),
    ];
    for (method, path, body) in &routes {
        let (status, answer) = call(&carol, method, path, body.clone()).await;
        assert_eq!(status, 404, "{method} {path} as a non-member: {answer}");
        assert_eq!(answer["message"], "Group not found");
    }
    // A group id that does not exist answers the same.
    let (status, _) = call(
        &carol,
        "GET",
        "/api/groups/0123456789abcdef01234567/messages",
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert!(my_groups(&carol).await.is_empty());

    let admin_only: Vec<(&str, String, Value)> = vec![
        ("PUT", format!("/api/groups/{id}"), json!({"name": "Bob's"})),
        ("POST", format!("/api/groups/{id}/members"), member.clone()),
        (
            "DELETE",
            format!("/api/groups/{id}/members"),
            json!({"userId": alice.id}),
        ),
        (
            "PUT",
            format!("/api/groups/{id}/admin"),
            json!({"newAdminId": bob.id}),
        ),
    ];
    for (method, path, body) in &admin_only {
        let (status, answer) = call(&bob, method, path, Some(body.clone())).await;
        assert_eq!(status, 403, "{method} {path} as a member: {answer}");
        assert!(answer["message"].as_str().unwrap().contains("admin"));
    }
    let after = &my_groups(&alice).await[0];
    assert_eq!(after["name"], "Private");
    assert_eq!(after["admin"]["_id"], alice.id.as_str());
    assert_eq!(member_ids(after), [alice.id.clone(), bob.id.clone()]);
    assert_eq!(texts(&history(&alice, &id, "").await).len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_a_400_with_a_message_and_changes_nothing() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let long_name = "x".repeat(101);
    let long_description = "y".repeat(501);
    let bodies = [
        json!({ "name": "", "members": [] }),
        json!({ "name": " \u{200B} ", "members": [] }),
        json!({ "name": long_name, "members": [] }),
        json!({ "name": "ok", "description": long_description, "members": [] }),
        json!({ "name": "ok", "members": ["not-an-id"] }),
        json!({ "name": "ok", "members": ["0123456789abcdef01234567"] }),
        json!({ "name": "ok", "members": "everyone" }),
        json!({ "members": [] }),
    ];
    for body in bodies {
        let (status, answer) = call(&alice, "POST", "/api/groups", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["message"].is_string(), "{answer}");
    }
    assert!(my_groups(&alice).await.is_empty());

    let id = id_of(&create(&alice, "Team", &[&bob]).await);
    let bad = [
        ("GET", "/api/groups/not-an-id/messages".to_owned(), None),
        ("POST", "/api/groups/not-an-id/join".to_owned(), None),
        ("GET", "/api/groups/search".to_owned(), None),
        (
            "GET",
            format!("/api/groups/search?q={}", "q".repeat(101)),
            None,
        ),
        (
            "POST",
            format!("/api/groups/{id}/members"),
            Some(json!({ "userId": "nope" })),
        ),
        (
            "POST",
            format!("/api/groups/{id}/members"),
            Some(json!({ "userId": bob.id })),
        ),
        (
            "PUT",
            format!("/api/groups/{id}/admin"),
            Some(json!({ "newAdminId": "0123456789abcdef01234567" })),
        ),
        ("PUT", format!("/api/groups/{id}"), Some(json!({}))),
        (
            "PUT",
            format!("/api/groups/{id}"),
            Some(json!({ "profilePic": "https://elsewhere.example/x.png" })),
        ),
        (
            "POST",
            format!("/api/groups/{id}/messages"),
            Some(json!({ "text": "   " })),
        ),
        ("GET", format!("/api/groups/{id}/messages?limit=0"), None),
        (
            "GET",
            format!("/api/groups/{id}/messages?before=2&after=1"),
            None,
        ),
    ];
    for (method, path, body) in bad {
        let (status, answer) = call(&alice, method, &path, body).await;
        assert_eq!(status, 400, "{method} {path}: {answer}");
        assert!(answer["message"].is_string(), "{answer}");
    }
    let group = &my_groups(&alice).await[0];
    assert_eq!(member_ids(group), [alice.id.clone(), bob.id.clone()]);
    assert_eq!(group["admin"]["_id"], alice.id.as_str());
    assert_eq!(history(&alice, &id, "").await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn search_finds_joinable_groups_by_name_and_join_adds_a_system_message() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let carol = User::signup(&server, "Carol").await;
    let id = id_of(&create(&alice, "Équipe Café", &[]).await);
    create(&alice, "Other", &[]).await;

    let (status, found) = call(&carol, "GET", "/api/groups/search?q=equipe%20CAFE", None).await;
    assert_eq!(status, 200);
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["_id"], id.as_str());
    assert_eq!(found[0]["name"], "Équipe Café");
    // Members are not offered their own groups.
    let (_, own) = call(&alice, "GET", "/api/groups/search?q=cafe", None).await;
    assert!(own.as_array().unwrap().is_empty());

    let (status, joined) = call(&carol, "POST", &format!("/api/groups/{id}/join"), None).await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["message"], "Joined the group");
    assert!(member_ids(&joined["group"]).contains(&carol.id));
    let (status, again) = call(&carol, "POST", &format!("/api/groups/{id}/join"), None).await;
    assert_eq!(status, 400, "{again}");
    let (status, _) = call(
        &carol,
        "POST",
        "/api/groups/0123456789abcdef01234567/join",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let messages = history(&carol, &id, "").await;
    assert_eq!(texts(&messages).last().unwrap(), "Carol joined the group");
    assert_eq!(messages.last().unwrap()["isSystemMessage"], true);
    let (_, found) = call(&carol, "GET", "/api/groups/search?q=cafe", None).await;
    assert!(found.as_array().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn membership_changes_follow_the_admin_rules_and_leave_system_messages() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let carol = User::signup(&server, "Carol").await;
    let dave = User::signup(&server, "Dave").await;
    let id = id_of(&create(&alice, "Team", &[&bob]).await);
    let members_path = format!("/api/groups/{id}/members");

    let (status, added) = call(
        &alice,
        "POST",
        &members_path,
        Some(json!({"userId": carol.id})),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["message"], "Member added");
    assert_eq!(member_ids(&added["group"]).len(), 3);
    let (status, _) = call(
        &alice,
        "POST",
        &members_path,
        Some(json!({"userId": dave.id})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, removed) = call(
        &alice,
        "DELETE",
        &members_path,
        Some(json!({"userId": dave.id})),
    )
    .await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["message"], "Member removed");
    // Bob, not the admin, may still leave.
    let (status, left) = call(
        &bob,
        "DELETE",
        &members_path,
        Some(json!({"userId": bob.id})),
    )
    .await;
    assert_eq!(status, 200, "{left}");
    assert_eq!(left["message"], "Left the group");
    assert!(left["group"].is_null());
    let (status, _) = call(&bob, "GET", &format!("/api/groups/{id}/messages"), None).await;
    assert_eq!(status, 404, "a former member sees nothing");

    let (status, _) = call(
        &alice,
        "PUT",
        &format!("/api/groups/{id}/admin"),
        Some(json!({"newAdminId": dave.id})),
    )
    .await;
    assert_eq!(status, 400, "the new admin must be a member");
    let (status, changed) = call(
        &alice,
        "PUT",
        &format!("/api/groups/{id}/admin"),
        Some(json!({"newAdminId": carol.id})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["group"]["admin"]["_id"], carol.id.as_str());
    let (status, _) = call(
        &alice,
        "PUT",
        &format!("/api/groups/{id}"),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 403, "no longer the admin");
    let (status, renamed) = call(
        &carol,
        "PUT",
        &format!("/api/groups/{id}"),
        Some(json!({"name": "Renamed", "description": "new words"})),
    )
    .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["name"], "Renamed");
    assert_eq!(renamed["description"], "new words");
    // The admin leaving hands the admin to the oldest remaining member.
    let (status, _) = call(
        &alice,
        "POST",
        &members_path,
        Some(json!({"userId": dave.id})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &carol,
        "POST",
        &members_path,
        Some(json!({"userId": dave.id})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &carol,
        "DELETE",
        &members_path,
        Some(json!({"userId": carol.id})),
    )
    .await;
    assert_eq!(status, 200);
    let group = &my_groups(&alice).await[0];
    assert_eq!(
        group["admin"]["_id"],
        alice.id.as_str(),
        "Alice is the oldest member left"
    );
    assert_eq!(member_ids(group), [alice.id.clone(), dave.id.clone()]);

    let messages = history(&alice, &id, "").await;
    assert!(messages
        .iter()
        .all(|message| message["isSystemMessage"] == true));
    assert_eq!(
        texts(&messages),
        [
            "Alice created the group \"Team\"",
            "Alice added Carol",
            "Alice added Dave",
            "Alice removed Dave",
            "Bob left the group",
            "Alice made Carol the admin",
            "Carol renamed the group to \"Renamed\"",
            "Carol added Dave",
            "Carol left the group",
        ]
    );
    // The last members leaving delete the group.
    call(
        &dave,
        "DELETE",
        &members_path,
        Some(json!({"userId": dave.id})),
    )
    .await;
    let (status, _) = call(
        &alice,
        "DELETE",
        &members_path,
        Some(json!({"userId": alice.id})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(my_groups(&alice).await.is_empty());
    let (_, found) = call(&bob, "GET", "/api/groups/search?q=renamed", None).await;
    assert!(found.as_array().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_burst_of_sends_is_saved_in_order_with_unread_counts_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let id = id_of(&create(&alice, "Burst", &[&bob]).await);
    let sent: Vec<String> = (0..30).map(|n| format!("message {n}")).collect();
    let mut ids = Vec::new();
    for text in &sent {
        ids.push(post(&alice, &id, text).await["messageId"].clone());
    }
    let messages = saved(&bob, &id, 31).await;
    assert_eq!(texts(&messages[1..]), sent, "send order");
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=31).collect::<Vec<u64>>());
    assert_eq!(messages[1]["_id"], ids[0]);
    assert_eq!(messages[1]["groupId"], id.as_str());
    assert_eq!(messages[1]["senderId"]["_id"], alice.id.as_str());
    assert_eq!(messages[1]["senderId"]["fullName"], "Alice");
    assert_eq!(messages[1]["isSystemMessage"], false);

    let listed = &my_groups(&bob).await[0];
    assert_eq!(listed["unreadCount"], 31);
    assert_eq!(listed["lastMessage"]["text"], "message 29");
    let (status, seen) = call(
        &bob,
        "PUT",
        &format!("/api/groups/{id}/messages/seen"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["upToSeq"], 31);
    assert_eq!(my_groups(&bob).await[0]["unreadCount"], 0);

    assert_eq!(
        texts(&history(&bob, &id, "?limit=2").await),
        ["message 28", "message 29"]
    );
    assert_eq!(
        texts(&history(&bob, &id, "?before=4&limit=2").await),
        ["message 0", "message 1"]
    );
    assert_eq!(
        texts(&history(&bob, &id, "?after=30").await),
        ["message 29"]
    );
    server.stop().await;
}

#[tokio::test]
async fn every_members_tabs_get_group_messages_and_nobody_else_does() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let carol = User::signup(&server, "Carol").await;
    let mut alice_one = alice.socket().await;
    let mut alice_two = alice.socket().await;
    let mut bob_socket = bob.socket().await;
    let mut carol_socket = carol.socket().await;

    let group = create(&alice, "Live", &[&bob]).await;
    let id = id_of(&group);
    for socket in [&mut alice_one, &mut alice_two, &mut bob_socket] {
        let updated = socket.next_of("groupUpdated").await;
        assert_eq!(updated["_id"], id.as_str());
        let created = socket.next_of("newGroupMessage").await;
        assert_eq!(created["isSystemMessage"], true);
    }
    let sent = post(&alice, &id, "hello group").await;
    for socket in [&mut alice_one, &mut alice_two, &mut bob_socket] {
        let message = socket.next_of("newGroupMessage").await;
        assert_eq!(message["_id"], sent["messageId"]);
        assert_eq!(message["groupId"], id.as_str());
        assert_eq!(message["text"], "hello group");
        assert_eq!(message["senderId"]["_id"], alice.id.as_str());
        assert_eq!(message["senderId"]["fullName"], "Alice");
    }
    // Carol, who is not a member, got none of it: no message, no group event.
    let mut carol_frames = Vec::new();
    let sentinel = alice.send(&carol, "only this").await;
    loop {
        let frame = carol_socket.next().await;
        if frame["type"] == "newMessage" && frame["data"]["_id"] == sentinel["messageId"] {
            break;
        }
        carol_frames.push(frame["type"].as_str().unwrap().to_owned());
    }
    assert!(
        carol_frames.iter().all(|kind| kind == "getOnlineUsers"),
        "{carol_frames:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_removed_member_stops_receiving_at_once_and_is_told() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let carol = User::signup(&server, "Carol").await;
    let id = id_of(&create(&alice, "Shrinking", &[&bob, &carol]).await);
    let mut bob_socket = bob.socket().await;
    let mut carol_socket = carol.socket().await;

    post(&alice, &id, "before").await;
    assert_eq!(
        bob_socket.next_of("newGroupMessage").await["text"],
        "before"
    );
    assert_eq!(
        carol_socket.next_of("newGroupMessage").await["text"],
        "before"
    );
    let (status, _) = call(
        &alice,
        "DELETE",
        &format!("/api/groups/{id}/members"),
        Some(json!({"userId": bob.id})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        bob_socket.next_of("groupRemoved").await["groupId"],
        id.as_str()
    );
    let updated = carol_socket.next_of("groupUpdated").await;
    assert!(!member_ids(&updated).contains(&bob.id));
    assert_eq!(
        carol_socket.next_of("newGroupMessage").await["text"],
        "Alice removed Bob"
    );

    post(&alice, &id, "after").await;
    assert_eq!(
        carol_socket.next_of("newGroupMessage").await["text"],
        "after"
    );
    nothing_of("newGroupMessage", &mut bob_socket, &bob, &alice).await;
    let (status, _) = call(
        &bob,
        "POST",
        &format!("/api/groups/{id}/messages"),
        Some(json!({"text": "let me in"})),
    )
    .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn members_react_to_and_see_edits_of_group_messages_and_others_cannot() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let carol = User::signup(&server, "Carol").await;
    let id = id_of(&create(&alice, "Reacting", &[&bob]).await);
    let mut bob_socket = bob.socket().await;
    let sent = post(&alice, &id, "react to me").await;
    let message_id = sent["messageId"].as_str().unwrap().to_owned();
    assert_eq!(
        bob_socket.next_of("newGroupMessage").await["_id"],
        message_id.as_str()
    );
    let reaction = format!("/api/messages/reaction/{message_id}");

    let (status, answer) = call(&bob, "POST", &reaction, Some(json!({"reaction": "👍"}))).await;
    assert_eq!(status, 200, "a member reacts: {answer}");
    let (status, _) = call(&carol, "POST", &reaction, Some(json!({"reaction": "👍"}))).await;
    assert_eq!(status, 404, "a non-member sees no such message");
    let (status, _) = call(&carol, "GET", &reaction, None).await;
    assert_eq!(status, 404);

    let (status, edited) = call(
        &alice,
        "PUT",
        &format!("/api/messages/edit/{message_id}"),
        Some(json!({"text": "edited"})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(bob_socket.next_of("messageEdited").await["text"], "edited");
    // A member who was away catches up on the edit by change order.
    let changed = history(&bob, &id, "?updatedAfter=0").await;
    assert_eq!(changed.last().unwrap()["_id"], message_id.as_str());
    assert_eq!(changed.last().unwrap()["text"], "edited");
    assert_eq!(
        changed.last().unwrap()["senderId"]["_id"],
        alice.id.as_str()
    );

    // Once removed, Bob no longer sees it either.
    call(
        &alice,
        "DELETE",
        &format!("/api/groups/{id}/members"),
        Some(json!({"userId": bob.id})),
    )
    .await;
    let (status, _) = call(&bob, "DELETE", &reaction, Some(json!({"reaction": "👍"}))).await;
    assert_eq!(status, 404);
    server.stop().await;
}
