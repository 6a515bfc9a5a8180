//! `GET /api/messages/search` on a real server: words found without case or accents and by
//! prefix, newest first, with senders populated; only the caller's own conversations (a third
//! user finds nothing of anyone else's, a non-member gets 404 for a group), filters, pages, the
//! current text of edited and deleted messages, and clear 400s for bad input.

mod common;

use common::{eventually, TestServer, User};
use serde_json::{json, Value};

async fn search(user: &User, query: &str) -> (u16, Value) {
    user.get(&format!("/api/messages/search?{query}")).await
}

fn texts(found: &Value) -> Vec<String> {
    found["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("messages: {found}"))
        .iter()
        .map(|message| message["text"].as_str().unwrap().to_owned())
        .collect()
}

async fn call(user: &User, method: &str, path: &str, body: Value) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = user
        .http
        .request(method, format!("{}{}", user.base_url(), path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends and waits until the message is stored (a send is a queued job).
async fn sent(from: &User, to: &User, text: &str) -> String {
    let body = from.send(to, text).await;
    let id = body["messageId"].as_str().unwrap().to_owned();
    eventually("the message to be stored", || async {
        from.history_texts(to, "?limit=200")
            .await
            .contains(&text.to_owned())
    })
    .await;
    id
}

#[tokio::test]
async fn words_are_found_in_the_caller_s_conversations_only() {
    let server = TestServer::memory().await;
    let ada = User::signup(&server, "Ada Search").await;
    let bob = User::signup(&server, "Bob Search").await;
    let eve = User::signup(&server, "Eve Search").await;
    sent(&ada, &bob, "Le Café ouvre à huit heures").await;
    sent(&bob, &ada, "the cafeteria downstairs is better").await;
    sent(&bob, &eve, "cafe secret between bob and eve").await;

    let (status, found) = search(&ada, "q=CAFE").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        texts(&found),
        [
            "the cafeteria downstairs is better",
            "Le Café ouvre à huit heures"
        ]
    );
    assert_eq!(found["pagination"]["totalMessages"], 2);
    assert_eq!(found["pagination"]["hasMore"], false);
    let first = &found["messages"][0];
    assert_eq!(first["senderId"]["_id"], bob.id.as_str());
    assert_eq!(first["senderId"]["fullName"], "Bob Search");
    assert_eq!(first["receiverId"], ada.id.as_str());

    // Every word must match, each as a prefix.
    let (_, found) = search(&ada, "q=caf%20huit").await;
    assert_eq!(texts(&found), ["Le Café ouvre à huit heures"]);

    // The third user sees only their own conversation, whatever they ask for.
    let (_, found) = search(&eve, "q=cafe").await;
    assert_eq!(texts(&found), ["cafe secret between bob and eve"]);
    let (_, found) = search(&eve, "q=ouvre").await;
    assert_eq!(texts(&found), Vec::<String>::new());
    let (status, found) = search(&eve, &format!("q=cafe&userId={}", ada.id)).await;
    assert_eq!(
        (status, texts(&found)),
        (200, vec![]),
        "eve and ada never talked"
    );
    let (status, found) = search(&ada, &format!("q=cafe&userId={}", bob.id)).await;
    assert_eq!((status, texts(&found).len()), (200, 2));
    let (status, _) = search(&ada, "q=cafe&userId=0123456789abcdef01234567").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn group_messages_are_found_by_members_only() {
    let server = TestServer::memory().await;
    let ada = User::signup(&server, "Ada Group").await;
    let bob = User::signup(&server, "Bob Group").await;
    let eve = User::signup(&server, "Eve Group").await;
    let (status, group) = call(
        &ada,
        "POST",
        "/api/groups",
        json!({ "name": "Planners", "members": [bob.id] }),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group_id = group["_id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &bob,
        "POST",
        &format!("/api/groups/{group_id}/messages"),
        json!({ "text": "the launch is on Friday" }),
    )
    .await;
    assert_eq!(status, 202);
    eventually("the group message to be searchable", || async {
        texts(&search(&ada, "q=launch").await.1) == ["the launch is on Friday"]
    })
    .await;
    let (_, found) = search(&ada, &format!("q=fri&groupId={group_id}")).await;
    assert_eq!(texts(&found), ["the launch is on Friday"]);
    assert_eq!(found["messages"][0]["groupId"], group_id.as_str());
    assert_eq!(found["messages"][0]["senderId"]["fullName"], "Bob Group");
    // "joined" is only in system messages, which are not searched.
    let (_, found) = search(&ada, "q=planners").await;
    assert_eq!(texts(&found), Vec::<String>::new());

    let (status, found) = search(&eve, &format!("q=launch&groupId={group_id}")).await;
    assert_eq!(status, 404, "{found}");
    let (_, found) = search(&eve, "q=launch").await;
    assert_eq!(texts(&found), Vec::<String>::new());

    // A member removed finds nothing of the group any more.
    let (status, _) = call(
        &ada,
        "DELETE",
        &format!("/api/groups/{group_id}/members"),
        json!({ "userId": bob.id }),
    )
    .await;
    assert_eq!(status, 200);
    let (_, found) = search(&bob, "q=launch").await;
    assert_eq!(texts(&found), Vec::<String>::new());
    server.stop().await;
}

#[tokio::test]
async fn edits_deletes_filters_and_pages() {
    let server = TestServer::memory().await;
    let ada = User::signup(&server, "Ada Pages").await;
    let bob = User::signup(&server, "Bob Pages").await;
    let mut ids = Vec::new();
    for n in 0..7 {
        let from = if n % 2 == 0 { &ada } else { &bob };
        let to = if n % 2 == 0 { &bob } else { &ada };
        ids.push(sent(from, to, &format!("report number {n}")).await);
    }
    let (_, page) = search(&ada, "q=report&limit=3&page=2").await;
    assert_eq!(
        texts(&page),
        ["report number 3", "report number 2", "report number 1"]
    );
    let pagination = &page["pagination"];
    assert_eq!(
        (
            pagination["currentPage"].as_u64(),
            pagination["totalPages"].as_u64(),
            pagination["totalMessages"].as_u64(),
            pagination["hasMore"].as_bool()
        ),
        (Some(2), Some(3), Some(7), Some(true))
    );
    let (_, by_bob) = search(&ada, &format!("q=report&sender={}", bob.id)).await;
    assert_eq!(by_bob["pagination"]["totalMessages"], 3);
    let (_, images) = search(&ada, "q=report&messageType=image").await;
    assert_eq!(images["pagination"]["totalMessages"], 0);
    let (_, today) = search(&ada, "q=report&messageType=text&dateRange=week").await;
    assert_eq!(today["pagination"]["totalMessages"], 7);

    // Edited: found by the new text only; deleted: not at all.
    let (status, body) = call(
        &ada,
        "PUT",
        &format!("/api/messages/edit/{}", ids[0]),
        json!({ "text": "summary number 0" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &ada,
        "DELETE",
        &format!("/api/messages/{}", ids[2]),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, found) = search(&ada, "q=report").await;
    assert_eq!(found["pagination"]["totalMessages"], 5);
    let (_, found) = search(&bob, "q=summ").await;
    assert_eq!(texts(&found), ["summary number 0"]);
    assert_eq!(found["messages"][0]["isEdited"], true);
    server.stop().await;
}

#[tokio::test]
async fn bad_searches_are_400s_with_a_message() {
    let server = TestServer::memory().await;
    let ada = User::signup(&server, "Ada Bad").await;
    for query in [
        "q=",
        "q=%20%2C%3B",
        "q=hello&messageType=video",
        "q=hello&dateRange=decade",
        "q=hello&limit=0",
        "q=hello&limit=51",
        "q=hello&page=0",
        "q=hello&page=x",
        "q=hello&userId=a&groupId=b",
    ] {
        let (status, body) = search(&ada, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{query}: {body}"
        );
    }
    let long = "a".repeat(201);
    let (status, _) = search(&ada, &format!("q={long}")).await;
    assert_eq!(status, 400);
    let anonymous = reqwest::get(server.url("/api/messages/search?q=hello"))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    server.stop().await;
}

/// `SEARCH_INDEX=off`: searches answer 403 with the reason; turned on again, the index is
/// rebuilt from the messages as they are (written and edited while it was off included).
#[tokio::test]
async fn the_index_can_be_turned_off_and_is_rebuilt_when_turned_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let ada = User::signup(&server, "Ada Toggle").await;
    let bob = User::signup(&server, "Bob Toggle").await;
    let first = sent(&ada, &bob, "alpha one").await;
    server.stop().await;

    let server = TestServer::start_with(dir.path(), |config| config.search_index = false).await;
    let ada = User::login(&server, &ada.email, "secret123").await.unwrap();
    let bob = User::login(&server, &bob.email, "secret123").await.unwrap();
    sent(&ada, &bob, "alpha two").await;
    let (status, body) = call(
        &ada,
        "PUT",
        &format!("/api/messages/edit/{first}"),
        json!({ "text": "beta one" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = search(&ada, "q=alpha").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("SEARCH_INDEX"),
        "{body}"
    );
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let ada = User::login(&server, &ada.email, "secret123").await.unwrap();
    let (_, found) = search(&ada, "q=alpha").await;
    assert_eq!(texts(&found), ["alpha two"]);
    assert_eq!(
        found["pagination"]["totalMessages"], 1,
        "the old entry is cleared"
    );
    let (_, found) = search(&ada, "q=beta").await;
    assert_eq!(texts(&found), ["beta one"]);
    server.stop().await;
}
