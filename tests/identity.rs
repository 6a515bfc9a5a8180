//! Impersonation: a name cannot carry characters that change how it displays, and two users
//! whose names look the same are told apart wherever others see them.

mod common;

use common::{TestServer, User};
use serde_json::{json, Value};

async fn sidebar(user: &User) -> Vec<Value> {
    let (status, body) = user.get("/api/messages/users").await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

fn entry<'a>(sidebar: &'a [Value], id: &str) -> &'a Value {
    sidebar
        .iter()
        .find(|user| user["_id"] == id)
        .expect("listed")
}

#[tokio::test]
async fn names_lose_direction_overrides_and_invisible_characters() {
    let server = TestServer::memory().await;
    let (http, _jar) = common::client();
    // Behind a right-to-left override, "nitraM ecilA" would display as "Alice Martin"; without
    // the override it shows what it is.
    let response = http
        .post(server.url("/api/auth/signup"))
        .json(&json!({
            "fullName": "\u{202E}nitraM\u{200B} ecilA\u{202C}",
            "email": "mallory@example.com",
            "password": "secret123",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["fullName"], "nitraM ecilA");

    // A name of nothing but invisible characters is no name.
    let response = http
        .post(server.url("/api/auth/signup"))
        .json(&json!({
            "fullName": "\u{202E}\u{200B}\u{2066}",
            "email": "nobody@example.com",
            "password": "secret123",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn look_alike_names_carry_a_tag_that_tells_them_apart() {
    let server = TestServer::memory().await;
    let viewer = User::signup(&server, "Bob Stone").await;
    let alice = User::signup(&server, "Alice Martin").await;
    let impostor = User::signup(&server, "alice  martin.").await;
    let carol = User::signup(&server, "Carol King").await;
    let bob_lookalike = User::signup(&server, "Bob  Stone").await;

    let listed = sidebar(&viewer).await;
    let alice_tag = entry(&listed, &alice.id)["nameTag"]
        .as_str()
        .unwrap()
        .to_owned();
    let impostor_tag = entry(&listed, &impostor.id)["nameTag"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(alice_tag, impostor_tag, "the two Alices are told apart");
    assert!(
        entry(&listed, &carol.id).get("nameTag").is_none(),
        "a unique name has no tag"
    );
    assert!(
        entry(&listed, &bob_lookalike.id)["nameTag"].is_string(),
        "nobody passes for the viewer"
    );

    // The tag is the user's own: the same wherever they are listed.
    let seen_by_carol = sidebar(&carol).await;
    assert_eq!(
        entry(&seen_by_carol, &alice.id)["nameTag"],
        alice_tag.as_str()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_user_can_change_their_name_and_bad_input_changes_nothing() {
    let server = TestServer::memory().await;
    let ana = User::signup(&server, "Ana").await;
    let viewer = User::signup(&server, "Viewer").await;
    let update = |body: Value| {
        let request = ana
            .http
            .put(server.url("/api/auth/update-profile"))
            .json(&body)
            .send();
        async move {
            let response = request.await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = update(json!({ "fullName": "  Ana \u{202E}Lima  " })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fullName"], "Ana Lima");
    assert_eq!(
        entry(&sidebar(&viewer).await, &ana.id)["fullName"],
        "Ana Lima"
    );

    // An empty name, or a good name with a bad picture: refused whole.
    let (status, _) = update(json!({ "fullName": "\u{200B} " })).await;
    assert_eq!(status, 400);
    let (status, _) =
        update(json!({ "fullName": "Someone Else", "profilePic": "data:image/png;base64,AAAA" }))
            .await;
    assert_eq!(status, 400);
    let (_, me) = ana.get("/api/auth/check").await;
    assert_eq!(me["fullName"], "Ana Lima");
    server.stop().await;
}
