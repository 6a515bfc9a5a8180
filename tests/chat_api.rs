//! The chat API through the real server: accounts, sending through the queue, history,
//! authorization, bad input, retries, restarts and e-mail.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{eventually, texts, TestServer, User};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

fn png_data_url() -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(PNG)
    )
}

/// Waits until `job_id` reaches a final state and returns its status.
async fn settled(user: &User, job_id: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..1000 {
        let (status, body) = user.get(&format!("/api/messages/status/{job_id}")).await;
        assert_eq!(status, 200, "status: {body}");
        if body["state"] == "completed" || body["state"] == "failed" {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {job_id} did not settle: {last}");
}

#[tokio::test]
async fn sign_up_log_in_check_and_log_out() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice Example").await;
    let (status, me) = alice.get("/api/auth/check").await;
    assert_eq!(status, 200);
    assert_eq!(me["_id"], alice.id.as_str());
    assert_eq!(me["fullName"], "Alice Example");
    assert_eq!(me["email"], "alice.example@example.com");
    assert!(me.get("password").is_none() && me.get("passwordHash").is_none());
    assert!(me["createdAt"].as_str().unwrap().ends_with('Z'));

    // The cookie is http-only and lasts 7 days; the body carries no token.
    let (http, _) = common::client();
    let response = http
        .post(server.url("/api/auth/login"))
        .json(&json!({ "email": "  ALICE.example@example.com ", "password": "secret123" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("jwt="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Max-Age=604800"),
        "{cookie}"
    );
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let body: Value = response.json().await.unwrap();
    assert!(!body.to_string().contains(&alice.token()[..20]));

    // Bearer works too.
    let bearer = http
        .get(server.url("/api/auth/check"))
        .bearer_auth(alice.token())
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);

    // Logout clears the cookie, and the client is then anonymous.
    let response = alice
        .http
        .post(server.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cleared = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(alice.get("/api/auth/check").await.0, 401);
    server.stop().await;
}

#[tokio::test]
async fn passwords_are_really_verified_and_failures_say_nothing_more() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let (http, _) = common::client();
    let attempt = |email: &'static str, password: &'static str| {
        let http = http.clone();
        let url = server.url("/api/auth/login");
        async move {
            let response = http
                .post(url)
                .json(&json!({ "email": email, "password": password }))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let wrong_password = attempt("alice@example.com", "not-the-password").await;
    let unknown_email = attempt("nobody@example.com", "secret123").await;
    assert_eq!(
        wrong_password,
        (400, json!({ "message": "Invalid credentials" }))
    );
    assert_eq!(unknown_email, wrong_password);
    // A missing password is a 400, not a 500.
    let response = http
        .post(server.url("/api/auth/login"))
        .json(&json!({ "email": "alice@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(User::login(&server, &alice.email, "secret123")
        .await
        .is_some());
    server.stop().await;
}

/// A client whose connections come from `address` (any of 127.0.0.0/8 reaches the server).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(address.parse().unwrap()))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn try_login(
    http: &reqwest::Client,
    server: &TestServer,
    password: &str,
) -> reqwest::Response {
    http.post(server.url("/api/auth/login"))
        .json(&json!({ "email": "alice@example.com", "password": password }))
        .send()
        .await
        .unwrap()
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_guesser_is_slowed_down_while_the_owner_still_logs_in_from_elsewhere() {
    let server = TestServer::memory_with(|config| {
        config.login_max_failures = 3;
    })
    .await;
    User::signup(&server, "Alice").await;
    let attacker = client_from("127.0.0.66");
    for _ in 0..3 {
        assert_eq!(
            try_login(&attacker, &server, "wrong-password")
                .await
                .status(),
            400
        );
    }
    // The guesser now waits, even with the right password: it must not learn when it guessed right.
    let waiting = try_login(&attacker, &server, "secret123").await;
    assert_eq!(waiting.status(), 429);
    assert_eq!(retry_after(&waiting), 1);
    // The owner, from an address that has not failed, is not slowed down at all.
    let owner = client_from("127.0.0.7");
    assert_eq!(try_login(&owner, &server, "secret123").await.status(), 200);
    // After the wait the guesser gets one more try, and the next wait is twice as long.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        try_login(&attacker, &server, "wrong-password")
            .await
            .status(),
        400
    );
    let longer = try_login(&attacker, &server, "wrong-password").await;
    assert_eq!(longer.status(), 429);
    assert_eq!(retry_after(&longer), 2, "Retry-After is the real wait");
    server.stop().await;
}

#[tokio::test]
async fn one_address_guessing_across_accounts_is_stopped() {
    let server = TestServer::memory_with(|config| {
        config.login_max_failures = 1;
    })
    .await;
    User::signup(&server, "Alice").await;
    let sprayer = client_from("127.0.0.66");
    // Five failures per allowed one, each on a different account, are within every pair's limit.
    for n in 0..5 {
        let response = sprayer
            .post(server.url("/api/auth/login"))
            .json(&json!({ "email": format!("user{n}@example.com"), "password": "guess" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
    let stopped = try_login(&sprayer, &server, "secret123").await;
    assert_eq!(stopped.status(), 429);
    let wait = retry_after(&stopped);
    assert!((890..=900).contains(&wait), "waits out the window: {wait}");
    assert_eq!(
        try_login(&client_from("127.0.0.7"), &server, "secret123")
            .await
            .status(),
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn sign_ups_and_logins_are_rate_limited_per_ip() {
    let server = TestServer::memory_with(|config| {
        config.rate_limit_auth = 8;
    })
    .await;
    User::signup(&server, "Alice").await;
    let (http, _) = common::client();
    // 8 attempts a minute in all per address (the sign-up was one).
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            try_login(&http, &server, "wrong-password")
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(&statuses[..7], &[400; 7]);
    assert_eq!(statuses[7], 429);
    server.stop().await;
}

#[tokio::test]
async fn sign_up_refuses_bad_input_and_duplicate_emails() {
    let server = TestServer::memory().await;
    User::signup(&server, "Alice").await;
    let (http, _) = common::client();
    let cases = [
        (
            json!({ "fullName": "B", "email": "b@example.com" }),
            "All fields are required",
        ),
        (
            json!({ "fullName": "B", "email": "b@example.com", "password": "12345" }),
            "at least 6",
        ),
        (
            json!({ "fullName": "B", "email": "not-an-email", "password": "secret123" }),
            "Invalid email",
        ),
        (
            json!({ "fullName": "A", "email": "ALICE@example.com", "password": "secret123" }),
            "Email already exists",
        ),
        (
            json!({ "fullName": 42, "email": "b@example.com", "password": "secret123" }),
            "invalid request body",
        ),
    ];
    for (body, expected) in cases {
        let response = http
            .post(server.url("/api/auth/signup"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let message: Value = response.json().await.unwrap();
        assert!(
            message["message"].as_str().unwrap().contains(expected),
            "{body} → {message}"
        );
    }
    let malformed = http
        .post(server.url("/api/auth/signup"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn a_message_goes_through_the_queue_into_history() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let sent = alice.send(&bob, "hello bob").await;
    assert_eq!(sent["message"], "Message queued for processing");
    assert_eq!(sent["status"], "queued");
    let job_id = sent["jobId"].as_str().unwrap();
    let status = settled(&alice, job_id).await;
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["queue"], "message");
    assert_eq!(status["name"], "process-message");
    assert_eq!(status["progress"], 100);
    assert_eq!(status["attempts"], 3);

    let history = bob.history(&alice, "").await;
    assert_eq!(history.len(), 1);
    let message = &history[0];
    assert_eq!(message["_id"], sent["messageId"]);
    assert_eq!(message["senderId"], alice.id.as_str());
    assert_eq!(message["receiverId"], bob.id.as_str());
    assert_eq!(message["text"], "hello bob");
    assert_eq!(message["seq"], 1);
    assert_eq!(alice.history(&bob, "").await, history);

    // The sidebar lists every other user with unread counts and the last message.
    let (_, sidebar) = bob.get("/api/messages/users").await;
    let row = sidebar
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["_id"] == alice.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["unreadCount"], 1);
    assert_eq!(row["lastMessage"]["text"], "hello bob");
    assert!(sidebar.to_string().find("password").is_none());
    assert!(sidebar
        .as_array()
        .unwrap()
        .iter()
        .all(|row| row["_id"] != bob.id.as_str()));
    server.stop().await;
}

#[tokio::test]
async fn history_pages_backwards_and_catches_up_forwards() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let mut last_job = String::new();
    for n in 1..=12 {
        let (from, to) = if n % 2 == 0 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        last_job = from.send(to, &format!("message {n}")).await["jobId"]
            .as_str()
            .unwrap()
            .to_owned();
        // Sends are processed in order when each settles before the next.
        let sender = if n % 2 == 0 { &alice } else { &bob };
        settled(sender, &last_job).await;
    }
    let latest = alice.history(&bob, "?limit=5").await;
    assert_eq!(
        texts(&latest),
        (8..=12).map(|n| format!("message {n}")).collect::<Vec<_>>()
    );
    let before = alice
        .history(&bob, &format!("?before={}&limit=5", latest[0]["seq"]))
        .await;
    assert_eq!(
        texts(&before),
        (3..=7).map(|n| format!("message {n}")).collect::<Vec<_>>()
    );
    let after = alice.history(&bob, "?after=10").await;
    assert_eq!(texts(&after), vec!["message 11", "message 12"]);
    for query in ["?limit=0", "?limit=1000", "?before=x", "?before=1&after=2"] {
        let (status, body) = alice.get(&format!("/api/messages/{}{query}", bob.id)).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    assert!(!last_job.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn only_the_sender_or_the_admin_sees_a_job_and_strangers_see_nothing() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let eve = User::signup(&server, "Eve").await;
    let sent = alice.send(&bob, "private").await;
    let job_id = sent["jobId"].as_str().unwrap();
    settled(&alice, job_id).await;
    assert_eq!(
        bob.get(&format!("/api/messages/status/{job_id}")).await.0,
        404
    );
    assert_eq!(
        eve.get(&format!("/api/messages/status/{job_id}")).await.0,
        404
    );
    let (http, _) = common::client();
    let anonymous = http
        .get(server.url(&format!("/api/messages/status/{job_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let admin = http
        .get(server.url(&format!("/api/messages/status/{job_id}")))
        .header("x-admin-key", &server.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    let wrong_key = http
        .get(server.url(&format!("/api/messages/status/{job_id}")))
        .header("x-admin-key", "guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), 401);

    // Eve's view of Alice: only Eve's own (empty) conversation with her.
    assert!(eve.history(&alice, "").await.is_empty());
    for path in [
        "/api/messages/users",
        &format!("/api/messages/{}", bob.id),
        "/api/auth/check",
    ] {
        let response = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(body["message"]
            .as_str()
            .unwrap()
            .starts_with("Unauthorized"));
    }
    let forged = http
        .get(server.url("/api/auth/check"))
        .header("cookie", "jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn images_are_checked_stored_and_served_by_content() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let (status, sent) = alice
        .send_json(&bob.id, json!({ "image": png_data_url() }))
        .await;
    assert_eq!(status, 202, "{sent}");
    settled(&alice, sent["jobId"].as_str().unwrap()).await;
    let history = bob.history(&alice, "").await;
    let url = history[0]["image"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("/uploads/") && url.len() == "/uploads/".len() + 64,
        "{url}"
    );
    let response = bob.http.get(server.url(&url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert_eq!(response.bytes().await.unwrap().as_ref(), PNG);
    assert_eq!(
        bob.http
            .get(server.url("/uploads/"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        bob.http
            .get(server.url("/uploads/..%2Fsecrets%2Fjwt_secret"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Multipart works too.
    let form = reqwest::multipart::Form::new()
        .text("text", "with a picture")
        .part(
            "image",
            reqwest::multipart::Part::bytes(PNG.to_vec()).file_name("x.png"),
        );
    let response = alice
        .http
        .post(server.url(&format!("/api/messages/send/{}", bob.id)))
        // A browser sends its page's origin with a form; without one the cookie is refused.
        .header("origin", &server.base)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    // Profile pictures.
    let response = alice
        .http
        .put(server.url("/api/auth/update-profile"))
        .json(&json!({ "profilePic": png_data_url() }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let user: Value = response.json().await.unwrap();
    assert!(user["profilePic"]
        .as_str()
        .unwrap()
        .starts_with("/uploads/"));
    server.stop().await;
}

#[tokio::test]
async fn bad_sends_get_a_clear_4xx_and_store_nothing() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let fake_png = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(b"I am a text file named .png")
    );
    let cases: Vec<(String, Value, u16)> = vec![
        (bob.id.clone(), json!({}), 400),
        (bob.id.clone(), json!({ "text": "   " }), 400),
        (bob.id.clone(), json!({ "text": 42 }), 400),
        (bob.id.clone(), json!({ "text": "x".repeat(10_001) }), 400),
        (bob.id.clone(), json!({ "image": fake_png }), 400),
        (
            bob.id.clone(),
            json!({ "image": "data:image/png;base64,%%%" }),
            400,
        ),
        (
            "000000000000000000000000".to_owned(),
            json!({ "text": "hi" }),
            404,
        ),
        ("not-an-id".to_owned(), json!({ "text": "hi" }), 404),
    ];
    for (to, body, expected) in cases {
        let (status, answer) = alice.send_json(&to, body.clone()).await;
        let shown = body.to_string().chars().take(60).collect::<String>();
        assert_eq!(status, expected, "{shown} → {answer}");
        assert!(answer["message"].is_string(), "{shown} → {answer}");
    }
    // Malformed JSON and an oversized body.
    let url = server.url(&format!("/api/messages/send/{}", bob.id));
    let malformed = alice
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"text\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let huge = alice
        .http
        .post(&url)
        .json(&json!({ "text": "x".repeat(9 * 1024 * 1024) }))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    // A fake image as multipart.
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(b"just text".to_vec()).file_name("cat.png"),
    );
    let fake = alice
        .http
        .post(&url)
        .header("origin", &server.base)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(fake.status(), 400);
    let counts = server
        .queues
        .queue("message")
        .unwrap()
        .counts()
        .await
        .unwrap();
    assert_eq!(counts.total(), 0);
    assert!(alice.history(&bob, "").await.is_empty());
    let uploads = std::fs::read_dir(server.data_dir.join("uploads"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(uploads, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_job_that_fails_after_saving_still_yields_exactly_one_message() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    server.chat.inject_failures_after_save(1);
    let sent = alice.send(&bob, "exactly once").await;
    let status = settled(&alice, sent["jobId"].as_str().unwrap()).await;
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["attemptsMade"], 2);
    let history = bob.history(&alice, "").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["_id"], sent["messageId"]);
    server.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_accounts_history_and_pending_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let first = alice.send(&bob, "before restart").await;
    settled(&alice, first["jobId"].as_str().unwrap()).await;
    server
        .queues
        .queue("message")
        .unwrap()
        .pause()
        .await
        .unwrap();
    let pending = alice.send(&bob, "queued across the restart").await;
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let alice = User::login(&server, &alice.email, "secret123")
        .await
        .expect("account survives");
    let job = server
        .queues
        .queue("message")
        .unwrap()
        .get(pending["jobId"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        job.expect("pending job survives").status.state.as_str(),
        "waiting"
    );
    server
        .queues
        .queue("message")
        .unwrap()
        .resume()
        .await
        .unwrap();
    settled(&alice, pending["jobId"].as_str().unwrap()).await;
    let texts: Vec<Value> = alice
        .history(&bob, "")
        .await
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(
        texts,
        vec![json!("before restart"), json!("queued across the restart")]
    );
    server.stop().await;
}

/// A tiny SMTP server: records each message's DATA, or refuses every sender with `refuse`.
async fn smtp_sink(
    refuse: Option<&'static str>,
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tell, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tell = tell.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 sink ESMTP\r\n").await.ok()?;
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(body) = data.as_mut() {
                        if line == "." {
                            let _ = tell.send(std::mem::take(body));
                            data = None;
                            write.write_all(b"250 queued\r\n").await.ok()?;
                        } else {
                            body.push_str(&line);
                            body.push('\n');
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: String = match verb.as_str() {
                        "EHLO" | "HELO" => "250 sink\r\n".into(),
                        "MAIL" => match refuse {
                            Some(reason) => format!("550 {reason}\r\n"),
                            None => "250 ok\r\n".into(),
                        },
                        "RCPT" => "250 ok\r\n".into(),
                        "DATA" => {
                            data = Some(String::new());
                            "354 go ahead\r\n".into()
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await.ok()?;
                            return Some(());
                        }
                        _ => "250 ok\r\n".into(),
                    };
                    write.write_all(reply.as_bytes()).await.ok()?;
                }
                Some(())
            });
        }
    });
    (port, received)
}

/// The next e-mail the sink received, readable; panics after 20 s.
async fn next_mail(received: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    let mail = tokio::time::timeout(Duration::from_secs(20), received.recv())
        .await
        .expect("an e-mail within 20 s")
        .expect("the sink is running");
    common::readable_mail(&mail)
}

#[tokio::test]
async fn an_offline_receiver_gets_one_email_per_conversation_window() {
    let (port, mut received) = smtp_sink(None).await;
    let server = TestServer::memory_with(|config| {
        config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        config.email_from = Some("Courier <courier@example.com>".to_owned());
    })
    .await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    // Only a verified address gets notification e-mails: Bob opens the link he was sent.
    loop {
        let mail = next_mail(&mut received).await;
        if mail.contains("bob@example.com") && mail.contains("/verify-email#token=") {
            let (status, body) = bob.open_verification_link(&mail).await;
            assert_eq!(status, 200, "{body}");
            break;
        }
    }
    alice.send(&bob, "are you there?").await;
    // Alice's own verification mail may arrive after Bob's: the e-mail queue runs jobs side by side.
    let email = loop {
        let mail = next_mail(&mut received).await;
        if !mail.contains("/verify-email#token=") {
            break mail;
        }
    };
    assert!(email.contains("bob@example.com"), "{email}");
    assert!(email.contains("New message from Alice"), "{email}");
    assert!(email.contains("are you there?"), "{email}");
    // A second message within 15 minutes sends no second e-mail.
    let second = alice.send(&bob, "hello?").await;
    settled(&alice, second["jobId"].as_str().unwrap()).await;
    let notifications = server.queues.queue("notification").unwrap();
    eventually("both notifications done", || async {
        notifications.counts().await.unwrap().completed == 2
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), received.recv())
            .await
            .is_err()
    );
    server.stop().await;
}

/// An e-mail waits in its queue; the message it is about may change meanwhile: a deleted one is
/// never mailed, an edited one is mailed with its current text.
#[tokio::test]
async fn a_queued_email_follows_the_message_it_is_about() {
    let (port, mut received) = smtp_sink(None).await;
    let server = TestServer::memory_with(|config| {
        config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
    })
    .await;
    let alice = User::signup(&server, "Alice").await;
    let carol = User::signup(&server, "Carol").await;
    let bob = User::signup(&server, "Bob").await;
    loop {
        let mail = next_mail(&mut received).await;
        if mail.contains("bob@example.com") && mail.contains("/verify-email#token=") {
            let (status, body) = bob.open_verification_link(&mail).await;
            assert_eq!(status, 200, "{body}");
            break;
        }
    }
    // Let the other verification mails through, then hold the e-mail queue.
    let email_queue = server.queues.queue("email").unwrap();
    // (Completed e-mail jobs are not kept: "done" is an empty queue.)
    let idle = || async {
        let counts = email_queue.counts().await.unwrap();
        counts.waiting + counts.active + counts.delayed == 0
    };
    eventually("the verification mails to be sent", idle).await;
    while tokio::time::timeout(Duration::from_millis(200), received.recv())
        .await
        .is_ok()
    {}
    email_queue.pause().await.unwrap();

    let taken_back = alice.send(&bob, "the secret plan").await;
    let drafted = carol.send(&bob, "draft wording").await;
    let notifications = server.queues.queue("notification").unwrap();
    eventually("both e-mails to be queued", || async {
        notifications.counts().await.unwrap().completed >= 2
    })
    .await;
    assert_eq!(email_queue.counts().await.unwrap().waiting, 2);
    let id = taken_back["messageId"].as_str().unwrap();
    let response = alice
        .http
        .delete(server.url(&format!("/api/messages/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = drafted["messageId"].as_str().unwrap();
    let response = carol
        .http
        .put(server.url(&format!("/api/messages/edit/{id}")))
        .json(&serde_json::json!({ "text": "final wording" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    email_queue.resume().await.unwrap();
    let mail = next_mail(&mut received).await;
    assert!(mail.contains("New message from Carol"), "{mail}");
    assert!(
        mail.contains("final wording") && !mail.contains("draft"),
        "{mail}"
    );
    eventually("both e-mail jobs to finish", idle).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), received.recv())
            .await
            .is_err(),
        "the deleted message was mailed"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_refusing_smtp_server_fails_the_email_job_with_its_reason() {
    let (port, _received) = smtp_sink(Some("5.7.1 relaying denied")).await;
    let server = TestServer::memory_with(|config| {
        config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"))
    })
    .await;
    // The sign-up's verification e-mail is the first one the server refuses.
    User::signup(&server, "Alice").await;
    let email_queue = server.queues.queue("email").unwrap();
    // The job retries with backoff (2 s, 4 s, ...): promote each retry instead of waiting.
    eventually("the e-mail job to fail for good", || async {
        for job in email_queue
            .list(courier::queue::model::JobState::Delayed, 0, 10)
            .await
            .unwrap()
            .jobs
        {
            let _ = email_queue.promote(&job.id).await;
        }
        email_queue.counts().await.unwrap().failed == 1
    })
    .await;
    let failed = email_queue
        .list(courier::queue::model::JobState::Failed, 0, 1)
        .await
        .unwrap();
    let job = &failed.jobs[0];
    assert_eq!(job.status.attempts_made, 5);
    assert!(
        job.status
            .failed_reason
            .as_deref()
            .unwrap()
            .contains("relaying denied"),
        "{:?}",
        job.status.failed_reason
    );
    server.stop().await;
}

#[tokio::test]
async fn without_smtp_emails_land_in_the_outbox() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    bob.verify_from_outbox(&server.data_dir).await;
    alice.send(&bob, "see you in the outbox").await;
    let mail = common::outbox_mail(&server.data_dir, &["see you in the outbox"]).await;
    assert!(mail.contains("bob@example.com"), "{mail}");
    server.stop().await;
}

#[tokio::test]
async fn a_retried_send_with_the_same_client_key_is_one_message() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let body = json!({ "text": "sent twice, stored once", "clientMessageId": "k-7f3a9c" });
    let (first_status, first) = alice.send_json(&bob.id, body.clone()).await;
    assert_eq!(first_status, 202, "{first}");
    settled(&alice, first["jobId"].as_str().unwrap()).await;
    // The answer was "lost": the client sends again with the same key.
    let (second_status, second) = alice.send_json(&bob.id, body.clone()).await;
    assert_eq!(second_status, 202, "{second}");
    assert_eq!(second["messageId"], first["messageId"]);
    assert_eq!(bob.history(&alice, "").await.len(), 1);
    // Another sender's identical key is another message; a bad key is refused.
    let (_, other) = bob.send_json(&alice.id, body).await;
    assert_ne!(other["messageId"], first["messageId"]);
    let (bad_status, _) = alice
        .send_json(
            &bob.id,
            json!({ "text": "x", "clientMessageId": "no spaces" }),
        )
        .await;
    assert_eq!(bad_status, 400);
    server.stop().await;
}

#[tokio::test]
async fn sends_are_refused_with_503_while_the_backlog_is_at_its_limit() {
    let server = TestServer::memory_with(|config| config.send_backlog_limit = 2).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    // Nothing is processed while the queue is paused: every send stays in the backlog.
    let queue = server.queues.queue("message").unwrap();
    queue.pause().await.unwrap();
    alice.send(&bob, "one").await;
    alice.send(&bob, "two").await;

    let response = alice
        .http
        .post(server.url(&format!("/api/messages/send/{}", bob.id)))
        .json(&json!({ "text": "three" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "The server is busy, try again shortly");
    // The refused send left nothing behind.
    assert_eq!(queue.counts().await.unwrap().waiting, 2);

    queue.resume().await.unwrap();
    eventually("the backlog to drain", || async {
        queue.counts().await.unwrap().waiting == 0
    })
    .await;
    alice.send(&bob, "three").await;
    eventually("three messages in the history", || async {
        alice.history(&bob, "").await.len() == 3
    })
    .await;
    assert_eq!(alice.history_texts(&bob, "").await, ["one", "two", "three"]);
    server.stop().await;
}

/// Sends 40 numbered messages in both directions (so an order must hold across the two
/// senders too) and returns their texts in send order.
async fn send_backlog(alice: &User, bob: &User) -> Vec<String> {
    let sent: Vec<String> = (0..40).map(|n| format!("message {n:02}")).collect();
    for (n, text) in sent.iter().enumerate() {
        if n % 3 == 2 {
            bob.send(alice, text).await;
        } else {
            alice.send(bob, text).await;
        }
    }
    sent
}

#[tokio::test]
async fn a_backlog_of_one_conversation_is_saved_in_the_order_it_was_sent() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    // A backlog builds while the queue is paused; on resume many of its jobs start side by side.
    let queue = server.queues.queue("message").unwrap();
    queue.pause().await.unwrap();
    let sent = send_backlog(&alice, &bob).await;
    queue.resume().await.unwrap();
    eventually("the whole backlog in the history", || async {
        alice.history(&bob, "").await.len() == sent.len()
    })
    .await;
    let history = alice.history(&bob, "").await;
    assert_eq!(texts(&history), sent);
    let seqs: Vec<u64> = history
        .iter()
        .map(|message| message["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=sent.len() as u64).collect::<Vec<_>>());
    eventually("every message out of the send order", || async {
        server.chat.messages_in_flight() == 0
    })
    .await;

    // A message whose job is removed before it runs holds nothing back.
    queue.pause().await.unwrap();
    let removed = alice.send(&bob, "never processed").await;
    assert_eq!(server.chat.messages_in_flight(), 1);
    queue
        .remove(removed["jobId"].as_str().unwrap())
        .await
        .unwrap();
    eventually("the removed message out of the send order", || async {
        server.chat.messages_in_flight() == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_backlog_left_by_a_restart_keeps_its_send_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    // The backlog is still queued when the server stops (the pause is kept on disk).
    server
        .queues
        .queue("message")
        .unwrap()
        .pause()
        .await
        .unwrap();
    let sent = send_backlog(&alice, &bob).await;
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    // Every queued message has its place in its conversation again.
    assert_eq!(server.chat.messages_in_flight(), sent.len());
    let alice = User::login(&server, "alice@example.com", "secret123")
        .await
        .unwrap();
    let bob = User::login(&server, "bob@example.com", "secret123")
        .await
        .unwrap();
    server
        .queues
        .queue("message")
        .unwrap()
        .resume()
        .await
        .unwrap();
    eventually("the whole backlog in the history", || async {
        alice.history(&bob, "").await.len() == sent.len()
    })
    .await;
    assert_eq!(alice.history_texts(&bob, "").await, sent);
    eventually("every message out of the send order", || async {
        server.chat.messages_in_flight() == 0
    })
    .await;
    server.stop().await;
}
