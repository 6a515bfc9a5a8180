//! The admin's account tools: the user list, disabling an account, ending its sessions,
//! deleting it with its conversations, and who may sign up (`SIGNUP_MODE`, invitations).

mod common;

use common::{TestServer, User};
use courier::chat::SignupMode;
use courier::store::chat::HistoryPage;
use serde_json::{json, Value};

async fn admin(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let http = reqwest::Client::new();
    let url = server.url(path);
    let request = match method {
        "GET" => http.get(url),
        "DELETE" => http.delete(url),
        _ => http.post(url),
    }
    .header("x-admin-key", &server.admin_key);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn signup(
    server: &TestServer,
    name: &str,
    email: &str,
    invite: Option<&str>,
) -> (u16, Value) {
    let mut body = json!({ "fullName": name, "email": email, "password": "secret123" });
    if let Some(invite) = invite {
        body["invite"] = json!(invite);
    }
    let response = reqwest::Client::new()
        .post(server.url("/api/auth/signup"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_admin_lists_and_searches_accounts_with_their_addresses() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    User::signup(&server, "Bob").await;
    let (status, body) = admin(&server, "GET", "/admin/api/users", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 2);
    assert_eq!(body["signupMode"], "open");
    assert_eq!(body["users"][0]["fullName"], "Bob", "newest first");
    assert_eq!(body["users"][1]["email"], "alice@example.com");
    assert_eq!(body["users"][1]["sessions"], 1);
    assert_eq!(body["users"][1]["disabledAt"], Value::Null);
    let (_, found) = admin(&server, "GET", "/admin/api/users?q=ALI", None).await;
    assert_eq!(found["total"], 1);
    assert_eq!(found["users"][0]["_id"], alice.id.as_str());

    // Without the key, or as a user, nothing is listed.
    let anonymous = reqwest::Client::new()
        .get(server.url("/admin/api/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(alice.get("/admin/api/users").await.0, 401);
    server.stop().await;
}

#[tokio::test]
async fn a_disabled_account_is_signed_out_at_once_and_cannot_sign_in_until_enabled() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let mut socket = alice.socket().await;
    socket.next_of("getOnlineUsers").await;

    let (status, _) = admin(
        &server,
        "POST",
        &format!("/admin/api/users/{}/disable", alice.id),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(socket.closed_code().await, Some(4401));
    assert_eq!(alice.get("/api/auth/check").await.0, 401);
    let refused = reqwest::Client::new()
        .post(server.url("/api/auth/login"))
        .json(&json!({ "email": alice.email, "password": "secret123" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("disabled"),
        "{body}"
    );
    let (_, listed) = admin(&server, "GET", "/admin/api/users", None).await;
    assert!(listed["users"][0]["disabledAt"].as_str().is_some());

    let (status, _) = admin(
        &server,
        "POST",
        &format!("/admin/api/users/{}/enable", alice.id),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(User::login(&server, &alice.email, "secret123")
        .await
        .is_some());
    let (status, _) = admin(
        &server,
        "POST",
        "/admin/api/users/65f0c0a1b2c3d4e5f6a7b8c9/disable",
        None,
    )
    .await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn the_admin_ends_every_session_of_an_account() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let phone = User::login(&server, &alice.email, "secret123")
        .await
        .unwrap();
    let (status, body) = admin(
        &server,
        "POST",
        &format!("/admin/api/users/{}/sessions/end", alice.id),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["sessionsEnded"], 2);
    assert_eq!(alice.get("/api/auth/check").await.0, 401);
    assert_eq!(phone.get("/api/auth/check").await.0, 401);
    assert!(
        User::login(&server, &alice.email, "secret123")
            .await
            .is_some(),
        "not disabled"
    );
    server.stop().await;
}

#[tokio::test]
async fn deleting_an_account_removes_its_conversations_for_good_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let secret = |config: &mut courier::config::Config| {
        config.jwt_secret = Some("kept-across-the-restart-of-this-test".to_owned());
        config.queue_admin_key = Some("an-admin-key-kept-across-the-restart-0123".to_owned());
    };
    let server = TestServer::start_with(dir.path(), secret).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let carol = User::signup(&server, "Carol").await;
    for text in ["one", "two", "three"] {
        alice.send(&bob, text).await;
    }
    bob.send(&alice, "four").await;
    alice.send(&alice, "a note to self").await;
    bob.send(&carol, "hi Carol").await;
    common::eventually("every message saved", || async {
        bob.history(&alice, "").await.len() == 4 && carol.history(&bob, "").await.len() == 1
    })
    .await;
    assert_eq!(
        bob.http
            .post(server.url(&format!("/api/users/{}/block", alice.id)))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    let (status, body) = admin(
        &server,
        "DELETE",
        &format!("/admin/api/users/{}", alice.id),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messagesDeleted"], 5);
    assert_eq!(alice.get("/api/auth/check").await.0, 401);
    let gone = format!("/api/messages/{}", alice.id);
    assert_eq!(
        bob.get(&gone).await.0,
        404,
        "the conversation is gone with the account"
    );
    let (_, sidebar) = bob.get("/api/messages/users").await;
    let listed: Vec<&str> = sidebar
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [carol.id.as_str()]);
    let (_, blocked) = bob.get("/api/users/blocked").await;
    assert_eq!(blocked, json!([]), "the block went with the account");
    let (status, _) = bob
        .send_json(&alice.id, json!({ "text": "anyone there?" }))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        admin(
            &server,
            "DELETE",
            &format!("/admin/api/users/{}", alice.id),
            None
        )
        .await
        .0,
        404
    );
    server.stop().await;

    let server = TestServer::start_with(dir.path(), secret).await;
    assert!(User::login(&server, "alice@example.com", "secret123")
        .await
        .is_none());
    let bob = User::login(&server, &bob.email, "secret123").await.unwrap();
    let carol = User::login(&server, &carol.email, "secret123")
        .await
        .unwrap();
    assert_eq!(bob.get(&gone).await.0, 404, "still gone after a restart");
    assert_eq!(
        carol.history(&bob, "").await.len(),
        1,
        "other conversations stay"
    );
    // The address is free again.
    assert_eq!(
        signup(&server, "Alice", "alice@example.com", None).await.0,
        201
    );
    server.stop().await;

    // In the store itself: no message, partner or read mark of the old account is left.
    let (_jobs, chat) = common::open_stores(dir.path()).await;
    let page = chat
        .history(&bob.id, &alice.id, HistoryPage::Latest { limit: 100 })
        .await
        .unwrap();
    assert!(page.is_empty(), "{page:?}");
    let partners: Vec<String> = chat
        .conversations(&bob.id)
        .await
        .unwrap()
        .into_iter()
        .map(|summary| summary.other_id)
        .collect();
    assert_eq!(partners, std::slice::from_ref(&carol.id));
}

#[tokio::test]
async fn with_invitations_only_an_invited_person_signs_up_and_only_once() {
    let server = TestServer::memory_with(|config| {
        config.signup_mode = SignupMode::Invite;
    })
    .await;
    let mode: Value = reqwest::get(server.url("/api/auth/signup-mode"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mode["signupMode"], "invite");
    let (status, body) = signup(&server, "Eve", "eve@example.com", None).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["message"],
        "Sign-up on this server needs an invitation"
    );
    assert_eq!(
        signup(&server, "Eve", "eve@example.com", Some("made-up"))
            .await
            .0,
        403
    );

    let (status, invitation) = admin(&server, "POST", "/admin/api/invites", None).await;
    assert_eq!(status, 201, "{invitation}");
    let url = invitation["url"].as_str().unwrap();
    let secret = url.split_once("/signup#invite=").expect("a sign-up link").1;
    // Bad input does not use the invitation up.
    assert_eq!(
        signup(&server, "Ann", "not-an-address", Some(secret))
            .await
            .0,
        400
    );
    assert_eq!(
        signup(&server, "Ann", "ann@example.com", Some(secret))
            .await
            .0,
        201
    );
    assert_eq!(
        signup(&server, "Max", "max@example.com", Some(secret))
            .await
            .0,
        403,
        "once"
    );

    let (_, for_bo) = admin(
        &server,
        "POST",
        "/admin/api/invites",
        Some(json!({ "email": "Bo@Example.com", "days": 2 })),
    )
    .await;
    let secret = for_bo["url"]
        .as_str()
        .unwrap()
        .split_once("#invite=")
        .unwrap()
        .1
        .to_owned();
    let (status, body) = signup(&server, "Eve", "eve@example.com", Some(&secret)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("This invitation is for another e-mail address"))
    );
    assert_eq!(
        signup(&server, "Bo", "bo@example.com", Some(&secret))
            .await
            .0,
        201,
        "still usable by Bo"
    );
    let (status, _) = admin(
        &server,
        "POST",
        "/admin/api/invites",
        Some(json!({ "days": 1000 })),
    )
    .await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn closed_sign_up_refuses_everyone() {
    let server = TestServer::memory_with(|config| {
        config.signup_mode = SignupMode::Closed;
    })
    .await;
    let (status, body) = signup(&server, "Eve", "eve@example.com", None).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("Sign-up is closed on this server"))
    );
    assert_eq!(
        admin(&server, "POST", "/admin/api/invites", None).await.0,
        400
    );
    server.stop().await;
}

#[tokio::test]
async fn a_read_only_admin_key_lists_but_changes_nothing() {
    let server = TestServer::memory_with(|config| config.admin_read_only = true).await;
    let alice = User::signup(&server, "Alice").await;
    assert_eq!(admin(&server, "GET", "/admin/api/users", None).await.0, 200);
    for (method, path) in [
        ("POST", format!("/admin/api/users/{}/disable", alice.id)),
        (
            "POST",
            format!("/admin/api/users/{}/sessions/end", alice.id),
        ),
        ("DELETE", format!("/admin/api/users/{}", alice.id)),
        ("POST", "/admin/api/invites".to_owned()),
    ] {
        assert_eq!(
            admin(&server, method, &path, None).await.0,
            403,
            "{method} {path}"
        );
    }
    assert_eq!(alice.get("/api/auth/check").await.0, 200);
    server.stop().await;
}
