//! Shared test harness: the real server on 127.0.0.1:0 (through `courier::testing`, on memory
//! stores or on sled in a temp dir), and clients.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use courier::config::Config;
use courier::store::chat::ChatStore;
use courier::store::JobStore;
use futures_util::{SinkExt, StreamExt};
use reqwest::cookie::CookieStore as _;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A started [`courier::testing::TestServer`], with what tests read of it as fields.
pub struct TestServer {
    pub base: String,
    pub addr: std::net::SocketAddr,
    /// Uploads and the e-mail outbox (the sled directory when started on one).
    pub data_dir: PathBuf,
    pub chat: Arc<courier::chat::Chat>,
    pub queues: courier::queue::QueueManager,
    pub admin_key: String,
    server: courier::testing::TestServer,
}

impl TestServer {
    /// A server on memory stores: what every test uses unless it restarts on the same data.
    pub async fn memory() -> TestServer {
        TestServer::memory_with(|_| {}).await
    }

    pub async fn memory_with(configure: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::from_builder(courier::testing::TestServer::builder().configure(configure)).await
    }

    /// A server on sled in `data_dir`, for tests that stop and start again on the same data
    /// or open its stores afterwards.
    pub async fn start(data_dir: &Path) -> TestServer {
        TestServer::start_with(data_dir, |_| {}).await
    }

    pub async fn start_with(data_dir: &Path, configure: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::from_builder(
            courier::testing::TestServer::builder()
                .data_dir(data_dir)
                .configure(configure),
        )
        .await
    }

    async fn from_builder(builder: courier::testing::TestServerBuilder) -> TestServer {
        let server = match builder.start().await {
            Ok(server) => server,
            Err(err) => panic!("server starts: {err:#}"),
        };
        TestServer {
            base: server.url().to_owned(),
            addr: server.address(),
            data_dir: server.data_dir().to_owned(),
            chat: server.chat().clone(),
            queues: server.queues().clone(),
            admin_key: server.admin_key().to_owned(),
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Graceful shutdown; waits until the store is flushed.
    pub async fn stop(self) {
        if let Err(err) = self.server.stop().await {
            panic!("server stops cleanly: {err:#}");
        }
    }
}

/// A browser-like client: a cookie jar and the user it signed up as.
pub struct User {
    pub http: reqwest::Client,
    pub jar: Arc<reqwest::cookie::Jar>,
    pub id: String,
    pub email: String,
    pub name: String,
    base: String,
}

pub fn client() -> (reqwest::Client, Arc<reqwest::cookie::Jar>) {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let http = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    (http, jar)
}

impl User {
    pub async fn signup(server: &TestServer, name: &str) -> User {
        let (http, jar) = client();
        let email = format!("{}@example.com", name.to_lowercase().replace(' ', "."));
        let response = http
            .post(server.url("/api/auth/signup"))
            .json(&json!({ "fullName": name, "email": email, "password": "secret123" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "signup of {name}");
        let body: Value = response.json().await.unwrap();
        User {
            http,
            jar,
            id: body["_id"].as_str().unwrap().to_owned(),
            email,
            name: name.to_owned(),
            base: server.base.clone(),
        }
    }

    pub async fn login(server: &TestServer, email: &str, password: &str) -> Option<User> {
        let (http, jar) = client();
        let response = http
            .post(server.url("/api/auth/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        if response.status() != 200 {
            return None;
        }
        let body: Value = response.json().await.unwrap();
        Some(User {
            http,
            jar,
            id: body["_id"].as_str().unwrap().to_owned(),
            email: email.to_owned(),
            name: body["fullName"].as_str().unwrap_or_default().to_owned(),
            base: server.base.clone(),
        })
    }

    /// The server this user talks to (`http://127.0.0.1:<port>`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> String {
        let url: reqwest::Url = self.base.parse().unwrap();
        let cookies = self.jar.cookies(&url).expect("session cookie");
        cookies
            .to_str()
            .unwrap()
            .split(';')
            .find_map(|pair| pair.trim().strip_prefix("jwt="))
            .expect("jwt cookie")
            .to_owned()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(&self, to: &User, text: &str) -> Value {
        let (status, body) = self.send_json(&to.id, json!({ "text": text })).await;
        assert_eq!(status, 202, "send: {body}");
        body
    }

    pub async fn send_json(&self, to_id: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/messages/send/{to_id}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn history(&self, with: &User, query: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/api/messages/{}{query}", with.id)).await;
        assert_eq!(status, 200, "history: {body}");
        body.as_array().unwrap().clone()
    }

    /// The texts of [`User::history`], in its order.
    pub async fn history_texts(&self, with: &User, query: &str) -> Vec<String> {
        texts(&self.history(with, query).await)
    }

    pub async fn socket(&self) -> Socket {
        let url = format!("{}/ws", self.base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("cookie", format!("jwt={}", self.token()).parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        Socket { stream }
    }
}

pub struct Socket {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    /// The next JSON frame, skipping pings; panics after 10 s.
    pub async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("a frame within 10 s")
                .expect("socket open")
                .expect("socket ok");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Close(_) => panic!("socket closed"),
                _ => continue,
            }
        }
    }

    /// The next frame of type `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return frame["data"].clone();
            }
        }
    }

    /// Frames of type `kind` arriving within `wait`.
    pub async fn collect(&mut self, kind: &str, wait: Duration) -> Vec<Value> {
        let mut frames = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout_at(deadline, self.stream.next()).await
        {
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == kind {
                    frames.push(frame["data"].clone());
                }
            }
        }
        frames
    }

    pub async fn send(&mut self, frame: Value) {
        self.stream
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }

    /// Reads until the server closes the socket (10 s at most); the close code it sent.
    pub async fn closed_code(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|frame| frame.code.into()),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return None,
                Err(_) => panic!("the socket stayed open for 10 s"),
            }
        }
    }
}

