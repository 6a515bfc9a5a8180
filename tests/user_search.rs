//! `GET /api/messages/users/search?q=` and `lastSeen` on user JSON, through the real server.

mod common;

use common::{TestServer, User};
use serde_json::Value;

async fn search(user: &User, q: &str) -> (u16, Value) {
    let response = user
        .http
        .get(format!("{}/api/messages/users/search", user.base_url()))
        .query(&[("q", q)])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn names(found: &Value) -> Vec<String> {
    found
        .as_array()
        .unwrap_or_else(|| panic!("an array: {found}"))
        .iter()
        .map(|user| user["fullName"].as_str().unwrap().to_owned())
        .collect()
}

/// An ISO time as the server writes it (`YYYY-MM-DDTHH:MM:SS.mmmZ`): fixed width, so such
/// strings order as their times do.
fn iso(value: &Value) -> String {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("an ISO time: {value}"));
    assert_eq!(text.len(), 24, "{text}");
    text.to_owned()
}

fn now_iso() -> String {
    courier::time::iso_time(courier::time::now_millis())
}

#[tokio::test]
async fn names_match_without_case_or_accents_and_never_the_caller() {
    let server = TestServer::memory().await;
    let caller = User::signup(&server, "Helena Caller").await;
    User::signup(&server, "Zoë Hélène").await;
    User::signup(&server, "Helen Smith").await;
    User::signup(&server, "Michelle Obi").await;
    User::signup(&server, "Bob").await;

    let (status, found) = search(&caller, "hele").await;
    assert_eq!(status, 200, "{found}");
    // Names that start with the query, then names with a word that does; never the caller.
    assert_eq!(names(&found), ["Helen Smith", "Zoë Hélène"]);
    let (_, found) = search(&caller, "HÉLÈNE").await;
    assert_eq!(names(&found), ["Zoë Hélène"]);
    let (_, found) = search(&caller, "zoe").await;
    assert_eq!(names(&found), ["Zoë Hélène"]);
    let (_, found) = search(&caller, "chell").await;
    assert_eq!(names(&found), ["Michelle Obi"]);
    let (_, found) = search(&caller, "nobody").await;
    assert_eq!(found, serde_json::json!([]));

    // The sidebar's shape: no address, no password hash.
    let (_, found) = search(&caller, "bob").await;
    let bob = &found[0];
    assert!(bob["_id"].is_string() && bob["profilePic"].is_string());
    assert!(bob["createdAt"].is_string() && bob["lastSeen"].is_string());
    assert_eq!(bob["online"], false);
    let text = found.to_string();
    assert!(
        !text.contains("@example.com") && !text.contains("argon2"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_address_matches_only_as_a_whole() {
    let server = TestServer::memory().await;
    let caller = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob Builder").await;
    let (_, found) = search(&caller, &bob.email.to_uppercase()).await;
    assert_eq!(names(&found), ["Bob Builder"]);
    for partial in ["@example.com", "bob.builder@", "example"] {
        let (status, found) = search(&caller, partial).await;
        assert_eq!(status, 200);
        assert_eq!(found, serde_json::json!([]), "{partial}");
    }
    // One's own address finds nobody.
    let (_, found) = search(&caller, &caller.email).await;
    assert_eq!(found, serde_json::json!([]));
    server.stop().await;
}

#[tokio::test]
async fn at_most_twenty_come_back() {
    let server = TestServer::memory().await;
    let caller = User::signup(&server, "Member Zero").await;
    for n in 1..=25 {
        User::signup(&server, &format!("Member {n:02}")).await;
    }
    let (status, found) = search(&caller, "member").await;
    assert_eq!(status, 200);
    let found = names(&found);
    assert_eq!(found.len(), 20);
    assert!(!found.contains(&"Member Zero".to_owned()));
    assert_eq!(found[0], "Member 01");
    server.stop().await;
}

#[tokio::test]
async fn search_needs_a_session_and_a_sensible_query() {
    let server = TestServer::memory().await;
    let caller = User::signup(&server, "Alice").await;
    let response = reqwest::get(server.url("/api/messages/users/search?q=al"))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    for q in ["", "   ", &"x".repeat(101)] {
        let (status, body) = search(&caller, q).await;
        assert_eq!(status, 400, "{q:?}: {body}");
        assert!(body["message"].is_string());
    }
    let (status, _) = caller.get("/api/messages/users/search").await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn last_seen_is_now_online_the_last_session_use_offline_and_hidden_by_a_block() {
    let server = TestServer::memory().await;
    let before_signup = now_iso();
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let carol = User::signup(&server, "Carol").await;
    let after_signup = now_iso();

    // Offline: the time of their session's last use (here, sign-up).
    let (status, sidebar) = alice.get("/api/messages/users").await;
    assert_eq!(status, 200);
    let row = |sidebar: &Value, name: &str| {
        sidebar
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["fullName"] == name)
            .cloned()
            .unwrap()
    };
    let seen = iso(&row(&sidebar, "Bob")["lastSeen"]);
    assert!(before_signup <= seen && seen <= after_signup, "{seen}");

    // Online: now.
    let mut socket = bob.socket().await;
    socket.next_of("getOnlineUsers").await;
    let online_since = now_iso();
    let (_, sidebar) = alice.get("/api/messages/users").await;
    assert_eq!(row(&sidebar, "Bob")["online"], true);
    assert!(iso(&row(&sidebar, "Bob")["lastSeen"]) >= online_since);
    let (_, found) = search(&alice, "bob").await;
    assert_eq!(found[0]["online"], true);
    assert!(iso(&found[0]["lastSeen"]) >= online_since);

    // Carol blocks Alice: to Alice, Carol's activity is as hidden as her presence.
    let response = carol
        .http
        .post(server.url(&format!("/api/users/{}/block", alice.id)))
        .header("origin", &server.base)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let mut carol_socket = carol.socket().await;
    carol_socket.next_of("getOnlineUsers").await;
    let (_, sidebar) = alice.get("/api/messages/users").await;
    assert_eq!(row(&sidebar, "Carol")["lastSeen"], Value::Null);
    assert_eq!(row(&sidebar, "Carol")["online"], false);
    let (_, found) = search(&alice, "carol").await;
    assert_eq!(found[0]["lastSeen"], Value::Null);

    // The signed-in user is seen now.
    let before_check = now_iso();
    let (status, me) = alice.get("/api/auth/check").await;
    assert_eq!(status, 200);
    assert!(iso(&me["lastSeen"]) >= before_check);
    server.stop().await;
}

#[tokio::test]
async fn the_search_route_is_not_taken_for_a_conversation() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let (status, body) = alice.get("/api/messages/users/search?q=x").await;
    assert_eq!((status, body), (200, serde_json::json!([])));
    server.stop().await;
}
