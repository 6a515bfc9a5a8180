//! Request forgery and socket hijacking: a page of another origin (another port of the same
//! host is the same *site*, so `SameSite=Strict` lets the cookie through) cannot open the
//! user's socket or act as the user with their cookie. Requests with their own token, and
//! origins listed in `CORS_ORIGINS`, are unaffected.

mod common;

use common::{TestServer, User};
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

/// What a page served from `origin` gets when it opens `/ws` in the user's browser (the
/// browser adds the cookie and the page's origin): the handshake status.
async fn open_socket(server: &TestServer, cookie: &str, origin: Option<&str>, query: &str) -> u16 {
    let url = format!("ws://{}/ws{query}", server.addr);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("cookie", format!("jwt={cookie}").parse().unwrap());
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("handshake failed: {other}"),
    }
}

/// A form-like send as a foreign page can make it: multipart, with the victim's cookie and no
/// preflight.
async fn forged_multipart_send(
    server: &TestServer,
    cookie: &str,
    to: &str,
    origin: Option<&str>,
) -> (u16, Value) {
    let form = reqwest::multipart::Form::new().text("text", "sent by someone else");
    let mut request = reqwest::Client::new()
        .post(server.url(&format!("/api/messages/send/{to}")))
        .header("cookie", format!("jwt={cookie}"))
        .multipart(form);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_page_of_another_origin_cannot_open_the_users_socket() {
    let server = TestServer::memory().await;
    let victim = User::signup(&server, "Victim").await;
    let friend = User::signup(&server, "Friend").await;
    let cookie = victim.token();
    // Another port of the same host: the same site, a different origin.
    let same_site = format!("http://127.0.0.1:{}", server.addr.port() + 1);
    let own = format!("http://{}", server.addr);

    assert_eq!(
        open_socket(&server, &cookie, Some(&same_site), "").await,
        403
    );
    assert_eq!(open_socket(&server, &cookie, Some("null"), "").await, 403);
    // A made-up token does not let the cookie through either: the token is judged, and fails.
    assert_eq!(
        open_socket(&server, &cookie, Some(&same_site), "?token=made-up").await,
        401
    );

    // The refused page never sees the victim's messages; Courier's own page does.
    let url = format!("ws://{}/ws", server.addr);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("cookie", format!("jwt={cookie}").parse().unwrap());
    request.headers_mut().insert("origin", own.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    friend.send(&victim, "private").await;
    let mut delivered = false;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await
    {
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "newMessage" && frame["data"]["text"] == "private" {
                delivered = true;
                break;
            }
        }
    }
    assert!(delivered, "the user's own page gets their messages");
    server.stop().await;
}

#[tokio::test]
async fn a_page_of_another_origin_cannot_send_as_the_user() {
    let server = TestServer::memory().await;
    let victim = User::signup(&server, "Victim").await;
    let friend = User::signup(&server, "Friend").await;
    let cookie = victim.token();
    let same_site = format!("http://127.0.0.1:{}", server.addr.port() + 1);

    let (status, body) =
        forged_multipart_send(&server, &cookie, &friend.id, Some(&same_site)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("origin"),
        "{body}"
    );
    // An old browser that sends no Origin: a form-like body is refused all the same.
    let (status, body) = forged_multipart_send(&server, &cookie, &friend.id, None).await;
    assert_eq!(status, 403, "{body}");
    // Fetch metadata says where a request came from when Origin is missing.
    let response = reqwest::Client::new()
        .post(server.url(&format!("/api/messages/send/{}", friend.id)))
        .header("cookie", format!("jwt={cookie}"))
        .header("sec-fetch-site", "same-site")
        .json(&json!({ "text": "json from a sibling" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // JSON from a foreign origin (a preflighted fetch would not even get here) is refused too.
    let response = reqwest::Client::new()
        .put(server.url("/api/auth/update-profile"))
        .header("cookie", format!("jwt={cookie}"))
        .header("origin", &same_site)
        .json(&json!({ "profilePic": "data:image/png;base64,AAAA" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        victim.history(&friend, "").await.is_empty(),
        "nothing was sent in the victim's name"
    );

    // The user's own page, a program with the cookie and JSON, and a Bearer token all work.
    let own = format!("http://{}", server.addr);
    let (status, body) = forged_multipart_send(&server, &cookie, &friend.id, Some(&own)).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = victim
        .send_json(&friend.id, json!({ "text": "from a program" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let response = reqwest::Client::new()
        .post(server.url(&format!("/api/messages/send/{}", friend.id)))
        .bearer_auth(&cookie)
        .header("origin", &same_site)
        .json(&json!({ "text": "with a token" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    server.stop().await;
}

#[tokio::test]
async fn configured_origins_may_use_the_cookie_and_get_cors_headers() {
    let front_end = "http://localhost:5173";
    let server = TestServer::memory_with(|config| {
        config.http.cors_origins = vec![front_end.to_owned()];
    })
    .await;
    let victim = User::signup(&server, "Victim").await;
    let friend = User::signup(&server, "Friend").await;
    let cookie = victim.token();

    let (status, body) = forged_multipart_send(&server, &cookie, &friend.id, Some(front_end)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        open_socket(&server, &cookie, Some(front_end), "").await,
        101
    );
    assert_eq!(
        open_socket(&server, &cookie, Some("http://localhost:5174"), "").await,
        403
    );

    let preflight = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            server.url(&format!("/api/messages/send/{}", friend.id)),
        )
        .header("origin", front_end)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], front_end);
    assert_eq!(headers["access-control-allow-credentials"], "true");

    // Another origin gets no CORS grant, so its scripts cannot read the answers.
    let response = reqwest::Client::new()
        .get(server.url("/api/auth/check"))
        .header("cookie", format!("jwt={cookie}"))
        .header("origin", "http://localhost:5174")
        .send()
        .await
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    server.stop().await;
}