/// Polls `check` until it holds (10 s at most).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The `text` of each message.
pub fn texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|message| message["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Opens the stores of `dir`, waiting out sled's file lock after a same-process close (its
/// background threads release it a moment after the last handle goes, up to ~3 s).
pub async fn open_stores(dir: &Path) -> (Arc<dyn JobStore>, Arc<dyn ChatStore>) {
    let mut attempts = 0;
    loop {
        match courier::store::open(&courier::store::StoreConfig::sled(dir)) {
            Ok(stores) => return (stores.jobs, stores.chat),
            Err(courier::store::StoreError::Io(message))
                if message.contains("could not acquire lock") && attempts < 300 =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("the stores open: {err}"),
        }
    }
}

/// The text of an e-mail as a person reads it: folded headers joined, and a quoted-printable
/// body (lettre picks that encoding for long lines) decoded.
pub fn readable_mail(raw: &str) -> String {
    let raw = raw.replace("\r\n", "\n");
    let (headers, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    let headers = headers.replace("\n ", " ").replace("\n\t", " ");
    let quoted = headers
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable");
    let body = if quoted {
        decode_quoted_printable(body)
    } else {
        body.to_owned()
    };
    format!("{headers}\n\n{body}")
}

fn decode_quoted_printable(body: &str) -> String {
    let joined = body.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if let Some(byte) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The token of the first `<path>#token=` link in a (readable) e-mail.
pub fn link_token(mail: &str, path: &str) -> Option<String> {
    let marker = format!("{path}#token=");
    let start = mail.find(&marker)? + marker.len();
    let token: String = mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    (!token.is_empty()).then_some(token)
}

/// Every e-mail in `DATA_DIR/outbox` so far, readable, in no particular order.
pub fn outbox_mails(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("outbox")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "eml"))
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .map(|raw| readable_mail(&raw))
        .collect()
}

/// Waits (10 s at most) for an e-mail in the outbox that contains every one of `parts`.
pub async fn outbox_mail(data_dir: &Path, parts: &[&str]) -> String {
    for _ in 0..1000 {
        if let Some(mail) = outbox_mails(data_dir)
            .into_iter()
            .find(|mail| parts.iter().all(|part| mail.contains(part)))
        {
            return mail;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no e-mail in the outbox with {parts:?}");
}

impl User {
    /// Opens the verification link of `mail` as its reader would (the page posts the token).
    pub async fn open_verification_link(&self, mail: &str) -> (u16, Value) {
        let token = link_token(mail, "/verify-email").expect("a verification link");
        let response = reqwest::Client::new()
            .post(format!("{}/api/auth/verify-email", self.base))
            .json(&json!({ "token": token }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Verifies this user's address with the link sent to the outbox at sign-up.
    pub async fn verify_from_outbox(&self, data_dir: &Path) {
        let mail = outbox_mail(data_dir, &[&self.email, "/verify-email#token="]).await;
        let (status, body) = self.open_verification_link(&mail).await;
        assert_eq!(status, 200, "verification of {}: {body}", self.email);
    }
}
