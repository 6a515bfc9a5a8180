//! Sign-in sessions: logout and password changes end tokens and their sockets at once, a user
//! can list and end their sessions, a reset link sets a new password, and a tab that expects
//! another user than the cookie's is refused instead of acting as that user.

mod common;

use common::{outbox_mail, TestServer, User};
use serde_json::{json, Value};

/// A request with `token` as a Bearer token: the credential a stolen or old token would be.
async fn status_with_token(server: &TestServer, token: &str) -> u16 {
    reqwest::Client::new()
        .get(server.url("/api/auth/check"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn post(user: &User, path: &str, body: Value) -> (u16, Value) {
    let response = user
        .http
        .post(format!("{}{path}", user.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put(user: &User, path: &str, body: Value) -> (u16, Value) {
    let response = user
        .http
        .put(format!("{}{path}", user.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn delete(user: &User, path: &str) -> u16 {
    user.http
        .delete(format!("{}{path}", user.base_url()))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn logging_out_ends_the_token_and_closes_its_socket() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let token = alice.token();
    let mut socket = alice.socket().await;
    socket.next_of("getOnlineUsers").await;
    assert_eq!(status_with_token(&server, &token).await, 200);

    let (status, _) = post(&alice, "/api/auth/logout", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        status_with_token(&server, &token).await,
        401,
        "a logged-out token is refused although its signature and expiry are still good"
    );
    assert_eq!(socket.closed_code().await, Some(4401));
    // Logging out again, with the ended token, answers the same.
    let again = reqwest::Client::new()
        .post(server.url("/api/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn sessions_are_listed_and_ended_one_by_one_or_everywhere_else() {
    let server = TestServer::memory().await;
    let laptop = User::signup(&server, "Alice").await;
    let phone = User::login(&server, &laptop.email, "secret123")
        .await
        .unwrap();
    let tablet = User::login(&server, &laptop.email, "secret123")
        .await
        .unwrap();
    let bob = User::signup(&server, "Bob").await;

    let (status, sessions) = laptop.get("/api/auth/sessions").await;
    assert_eq!(status, 200);
    let sessions = sessions.as_array().unwrap().clone();
    assert_eq!(sessions.len(), 3);
    assert_eq!(
        sessions.iter().filter(|s| s["current"] == true).count(),
        1,
        "{sessions:?}"
    );
    for session in &sessions {
        assert_eq!(session["address"], "127.0.0.1");
        assert!(session["createdAt"].as_str().unwrap().ends_with('Z'));
        assert!(session["lastSeenAt"].as_str().is_some());
    }
    // The newest first: the tablet's.
    let (_, tablet_view) = tablet.get("/api/auth/sessions").await;
    assert_eq!(tablet_view[0]["current"], true);
    let tablet_id = tablet_view[0]["id"].as_str().unwrap().to_owned();

    // Bob cannot end Alice's sessions: they do not exist for him.
    assert_eq!(
        delete(&bob, &format!("/api/auth/sessions/{tablet_id}")).await,
        404
    );
    assert_eq!(tablet.get("/api/auth/check").await.0, 200);

    let mut tablet_socket = tablet.socket().await;
    tablet_socket.next_of("getOnlineUsers").await;
    assert_eq!(
        delete(&laptop, &format!("/api/auth/sessions/{tablet_id}")).await,
        200
    );
    assert_eq!(tablet.get("/api/auth/check").await.0, 401);
    assert_eq!(tablet_socket.closed_code().await, Some(4401));
    assert_eq!(
        delete(&laptop, &format!("/api/auth/sessions/{tablet_id}")).await,
        404
    );

    let mut phone_socket = phone.socket().await;
    phone_socket.next_of("getOnlineUsers").await;
    let (status, body) = post(&laptop, "/api/auth/logout-all", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["sessionsEnded"], 1);
    assert_eq!(phone.get("/api/auth/check").await.0, 401);
    assert_eq!(phone_socket.closed_code().await, Some(4401));
    assert_eq!(laptop.get("/api/auth/check").await.0, 200);
    let (_, left) = laptop.get("/api/auth/sessions").await;
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(
        bob.get("/api/auth/check").await.0,
        200,
        "other users keep theirs"
    );
    server.stop().await;
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_the_other_sessions() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let other = User::login(&server, &alice.email, "secret123")
        .await
        .unwrap();
    let mut other_socket = other.socket().await;
    other_socket.next_of("getOnlineUsers").await;

    let wrong = json!({ "currentPassword": "not-it", "newPassword": "new-secret-1" });
    let (status, body) = put(&alice, "/api/auth/password", wrong).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "The current password is not correct");
    let short = json!({ "currentPassword": "secret123", "newPassword": "abc" });
    assert_eq!(put(&alice, "/api/auth/password", short).await.0, 400);
    assert_eq!(
        other.get("/api/auth/check").await.0,
        200,
        "nothing changed yet"
    );
    assert!(User::login(&server, &alice.email, "secret123")
        .await
        .is_some());

    let good = json!({ "currentPassword": "secret123", "newPassword": "new-secret-1" });
    let (status, body) = put(&alice, "/api/auth/password", good).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["sessionsEnded"], 2,
        "the other tab and the check login above"
    );
    assert_eq!(
        alice.get("/api/auth/check").await.0,
        200,
        "this session stays"
    );
    assert_eq!(other.get("/api/auth/check").await.0, 401);
    assert_eq!(other_socket.closed_code().await, Some(4401));
    assert!(User::login(&server, &alice.email, "secret123")
        .await
        .is_none());
    assert!(User::login(&server, &alice.email, "new-secret-1")
        .await
        .is_some());
    server.stop().await;
}

#[tokio::test]
async fn a_reset_link_sets_a_new_password_once_and_ends_every_session() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let (http, _) = common::client();
    let forgot = |email: &'static str| {
        let http = http.clone();
        let url = server.url("/api/auth/forgot-password");
        async move {
            let response = http
                .post(url)
                .json(&json!({ "email": email }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (unknown_status, unknown) = forgot("nobody@example.com").await;
    let (known_status, known) = forgot("alice@example.com").await;
    assert_eq!((unknown_status, known_status), (202, 202));
    assert_eq!(
        unknown, known,
        "the answer does not tell which addresses have an account"
    );

    let mail = outbox_mail(
        &server.data_dir,
        &["alice@example.com", "/reset-password#token="],
    )
    .await;
    let token = common::link_token(&mail, "/reset-password").expect("a reset link");
    let reset = |token: String, password: &'static str| {
        let http = http.clone();
        let url = server.url("/api/auth/reset-password");
        async move {
            let response = http
                .post(url)
                .json(&json!({ "token": token, "password": password }))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    };
    assert_eq!(reset("made-up".to_owned(), "brand-new-1").await, 400);
    assert_eq!(
        reset(token.clone(), "abc").await,
        400,
        "too short: the link still works"
    );
    assert_eq!(alice.get("/api/auth/check").await.0, 200);
    assert_eq!(reset(token.clone(), "brand-new-1").await, 200);
    assert_eq!(reset(token, "another-one").await, 400, "a link works once");
    assert_eq!(
        alice.get("/api/auth/check").await.0,
        401,
        "every session ended"
    );
    assert!(User::login(&server, &alice.email, "secret123")
        .await
        .is_none());
    let back = User::login(&server, &alice.email, "brand-new-1")
        .await
        .unwrap();
    let (_, settings) = back.get("/api/auth/settings").await;
    assert_eq!(
        settings["emailVerified"], true,
        "opening the link proved the address"
    );
    server.stop().await;
}

#[tokio::test]
async fn sessions_and_their_ends_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-jwt-secret-kept-across-the-restart";
    let same_secret = |config: &mut courier::config::Config| {
        config.jwt_secret = Some(secret.to_owned());
    };
    let server = TestServer::start_with(dir.path(), same_secret).await;
    let alice = User::signup(&server, "Alice").await;
    let kept = alice.token();
    let gone = User::login(&server, &alice.email, "secret123")
        .await
        .unwrap();
    let gone_token = gone.token();
    assert_eq!(post(&gone, "/api/auth/logout", json!({})).await.0, 200);
    server.stop().await;

    let server = TestServer::start_with(dir.path(), same_secret).await;
    assert_eq!(status_with_token(&server, &kept).await, 200);
    assert_eq!(status_with_token(&server, &gone_token).await, 401);
    server.stop().await;
}

#[tokio::test]
async fn a_tab_expecting_another_user_is_refused_and_a_replaced_session_ends() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let mut alice_socket = alice.socket().await;
    alice_socket.next_of("getOnlineUsers").await;

    // The browser's cookie jar now signs in as Bob (another tab logged in as him).
    let response = alice
        .http
        .post(server.url("/api/auth/login"))
        .json(&json!({ "email": bob.email, "password": "secret123" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Alice's session, which the cookie no longer holds, ended: her tab's socket closes.
    assert_eq!(alice_socket.closed_code().await, Some(4401));

    // The old tab still believes it is Alice: its send is refused, not made as Bob.
    let refused = alice
        .http
        .post(server.url(&format!("/api/messages/send/{}", alice.id)))
        .header("x-courier-user", &alice.id)
        .json(&json!({ "text": "sent as whom?" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["message"],
        "You are signed in as someone else in another tab"
    );
    let (_, history) = bob.get(&format!("/api/messages/{}", alice.id)).await;
    assert_eq!(history, json!([]), "nothing was sent as Bob");
    // Naming the right user is fine.
    let fine = alice
        .http
        .get(server.url("/api/auth/check"))
        .header("x-courier-user", &bob.id)
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
    server.stop().await;
}
