//! E-mail that nobody asked for is not sent: notification e-mails go only to addresses whose
//! owner opened the verification link, every one carries a way back and a way out (an
//! unsubscribe link and the one-click `List-Unsubscribe` headers), and the links are single-use
//! secrets that Courier keeps only as hashes.

mod common;

use std::time::Duration;

use common::{eventually, link_token, outbox_mail, outbox_mails, TestServer, User};
use courier::queue::model::JobState;
use serde_json::{json, Value};

/// The return values of the `notification` queue's completed jobs.
async fn notification_results(server: &TestServer) -> Vec<Value> {
    let queue = server.queues.queue("notification").unwrap();
    let page = queue.list(JobState::Completed, 0, 100).await.unwrap();
    page.jobs
        .iter()
        .filter_map(|job| job.status.return_value.as_deref())
        .filter_map(|text| serde_json::from_str(text).ok())
        .collect()
}

#[tokio::test]
async fn an_unverified_address_gets_no_notification_email() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    // Someone signs up with an address that is not theirs and never verifies it.
    let bob = User::signup(&server, "Bob").await;
    alice.send(&bob, "buy cheap watches").await;
    eventually("the notification job", || async {
        !notification_results(&server).await.is_empty()
    })
    .await;
    assert_eq!(
        notification_results(&server).await[0]["reason"],
        "e-mail address not verified"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mails = outbox_mails(&server.data_dir);
    assert!(
        !mails.iter().any(|mail| mail.contains("buy cheap watches")),
        "nothing of the message was mailed"
    );
    assert_eq!(
        server
            .queues
            .queue("email")
            .unwrap()
            .counts()
            .await
            .unwrap()
            .failed,
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn a_verified_address_gets_emails_with_a_way_back_and_a_way_out() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;

    let (status, settings) = bob.get("/api/auth/settings").await;
    assert_eq!(status, 200);
    assert_eq!(settings["emailVerified"], false);
    let invite = outbox_mail(&server.data_dir, &[&bob.email, "/verify-email#token="]).await;
    let (status, body) = bob.open_verification_link(&invite).await;
    assert_eq!(status, 200, "{body}");
    let (_, settings) = bob.get("/api/auth/settings").await;
    assert_eq!(settings["emailVerified"], true);
    assert_eq!(settings["emailNotifications"], true);

    alice.send(&bob, "are you there?").await;
    let mail = outbox_mail(&server.data_dir, &["are you there?"]).await;
    assert!(
        mail.contains(&format!("/chat/{}", alice.id)),
        "a way back: {mail}"
    );
    assert!(mail.contains("List-Unsubscribe: <"), "{mail}");
    assert!(
        mail.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{mail}"
    );
    let page_token = link_token(&mail, "/unsubscribe").expect("an unsubscribe link");

    // A forged or altered token is refused and changes nothing.
    let forged = format!("{}.AAAA", bob.id);
    let response = reqwest::Client::new()
        .post(server.url("/api/auth/unsubscribe"))
        .json(&json!({ "token": forged }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (_, settings) = bob.get("/api/auth/settings").await;
    assert_eq!(settings["emailNotifications"], true);

    // A mail client's one-click unsubscribe: a form post without any cookie.
    let one_click = mail
        .lines()
        .find_map(|line| line.strip_prefix("List-Unsubscribe: <"))
        .and_then(|rest| rest.strip_suffix('>'))
        .expect("the one-click address")
        .to_owned();
    let own_default = format!("http://localhost:{}", server.addr.port());
    let one_click = one_click.replacen(&own_default, &server.base, 1);
    let response = reqwest::Client::new()
        .post(&one_click)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "{one_click}: {}",
        response.text().await.unwrap()
    );
    let (_, settings) = bob.get("/api/auth/settings").await;
    assert_eq!(settings["emailNotifications"], false);

    // The unsubscribe page's token works too, and turning e-mails back on is the user's.
    let response = reqwest::Client::new()
        .post(server.url("/api/auth/unsubscribe"))
        .json(&json!({ "token": page_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = bob
        .http
        .put(server.url("/api/auth/settings"))
        .json(&json!({ "emailNotifications": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["emailNotifications"], true);
    server.stop().await;
}

#[tokio::test]
async fn verification_links_work_once_and_are_stored_only_as_hashes() {
    // On sled: the check at the end reads every file the database keeps.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let bob = User::signup(&server, "Bob").await;
    let invite = outbox_mail(&server.data_dir, &[&bob.email, "/verify-email#token="]).await;
    let secret = link_token(&invite, "/verify-email").unwrap();

    // Asking again at once is refused with the real wait.
    let response = bob
        .http
        .post(server.url("/api/auth/resend-verification"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=60).contains(&wait), "Retry-After {wait}");

    let (status, _) = bob.open_verification_link(&invite).await;
    assert_eq!(status, 200);
    let (status, body) = bob.open_verification_link(&invite).await;
    assert_eq!(status, 400, "a link works once: {body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("invalid or has expired"));
    let response = reqwest::Client::new()
        .post(server.url("/api/auth/verify-email"))
        .json(&json!({ "token": "made-up" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Verified: no more links.
    let response = bob
        .http
        .post(server.url("/api/auth/resend-verification"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Nothing Courier keeps, the database and its logs included, holds the link's secret.
    let data_dir = server.data_dir.clone();
    server.stop().await;
    let mut pending = vec![data_dir.clone()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            if path.ends_with("outbox") {
                continue;
            }
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes()),
                "{} holds the secret",
                path.display()
            );
        }
    }
}
