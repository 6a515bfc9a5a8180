//! Monitoring and admin routes over real HTTP: the public `stats`/`health`/`metrics` shapes, the
//! admin key (header and login cookie, constant-time, rate-limited), read-only mode, the
//! dashboard's API and event stream, Prometheus, and health alerts posted to a webhook.
//!
//! Each test starts the real server (`courier::testing`, on memory stores) and registers a
//! processor for its own job names on the `message` queue, so jobs fail or succeed on purpose.

#[path = "common/browser.rs"]
mod browser;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier::config::Config;
use courier::queue::model::{JobOptions, JobState};
use courier::queue::{JobContext, JobFailure, Queue, QueueManager};
use courier::testing::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The name of the jobs these tests add; the chat processors never see it.
const TEST_JOB: &str = "monitor-test";
/// A job that runs until it is cancelled.
const SLOW_JOB: &str = "monitor-slow";
/// Thresholds that never trip.
const OFF: courier::alerts::Levels = courier::alerts::Levels {
    degraded: 0.0,
    unhealthy: 0.0,
};

struct Harness {
    base: String,
    admin_key: String,
    queues: QueueManager,
    /// While set, `TEST_JOB` jobs fail.
    failing: Arc<AtomicBool>,
    server: courier::testing::TestServer,
    _data_dir: Option<tempfile::TempDir>,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut Config)) -> Harness {
        Harness::launch(None, configure).await
    }

    /// On sled in a temp dir: for what only a store on disk measures (commit times, size).
    async fn on_sled(configure: impl FnOnce(&mut Config)) -> Harness {
        Harness::launch(Some(tempfile::tempdir().unwrap()), configure).await
    }

    async fn launch(
        data_dir: Option<tempfile::TempDir>,
        configure: impl FnOnce(&mut Config),
    ) -> Harness {
        let mut builder = TestServer::builder();
        if let Some(dir) = &data_dir {
            builder = builder.data_dir(dir.path().join("data"));
        }
        let server = builder
            .configure(|config| {
                // A nearly full disk on the test machine must not turn these tests' health
                // degraded.
                config.health.min_free_disk_mb = OFF;
                config.health.commit_p99_ms = OFF;
                configure(config);
            })
            .start()
            .await
            .unwrap();
        let queues = server.queues().clone();
        let failing = Arc::new(AtomicBool::new(true));
        let message = queues.queue("message").unwrap();
        let failing_now = failing.clone();
        message.process(TEST_JOB, move |job: JobContext| {
            let failing = failing_now.load(Ordering::SeqCst);
            async move {
                job.log(format!("attempt {}", job.attempts_made + 1))
                    .await?;
                if failing {
                    Err(JobFailure::msg("failing on purpose"))
                } else {
                    Ok(json!({"delivered": true}))
                }
            }
        });
        message.process(SLOW_JOB, |_job: JobContext| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(Value::Null)
        });
        Harness {
            base: server.url().to_owned(),
            admin_key: server.admin_key().to_owned(),
            queues,
            failing,
            server,
            _data_dir: data_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn message(&self) -> Queue {
        self.queues.queue("message").unwrap()
    }

    async fn add(&self, data: Value) -> String {
        self.message()
            .add(TEST_JOB, &data, JobOptions::default())
            .await
            .unwrap()
            .id
    }

    /// Sends a request (with the admin key when `key` is given) and returns status and JSON.
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, self.url(path));
        if let Some(key) = key {
            request = request.header("x-admin-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let key = self.admin_key.clone();
        self.call(method, path, Some(&key), body).await
    }

    /// Signs in to the dashboard with `key`, from a client without a cookie store.
    async fn login(&self, key: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url("/admin/login"))
            .form(&[("key", key)])
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None, None).await
    }

    /// Waits (briefly) until the message queue's counts satisfy `done`.
    async fn wait_for_counts(
        &self,
        what: &str,
        done: impl Fn(&courier::queue::model::Counts) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let counts = self.message().counts().await.unwrap();
            if done(&counts) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(10), self.server.stop())
            .await
            .unwrap()
            .unwrap();
    }
}

fn is_iso_timestamp(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|text| text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T')
}

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn stats_health_and_metrics_have_the_contract_shapes() {
    let server = Harness::start().await;
    server.failing.store(false, Ordering::SeqCst);
    server.add(json!({"n": 1})).await;
    server
        .wait_for_counts("a completed job", |counts| counts.completed == 1)
        .await;

    let (status, stats) = server.get("/api/messages/queue/stats").await;
    assert_eq!(status, 200, "{stats}");
    let mut names = keys(&stats["queues"]);
    names.sort_unstable();
    assert_eq!(names, ["email", "message", "notification"]);
    // On the wire the queues keep their registration order, `message` first.
    let raw = reqwest::get(server.url("/api/messages/queue/stats"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let position = |name: &str| raw.find(&format!("\"{name}\":{{")).unwrap();
    assert!(position("message") < position("notification"));
    assert!(position("notification") < position("email"));
    let message = &stats["queues"]["message"];
    for field in ["waiting", "active", "completed", "failed", "delayed"] {
        assert!(message[field].is_u64(), "{field} in {message}");
    }
    assert_eq!(message["completed"], 1);
    assert_eq!(message["paused"], false);
    assert!(stats["totals"]["processed"].as_u64().unwrap() >= 1);
    assert!(stats["totals"]["failed"].is_u64());
    assert!(stats["uptimeSeconds"].is_u64());
    assert!(is_iso_timestamp(&stats["timestamp"]), "{stats}");

    let (status, health) = server.get("/api/messages/queue/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["overall"], "healthy", "{health}");
    let message = &health["queues"]["message"];
    assert_eq!(message["name"], "message");
    assert_eq!(message["healthy"], true);
    assert_eq!(message["status"], "healthy");
    assert_eq!(message["issues"], json!([]));
    assert_eq!(message["counts"]["completed"], 1);
    assert!(health["storage"]["freeBytes"].as_u64().unwrap() > 0);
    assert!(is_iso_timestamp(&health["timestamp"]));

    let (status, metrics) = server.get("/api/messages/queue/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let message = &metrics["queues"]["message"];
    assert_eq!(message["counts"]["completed"], 1);
    assert!(
        message["throughput"]["completedPerMinute"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(message["throughput"]["failedPerMinute"], 0.0);
    for group in ["processingTimeMs", "waitTimeMs"] {
        for percentile in ["p50", "p95", "p99"] {
            assert!(
                message[group][percentile].is_number(),
                "{group}.{percentile}"
            );
        }
    }
    assert!(message["processingTimeMs"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(message["errorRate"], 0.0);
    assert_eq!(message["oldestWaitingMs"], 0);
    assert_eq!(metrics["windowMinutes"], 60);
    let (status, _) = server.get("/api/messages/queue/metrics?window=500").await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn admin_routes_need_the_right_key_and_a_known_queue() {
    let server = Harness::start().await;
    let routes = [
        (Method::DELETE, "/api/messages/queue/message/failed"),
        (Method::POST, "/api/messages/queue/message/retry"),
        (Method::GET, "/admin/queues/info"),
        (Method::GET, "/admin/api/queues"),
        (Method::GET, "/admin/api/session"),
        (Method::GET, "/admin/api/queues/message/jobs?state=failed"),
        (Method::POST, "/admin/api/queues/message/pause"),
        (Method::GET, "/admin/api/events"),
    ];
    for (method, path) in routes {
        let (status, body) = server.call(method.clone(), path, None, None).await;
        assert_eq!(status, 401, "{method} {path} without a key");
        assert_eq!(body, json!({"message": "admin key required"}), "{path}");
        let (status, body) = server
            .call(method.clone(), path, Some("wrong-key"), None)
            .await;
        assert_eq!(status, 401, "{method} {path} with a wrong key");
        assert_eq!(body, json!({"message": "invalid admin key"}), "{path}");
    }
    // A key that shares the real one's prefix is as wrong as any other.
    let almost = format!("{}x", server.admin_key);
    let (status, _) = server
        .call(Method::GET, "/admin/queues/info", Some(&almost), None)
        .await;
    assert_eq!(status, 401);

    let (status, info) = server.admin(Method::GET, "/admin/queues/info", None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["queues"], json!(["message", "notification", "email"]));
    assert!(info["message"].is_string());
    assert!(info["endpoints"]["dashboard"].is_string());
    assert!(info["instructions"].is_array());

    let (status, cleared) = server
        .admin(Method::DELETE, "/api/messages/queue/message/failed", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        cleared,
        json!({"success": true, "clearedCount": 0, "queue": "message"})
    );
    let (status, retried) = server
        .admin(Method::POST, "/api/messages/queue/email/retry", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        retried,
        json!({"success": true, "retriedCount": 0, "queue": "email"})
    );

    for (method, path) in [
        (Method::DELETE, "/api/messages/queue/nope/failed"),
        (Method::POST, "/api/messages/queue/nope/retry"),
        (Method::GET, "/admin/api/queues/nope/jobs?state=failed"),
        (Method::POST, "/admin/api/queues/nope/pause"),
    ] {
        let (status, body) = server.admin(method, path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["message"], "unknown queue nope");
    }
    let (status, body) = server
        .admin(
            Method::POST,
            "/api/messages/queue/message/retry",
            Some(json!({"jobId": "no-such-job"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = server
        .admin(
            Method::POST,
            "/api/messages/queue/message/retry",
            Some(json!({"jobId": ["not", "an", "id"]})),
        )
        .await;
    assert_eq!(status, 400);
    // Retrying a job that is not failed is a conflict, not a success.
    server.failing.store(false, Ordering::SeqCst);
    let done = server.add(json!({})).await;
    server
        .wait_for_counts("completion", |counts| counts.completed == 1)
        .await;
    let (status, body) = server
        .admin(
            Method::POST,
            "/api/messages/queue/message/retry",
            Some(json!({"jobId": done})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn read_only_mode_lets_the_key_look_but_refuses_every_action() {
    let server = Harness::start_with(|config| config.admin_read_only = true).await;
    let id = server.add(json!({"n": 1})).await;
    server
        .wait_for_counts("a failed job", |counts| counts.failed == 1)
        .await;

    let (status, info) = server.admin(Method::GET, "/admin/queues/info", None).await;
    assert_eq!(status, 200);
    assert_eq!(info["readOnly"], true);
    let (status, queues) = server.admin(Method::GET, "/admin/api/queues", None).await;
    assert_eq!(status, 200);
    assert_eq!(queues["readOnly"], true);
    let (status, _) = server
        .admin(
            Method::GET,
            &format!("/admin/api/queues/message/jobs/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);

    let job = format!("/admin/api/queues/message/jobs/{id}");
    let actions = [
        (
            Method::DELETE,
            "/api/messages/queue/message/failed".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/api/messages/queue/message/retry".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/api/messages/queue/message/retry".to_owned(),
            Some(json!({"jobId": id})),
        ),
        (Method::POST, format!("{job}/retry"), None),
        (Method::POST, format!("{job}/promote"), None),
        (Method::POST, format!("{job}/cancel"), None),
        (Method::DELETE, job.clone(), None),
        (
            Method::POST,
            "/admin/api/queues/message/retry-failed".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/admin/api/queues/message/promote-delayed".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/admin/api/queues/message/clean".to_owned(),
            Some(json!({"state": "failed"})),
        ),
        (
            Method::POST,
            "/admin/api/queues/message/drain".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/admin/api/queues/message/pause".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/admin/api/queues/message/resume".to_owned(),
            None,
        ),
    ];
    for (method, path, body) in actions {
        let (status, answer) = server.admin(method.clone(), &path, body).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains("read-only"));
    }
    // Nothing changed.
    let counts = server.message().counts().await.unwrap();
    assert_eq!(counts.failed, 1);
    assert!(!server.message().is_paused().await.unwrap());
    server.stop().await;
}

#[tokio::test]
async fn wrong_keys_are_rate_limited_per_address() {
    let server = Harness::start_with(|config| config.login_max_failures = 3).await;
    for _ in 0..3 {
        let (status, _) = server
            .call(Method::GET, "/admin/queues/info", Some("guess"), None)
            .await;
        assert_eq!(status, 401);
    }
    let response = reqwest::Client::new()
        .get(server.url("/admin/queues/info"))
        .header("x-admin-key", &server.admin_key)
        .send()
        .await
        .unwrap();
    // Locked out: even the right key is refused until the window ends.
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry_after));
    let login = server.login(&server.admin_key).await;
    assert_eq!(login.status(), StatusCode::TOO_MANY_REQUESTS);
    // The public monitoring routes are not affected.
    let (status, _) = server.get("/api/messages/queue/stats").await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// `GET /api/messages/status/:jobId` takes the admin key too, through the same check: its wrong
/// keys count toward the shared lockout, and a locked-out address is refused there even with
/// the right key. Without the header the route still answers users by their session.
#[tokio::test]
async fn the_job_status_route_shares_the_admin_key_lockout() {
    let server = Harness::start_with(|config| config.login_max_failures = 3).await;
    let job_id = server.add(json!({"n": 1})).await;
    let status_path = format!("/api/messages/status/{job_id}");
    let (status, body) = server.admin(Method::GET, &status_path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobId"], job_id.as_str());
    let (status, _) = server.get(&status_path).await;
    assert_eq!(status, 401, "no key and no session");

    let user = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let signup = user
        .post(server.url("/api/auth/signup"))
        .json(&json!({"fullName": "Status Reader", "email": "status@example.com", "password": "secret123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), StatusCode::CREATED);

    // Two wrong keys here and one on the dashboard's API: one counter, so the third locks.
    for _ in 0..2 {
        let (status, _) = server
            .call(Method::GET, &status_path, Some("guess"), None)
            .await;
        assert_eq!(status, 401);
    }
    let (status, _) = server
        .call(Method::GET, "/admin/queues/info", Some("guess"), None)
        .await;
    assert_eq!(status, 401);

    for path in [status_path.as_str(), "/admin/queues/info"] {
        let response = reqwest::Client::new()
            .get(server.url(path))
            .header("x-admin-key", &server.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "the right key is refused on {path} while locked out"
        );
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            retry_after > 1 && retry_after <= 900,
            "Retry-After is the remaining wait: {retry_after}"
        );
    }
    // The lockout is about the admin key: a user from the same address, without the header,
    // still gets the route's answer for users (someone else's job is not found).
    let as_user = user.get(server.url(&status_path)).send().await.unwrap();
    assert_eq!(as_user.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

/// The binary refuses an admin key under 32 characters, set in `QUEUE_ADMIN_KEY` or kept in the
/// data directory by hand, with one line naming the way out and exit code 2 (as every invalid
/// setting); it never prints the key.
#[test]
fn a_short_admin_key_stops_the_binary_with_exit_code_2() {
    let configured_dir = tempfile::tempdir().unwrap();
    let stored_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(stored_dir.path().join("secrets")).unwrap();
    std::fs::write(stored_dir.path().join("secrets/admin_key"), "admin123\n").unwrap();
    let cases = [
        (
            configured_dir.path(),
            Some("admin123"),
            "QUEUE_ADMIN_KEY is 8 characters long",
        ),
        (
            stored_dir.path(),
            None,
            "secrets/admin_key is 8 characters long",
        ),
    ];
    for (data_dir, key, expected) in cases {
        // An empty working directory and environment, so no `.env` or stray variable counts.
        let cwd = tempfile::tempdir().unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_courier"));
        command
            .current_dir(cwd.path())
            .env_clear()
            .env("PORT", "0")
            .env("BIND_ADDR", "127.0.0.1")
            .env("DATA_DIR", data_dir);
        if let Some(key) = key {
            command.env("QUEUE_ADMIN_KEY", key);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("courier: error: "), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("ALLOW_SHORT_ADMIN_KEY=true"), "{stderr}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            !stderr.contains("admin123") && !stdout.contains("admin123"),
            "the key is never printed"
        );
    }
}

/// A `Config` built in code is held to the same rule, and `allow_short_admin_key` lets a
/// short key through, where it then works as any key does.
#[tokio::test]
async fn a_short_admin_key_works_only_when_allowed() {
    let refused = TestServer::builder()
        .admin_key("admin123")
        .start()
        .await
        .err()
        .expect("a short key is refused");
    assert!(
        format!("{refused:#}").contains("QUEUE_ADMIN_KEY is 8 characters long"),
        "{refused:#}"
    );

    let server = Harness::start_with(|config| {
        config.queue_admin_key = Some("admin123".to_owned());
        config.allow_short_admin_key = true;
    })
    .await;
    let (status, _) = server
        .call(Method::GET, "/admin/queues/info", Some("admin123"), None)
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn login_sets_an_http_only_strict_cookie_that_opens_the_dashboard_api() {
    let server = Harness::start().await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let wrong = client
        .post(server.url("/admin/login"))
        .form(&[("key", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());

    let login = client
        .post(server.url("/admin/login"))
        .form(&[("key", server.admin_key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("courier_admin="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    assert!(cookie.contains("Max-Age=43200"), "{cookie}");
    // A signed session, not the key: neither as it is nor hex-encoded (what it used to be).
    let value = session_value(&cookie);
    assert!(!value.contains(&server.admin_key), "{cookie}");
    assert!(!value.contains(&hex::encode(&server.admin_key)), "{cookie}");
    assert_eq!(
        value.split('.').count(),
        4,
        "v1.<expiry>.<nonce>.<mac>: {value}"
    );
    assert!(value.starts_with("v1."), "{value}");
    let session: Value = login.json().await.unwrap();
    assert_eq!(session["readOnly"], false);

    let queues: Value = client
        .get(server.url("/admin/api/queues"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(queues["queues"].as_array().unwrap().len(), 3);
    // The cookie also opens the MERN app's admin routes.
    let cleared = client
        .delete(server.url("/api/messages/queue/message/failed"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::OK);
    // A change sent with the cookie from another origin is refused.
    let cross = client
        .post(server.url("/admin/api/queues/message/pause"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    assert!(!server.message().is_paused().await.unwrap());

    let logout = client
        .post(server.url("/admin/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert!(logout.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = client
        .get(server.url("/admin/api/queues"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    // A copy of the cookie kept from before signing out no longer works either.
    assert_eq!(with_cookie(&server, &value).await, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

/// The value of a `Set-Cookie: courier_admin=...` header.
fn session_value(set_cookie: &str) -> String {
    set_cookie
        .strip_prefix("courier_admin=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned()
}

/// `GET /admin/api/queues` with `value` as the dashboard cookie (and nothing else).
async fn with_cookie(server: &Harness, value: &str) -> StatusCode {
    reqwest::Client::new()
        .get(server.url("/admin/api/queues"))
        .header("cookie", format!("courier_admin={value}"))
        .send()
        .await
        .unwrap()
        .status()
}

/// A dashboard cookie whose expiry, nonce or signature was changed is refused with 401 and
/// counts as a failed attempt, as a wrong key does.
#[tokio::test]
async fn a_tampered_dashboard_cookie_is_refused_and_counted() {
    let server = Harness::start_with(|config| config.login_max_failures = 3).await;
    let login = server.login(&server.admin_key).await;
    assert_eq!(login.status(), StatusCode::OK);
    let value = session_value(login.headers()["set-cookie"].to_str().unwrap());
    assert_eq!(with_cookie(&server, &value).await, StatusCode::OK);

    let parts: Vec<&str> = value.split('.').collect();
    let expiry: u64 = parts[1].parse().unwrap();
    let later = format!("v1.{}.{}.{}", expiry + 86_400, parts[2], parts[3]);
    let other_nonce = format!("v1.{expiry}.{}.{}", "0".repeat(32), parts[3]);
    let flipped_mac = {
        let mac = parts[3];
        let first = if mac.starts_with('0') { '1' } else { '0' };
        format!("v1.{expiry}.{}.{first}{}", parts[2], &mac[1..])
    };
    for tampered in [&later, &other_nonce, &flipped_mac] {
        assert_eq!(
            with_cookie(&server, tampered).await,
            StatusCode::UNAUTHORIZED,
            "{tampered}"
        );
    }
    // Three failures: the address is locked out, the genuine cookie and the key included.
    assert_eq!(
        with_cookie(&server, &value).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let (status, _) = server.admin(Method::GET, "/admin/queues/info", None).await;
    assert_eq!(status, 429);
    server.stop().await;
}

#[tokio::test]
async fn health_degrades_when_jobs_fail_and_recovers_when_they_are_retried() {
    let server = Harness::start_with(|config| {
        config.health.failed_jobs.degraded = 2.0;
        config.health.failed_jobs.unhealthy = 5.0;
    })
    .await;
    let health = || async {
        let (status, body) = server.get("/api/messages/queue/health").await;
        (status, body)
    };
    let (status, body) = health().await;
    assert_eq!((status, body["overall"].clone()), (200, json!("healthy")));

    for n in 0..3 {
        server.add(json!({"n": n})).await;
    }
    server
        .wait_for_counts("3 failed jobs", |counts| counts.failed == 3)
        .await;
    let (status, body) = health().await;
    assert_eq!(status, 200, "degraded still answers 200: {body}");
    assert_eq!(body["overall"], "degraded", "{body}");
    let message = &body["queues"]["message"];
    assert_eq!(message["healthy"], false);
    assert_eq!(message["status"], "degraded");
    assert_eq!(message["issues"][0]["check"], "failedJobs", "{message}");
    assert_eq!(message["issues"][0]["value"], 3.0);
    assert_eq!(body["queues"]["email"]["status"], "healthy");

    for n in 3..6 {
        server.add(json!({"n": n})).await;
    }
    server
        .wait_for_counts("6 failed jobs", |counts| counts.failed == 6)
        .await;
    let (status, body) = health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["overall"], "unhealthy");

    // The cause is fixed; an operator retries the dead letters.
    server.failing.store(false, Ordering::SeqCst);
    let (status, retried) = server
        .admin(Method::POST, "/api/messages/queue/message/retry", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(retried["retriedCount"], 6);
    server
        .wait_for_counts("6 completed jobs", |counts| {
            counts.completed == 6 && counts.failed == 0
        })
        .await;
    let (status, body) = health().await;
    assert_eq!(status, 200);
    assert_eq!(body["overall"], "healthy", "{body}");
    assert_eq!(body["queues"]["message"]["issues"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn retrying_one_job_and_clearing_failed_jobs() {
    let server = Harness::start().await;
    let first = server.add(json!({"n": 1})).await;
    server.add(json!({"n": 2})).await;
    server
        .wait_for_counts("2 failed jobs", |counts| counts.failed == 2)
        .await;
    server.failing.store(false, Ordering::SeqCst);
    let (status, retried) = server
        .admin(
            Method::POST,
            "/api/messages/queue/message/retry",
            Some(json!({"jobId": first})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        retried,
        json!({"success": true, "retriedJob": first, "queue": "message"})
    );
    server
        .wait_for_counts("the retried job to complete", |counts| {
            counts.completed == 1 && counts.failed == 1
        })
        .await;
    let (status, cleared) = server
        .admin(Method::DELETE, "/api/messages/queue/message/failed", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(cleared["clearedCount"], 1);
    assert_eq!(server.message().counts().await.unwrap().failed, 0);
    server.stop().await;
}

#[tokio::test]
async fn the_dashboard_api_lists_finds_and_acts_on_jobs() {
    let server = Harness::start().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            server
                .add(json!({"n": n, "text": format!("hello number {n}")}))
                .await,
        );
    }
    server
        .wait_for_counts("5 failed jobs", |counts| counts.failed == 5)
        .await;

    // Pages with totals, newest first.
    let (status, page) = server
        .admin(
            Method::GET,
            "/admin/api/queues/message/jobs?state=failed&offset=0&limit=2",
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 5);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    let (_, rest) = server
        .admin(
            Method::GET,
            "/admin/api/queues/message/jobs?state=failed&offset=4&limit=2",
            None,
        )
        .await;
    assert_eq!(rest["jobs"].as_array().unwrap().len(), 1);
    let summary = &page["jobs"][0];
    assert_eq!(summary["state"], "failed");
    assert_eq!(summary["failedReason"], "failing on purpose");
    let (status, _) = server
        .admin(
            Method::GET,
            "/admin/api/queues/message/jobs?state=bogus",
            None,
        )
        .await;
    assert_eq!(status, 400);

    // The whole job: data, options, attempts, logs, reason and stack, timestamps.
    let (status, detail) = server
        .admin(
            Method::GET,
            &format!("/admin/api/queues/message/jobs/{}", ids[2]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["data"], json!({"n": 2, "text": "hello number 2"}));
    assert_eq!(detail["name"], TEST_JOB);
    assert_eq!(detail["attemptsMade"], 1);
    assert_eq!(detail["options"]["attempts"], 1);
    assert_eq!(detail["options"]["group"], Value::Null);
    assert_eq!(detail["logs"], json!(["attempt 1"]));
    assert_eq!(detail["failedReason"], "failing on purpose");
    assert_eq!(detail["stacktrace"].as_array().unwrap().len(), 1);
    assert!(is_iso_timestamp(&detail["timestamps"]["createdAt"]));
    assert!(is_iso_timestamp(&detail["timestamps"]["finishedAt"]));
    let (status, _) = server
        .admin(Method::GET, "/admin/api/queues/message/jobs/none", None)
        .await;
    assert_eq!(status, 404);

    // Search by id, by name and by text in the data.
    let (_, by_id) = server
        .admin(
            Method::GET,
            &format!("/admin/api/queues/message/search?q={}", ids[3]),
            None,
        )
        .await;
    assert_eq!(by_id["jobs"][0]["id"], json!(ids[3]), "{by_id}");
    let (_, by_text) = server
        .admin(
            Method::GET,
            "/admin/api/queues/message/search?q=NUMBER%204",
            None,
        )
        .await;
    assert_eq!(by_text["jobs"].as_array().unwrap().len(), 1, "{by_text}");
    assert_eq!(by_text["jobs"][0]["id"], json!(ids[4]));
    let (_, by_name) = server
        .admin(
            Method::GET,
            &format!("/admin/api/queues/message/search?q={TEST_JOB}&state=failed"),
            None,
        )
        .await;
    assert_eq!(by_name["jobs"].as_array().unwrap().len(), 5);
    assert_eq!(by_name["truncated"], false);
    let (status, _) = server
        .admin(Method::GET, "/admin/api/queues/message/search?q=%20", None)
        .await;
    assert_eq!(status, 400);

    // Remove one, clean the rest, with counts to show.
    let (status, _) = server
        .admin(
            Method::DELETE,
            &format!("/admin/api/queues/message/jobs/{}", ids[0]),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, cleaned) = server
        .admin(
            Method::POST,
            "/admin/api/queues/message/clean",
            Some(json!({"state": "failed", "graceMs": 0})),
        )
        .await;
    assert_eq!(status, 200, "{cleaned}");
    assert_eq!(cleaned["count"], 4);
    let (status, _) = server
        .admin(
            Method::POST,
            "/admin/api/queues/message/clean",
            Some(json!({"state": "active"})),
        )
        .await;
    assert_eq!(status, 400);

    // Pause and resume show in the queue list.
    let (status, _) = server
        .admin(Method::POST, "/admin/api/queues/message/pause", None)
        .await;
    assert_eq!(status, 200);
    let (_, queues) = server.admin(Method::GET, "/admin/api/queues", None).await;
    assert_eq!(queues["queues"][0]["name"], "message");
    assert_eq!(queues["queues"][0]["counts"]["paused"], true);
    let (_, health) = server.get("/api/messages/queue/health").await;
    assert_eq!(health["queues"]["message"]["issues"][0]["check"], "paused");

    // Delayed jobs are promoted, one or all, while the queue is paused (so they stay waiting).
    let delayed = JobOptions {
        delay_ms: 3_600_000,
        ..JobOptions::default()
    };
    let one = server
        .message()
        .add(TEST_JOB, &json!({}), delayed.clone())
        .await
        .unwrap()
        .id;
    for _ in 0..2 {
        server
            .message()
            .add(TEST_JOB, &json!({}), delayed.clone())
            .await
            .unwrap();
    }
    let (status, _) = server
        .admin(
            Method::POST,
            &format!("/admin/api/queues/message/jobs/{one}/promote"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, promoted) = server
        .admin(
            Method::POST,
            "/admin/api/queues/message/promote-delayed",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(promoted["count"], 2);
    let counts = server.message().counts().await.unwrap();
    assert_eq!((counts.waiting, counts.delayed), (3, 0));
    // A grouped job (waiting: the queue is paused) shows its group, in BullMQ Pro's spelling.
    let grouped = server
        .message()
        .add(
            TEST_JOB,
            &json!({"n": 9}),
            JobOptions {
                group: Some("alice:bob".to_owned()),
                ..JobOptions::default()
            },
        )
        .await
        .unwrap()
        .id;
    let (status, detail) = server
        .admin(
            Method::GET,
            &format!("/admin/api/queues/message/jobs/{grouped}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["options"]["group"], json!({"id": "alice:bob"}));
    let (status, drained) = server
        .admin(Method::POST, "/admin/api/queues/message/drain", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(drained["count"], 4);
    let (status, _) = server
        .admin(Method::POST, "/admin/api/queues/message/resume", None)
        .await;
    assert_eq!(status, 200);
    assert!(!server.message().is_paused().await.unwrap());

    // A running job is cancelled (it fails with the reason), and cannot be removed meanwhile.
    let slow = server
        .message()
        .add(SLOW_JOB, &json!({}), JobOptions::default())
        .await
        .unwrap()
        .id;
    server
        .wait_for_counts("an active job", |counts| counts.active == 1)
        .await;
    let (status, _) = server
        .admin(
            Method::DELETE,
            &format!("/admin/api/queues/message/jobs/{slow}"),
            None,
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = server
        .admin(
            Method::POST,
            &format!("/admin/api/queues/message/jobs/{slow}/cancel"),
            Some(json!({"reason": "stuck"})),
        )
        .await;
    assert_eq!(status, 200);
    let job = server.message().get(&slow).await.unwrap().unwrap();
    assert_eq!(job.status.state, JobState::Failed);
    assert_eq!(job.status.failed_reason.as_deref(), Some("stuck"));

    // Charts: an hour of minutes and three percentile windows.
    let (status, metrics) = server
        .admin(Method::GET, "/admin/api/queues/message/metrics", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(metrics["perMinute"].as_array().unwrap().len(), 60);
    let minutes: Vec<u64> = metrics["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|window| window["minutes"].as_u64().unwrap())
        .collect();
    assert_eq!(minutes, [5, 15, 60]);
    assert!(metrics["windows"][0]["jobs"].as_u64().unwrap() >= 5);
    // Each minute carries its own processing time percentiles, or null when nothing finished.
    let per_minute = metrics["perMinute"].as_array().unwrap();
    for minute in per_minute {
        let finished = minute["completed"].as_u64().unwrap() + minute["failed"].as_u64().unwrap();
        if finished == 0 {
            assert!(minute["processingTimeMs"].is_null(), "{minute}");
        }
    }
    let timed: Vec<&Value> = per_minute
        .iter()
        .filter(|minute| !minute["processingTimeMs"].is_null())
        .collect();
    assert!(!timed.is_empty(), "no minute has processing times");
    for minute in timed {
        let times = &minute["processingTimeMs"];
        let (p50, p99) = (
            times["p50"].as_f64().unwrap(),
            times["p99"].as_f64().unwrap(),
        );
        assert!(0.0 <= p50 && p50 <= p99, "{minute}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_with_a_strict_policy() {
    let server = Harness::start().await;
    let client = reqwest::Client::new();
    let page = client
        .get(server.url("/admin/queues"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/admin/queues/static/app.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );

    let script = client
        .get(server.url("/admin/queues/static/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let etag = script.headers()["etag"].clone();
    let script_text = script.text().await.unwrap();
    assert!(
        !script_text.contains("innerHTML"),
        "job data is rendered as text only"
    );
    let again = client
        .get(server.url("/admin/queues/static/app.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    // The Users page is a second script, held to the same rule.
    assert!(html.contains("/admin/queues/static/users.js"));
    let users_script = client
        .get(server.url("/admin/queues/static/users.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(users_script.status(), StatusCode::OK);
    assert!(users_script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let users_text = users_script.text().await.unwrap();
    assert!(users_text.contains("window.CourierUsers"));
    assert!(
        !users_text.contains("innerHTML"),
        "account data is rendered as text only"
    );
    let css = client
        .get(server.url("/admin/queues/static/style.css"))
        .send()
        .await
        .unwrap();
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let missing = client
        .get(server.url("/admin/queues/static/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn health_reports_a_slow_disk_from_the_commit_times() {
    // Against a threshold of a microsecond every real commit is slow: the check judges the
    // times the store measured.
    let server = Harness::on_sled(|config| {
        config.health.commit_p99_ms = courier::alerts::Levels {
            degraded: 0.001,
            unhealthy: 0.0,
        };
    })
    .await;
    server.failing.store(false, Ordering::SeqCst);
    // One durable add after another: a commit each.
    for n in 0..12 {
        server.add(json!({ "n": n })).await;
    }
    let (status, body) = server.get("/api/messages/queue/health").await;
    assert_eq!(status, 200, "degraded still answers 200: {body}");
    assert_eq!(body["storage"]["status"], "degraded", "{body}");
    let issues = body["storage"]["issues"].as_array().unwrap();
    let slow = issues
        .iter()
        .find(|issue| issue["check"] == "slowDisk")
        .unwrap_or_else(|| panic!("no slowDisk issue in {body}"));
    assert!(slow["value"].as_f64().unwrap() >= 0.001, "{slow}");
    assert!(
        slow["message"]
            .as_str()
            .unwrap()
            .contains("to write and sync"),
        "{slow}"
    );
    assert_eq!(body["overall"], "degraded");
    server.stop().await;
}

#[tokio::test]
async fn prometheus_scrapes_requests_by_route_queues_and_storage() {
    let server = Harness::on_sled(|_| {}).await;
    server.add(json!({})).await;
    server
        .wait_for_counts("a failed job", |counts| counts.failed == 1)
        .await;
    for _ in 0..3 {
        server.get("/api/messages/queue/stats").await;
    }
    server.get("/no/such/route").await;

    let started = Instant::now();
    let response = reqwest::get(server.url("/metrics")).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    println!(
        "/metrics: {} bytes in {:.1} ms",
        text.len(),
        elapsed.as_secs_f64() * 1000.0
    );
    let expected = [
        r#"courier_http_requests_total{method="GET",route="/api/messages/queue/stats",status="200"}"#,
        r#"courier_http_requests_total{method="GET",route="unmatched",status="404"}"#,
        r#"courier_http_request_duration_seconds_bucket{method="GET",route="/api/messages/queue/stats",le="0.005"}"#,
        r#"courier_queue_jobs{queue="message",state="failed"} 1"#,
        r#"courier_queue_jobs{queue="email",state="waiting"} 0"#,
        r#"courier_queue_paused{queue="message"} 0"#,
        r#"courier_queue_jobs_failed_total{queue="message"} 1"#,
        r#"courier_queue_oldest_waiting_seconds{queue="message"}"#,
        r#"courier_queue_processing_time_seconds{queue="message",quantile="0.99"}"#,
        r#"courier_health_status{scope="overall"}"#,
        // No socket is open here (tests/realtime.rs counts real ones).
        "courier_ws_connections 0",
        "courier_storage_size_bytes ",
        "courier_storage_errors_total 0",
        "# HELP courier_storage_commits_total",
        "courier_data_dir_free_bytes ",
        "# HELP courier_http_requests_total",
        "# TYPE courier_http_request_duration_seconds histogram",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    // The path of an unmatched request never becomes a label.
    assert!(!text.contains("/no/such/route"));
    // The adds and the failure above went through the store's commits.
    // The value of an unlabelled sample line.
    let sample = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    };
    let commits = sample("courier_storage_commits_total");
    assert!(commits >= 1, "{commits} commits");
    // The standard process metrics, read from the OS at this scrape: this test process's memory
    // and its open files (the server runs in-process).
    assert!(sample("process_resident_memory_bytes") > 1_000_000);
    assert!(sample("process_open_fds") > 0);
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    // Those commits' log writes and syncs were timed (the recorder is the process's, so other
    // tests' servers may have added theirs).
    assert!(text.contains("# TYPE courier_storage_commit_duration_seconds histogram"));
    let timed = sample("courier_storage_commit_duration_seconds_count");
    assert!(timed >= 1, "{timed} commits timed");
    server.stop().await;
}

/// Reads server-sent events until `done` accepts one's data, or panics after a few seconds.
async fn read_events(response: &mut reqwest::Response, done: impl Fn(&Value) -> bool) -> Value {
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let data: String = frame
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if frame.lines().any(|line| line == "event: update") {
                let value: Value = serde_json::from_str(&data).unwrap();
                if done(&value) {
                    return value;
                }
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn the_event_stream_sends_counts_then_job_events() {
    let server = Harness::start().await;
    let mut stream = reqwest::Client::new()
        .get(server.url("/admin/api/events"))
        .header("x-admin-key", &server.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let first = read_events(&mut stream, |_| true).await;
    assert_eq!(first["queues"].as_array().unwrap().len(), 3);
    assert_eq!(first["events"], json!([]));

    let id = server.add(json!({"n": 1})).await;
    let update = read_events(&mut stream, |update| {
        update["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["jobId"] == json!(id) && event["kind"] == "failed")
    })
    .await;
    let failed = update["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["kind"] == "failed")
        .unwrap();
    assert_eq!(failed["queue"], "message");
    assert_eq!(failed["detail"], "failing on purpose");
    // The stream ends when the server shuts down, so shutdown is not held up by it.
    let stopped = tokio::time::timeout(Duration::from_secs(5), server.stop()).await;
    assert!(stopped.is_ok());
}

/// A webhook receiver that fails its first request, then records every alert.
async fn webhook() -> (
    String,
    Arc<parking_lot::Mutex<Vec<Value>>>,
    Arc<AtomicUsize>,
) {
    let alerts = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let requests = Arc::new(AtomicUsize::new(0));
    let app = {
        let alerts = alerts.clone();
        let requests = requests.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let alerts = alerts.clone();
                let requests = requests.clone();
                async move {
                    if requests.fetch_add(1, Ordering::SeqCst) == 0 {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    alerts.lock().push(body);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, alerts, requests)
}

#[tokio::test]
async fn health_changes_are_posted_to_the_webhook_once_each_with_retries() {
    let (url, alerts, requests) = webhook().await;
    let data_dir = tempfile::tempdir().unwrap();
    let store = courier::store::open(&courier::store::StoreConfig::sled(data_dir.path()))
        .map(|stores| stores.jobs)
        .unwrap();
    let queues = QueueManager::new(store, Arc::new(courier::queue::LocalHub::default()));
    courier::jobs::register_queues(&queues).await.unwrap();
    let failing = Arc::new(AtomicBool::new(true));
    let message = queues.queue("message").unwrap();
    {
        let failing = failing.clone();
        message.process(TEST_JOB, move |_job: JobContext| {
            let failing = failing.load(Ordering::SeqCst);
            async move {
                if failing {
                    Err(JobFailure::msg("failing on purpose"))
                } else {
                    Ok(Value::Null)
                }
            }
        });
    }
    queues.start();
    let mut settings = courier::alerts::HealthSettings::default();
    settings.failed_jobs.degraded = 1.0;
    settings.min_free_disk_mb = OFF;
    settings.commit_p99_ms = OFF;
    let monitor = courier::alerts::HealthMonitor::new(settings.clone(), data_dir.path().into());
    let mut options = courier::alerts::AlertOptions::new(&settings, Some(url));
    options.interval = Duration::from_millis(50);
    options.backoff = Duration::from_millis(20);
    let task = courier::alerts::spawn(monitor, queues.clone(), options);

    let wait_for_alerts = |count: usize| {
        let alerts = alerts.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while alerts.lock().len() < count {
                assert!(Instant::now() < deadline, "no alert {count} in time");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    message
        .add(TEST_JOB, &json!({}), JobOptions::default())
        .await
        .unwrap();
    wait_for_alerts(1).await;
    {
        let alerts = alerts.lock();
        let alert = &alerts[0];
        assert_eq!(alert["status"], "degraded", "{alert}");
        assert_eq!(alert["previous"], "healthy");
        assert_eq!(alert["issues"][0]["subject"], "message");
        assert_eq!(alert["issues"][0]["check"], "failedJobs");
        assert!(alert["text"].as_str().unwrap().contains("1 failed jobs"));
    }
    // The first delivery failed and was retried.
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    // Unchanged health sends nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alerts.lock().len(), 1);

    failing.store(false, Ordering::SeqCst);
    message.retry_all_failed().await.unwrap();
    wait_for_alerts(2).await;
    assert_eq!(alerts.lock()[1]["status"], "healthy");
    assert_eq!(alerts.lock()[1]["previous"], "degraded");
    task.shutdown(Duration::from_secs(1)).await;
    queues.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// Opens the dashboard in headless Chromium (tests/browser/admin.mjs): sign in, see the queues
/// and their counts, open a failed job whose data holds markup (it must stay text), retry it and
/// see it complete. Screenshots go to `target/`. Outside CI it is skipped, with the reason
/// printed, when node, Chromium or playwright-core are missing; with `CI=true` it must run.
#[tokio::test]
async fn the_dashboard_works_in_a_real_browser() {
    if !browser::browser_available("dashboard") {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // One failed job makes the server degraded, so the page shows its health banner.
    let server = Harness::start_with(|config| config.health.failed_jobs.degraded = 1.0).await;
    server.failing.store(false, Ordering::SeqCst);
    server.add(json!({"text": "a job that went well"})).await;
    server
        .wait_for_counts("a completed job", |counts| counts.completed == 1)
        .await;
    server.failing.store(true, Ordering::SeqCst);
    let job_id = server
        .add(json!({
            "text": "<img src=x onerror=\"window.__xss=1;alert('xss')\"> and <script>window.__xss=2</script>",
            "senderId": "65f000000000000000000001",
        }))
        .await;
    server
        .wait_for_counts("a failed job", |counts| counts.failed == 1)
        .await;
    // The cause is "fixed": the retry from the browser succeeds.
    server.failing.store(false, Ordering::SeqCst);

    let screenshots = root.join("target");
    std::fs::create_dir_all(&screenshots).unwrap();
    let report = browser::run_browser_script(
        "admin.mjs",
        &[],
        &[
            ("COURIER_URL", &server.base),
            ("COURIER_ADMIN_KEY", &server.admin_key),
            ("COURIER_JOB_ID", &job_id),
            ("SCREENSHOT_DIR", &screenshots.to_string_lossy()),
        ],
        Duration::from_secs(90),
    )
    .await;
    println!("{report}");
    assert!(screenshots.join("admin-dashboard.png").exists());
    server.stop().await;
}

/// A chat account for the Users page's browser test, with the session it signed in with.
struct ChatAccount {
    http: reqwest::Client,
    id: String,
    email: String,
}

impl Harness {
    /// Signs up (`invite` given) or signs in, in a client of its own that keeps the session
    /// cookie; the status, and the account when it worked.
    async fn chat_session(
        &self,
        name: &str,
        email: &str,
        signup: bool,
        invite: Option<&str>,
    ) -> (u16, Option<ChatAccount>) {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let mut body = json!({ "email": email, "password": "secret123" });
        let path = if signup {
            body["fullName"] = json!(name);
            if let Some(invite) = invite {
                body["invite"] = json!(invite);
            }
            "/api/auth/signup"
        } else {
            "/api/auth/login"
        };
        let response = http.post(self.url(path)).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return (status, None);
        }
        let body: Value = response.json().await.unwrap();
        let id = body["_id"].as_str().unwrap().to_owned();
        let email = email.to_owned();
        (status, Some(ChatAccount { http, id, email }))
    }

    async fn signup(&self, name: &str, email: &str) -> ChatAccount {
        let (status, account) = self.chat_session(name, email, true, None).await;
        assert_eq!(status, 201, "sign-up of {email}");
        account.unwrap()
    }

    async fn sign_in_status(&self, email: &str) -> u16 {
        self.chat_session("", email, false, None).await.0
    }
}

impl ChatAccount {
    /// The status of `GET /api/auth/check` with this account's session.
    async fn session_status(&self, server: &Harness) -> u16 {
        let response = self.http.get(server.url("/api/auth/check")).send().await;
        response.unwrap().status().as_u16()
    }

    async fn send(&self, server: &Harness, to: &ChatAccount, text: &str) {
        let path = format!("/api/messages/send/{}", to.id);
        let response = self
            .http
            .post(server.url(&path))
            .json(&json!({ "text": text }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "send {text}");
    }

    async fn history_len(&self, server: &Harness, with: &ChatAccount) -> usize {
        let path = format!("/api/messages/{}", with.id);
        let response = self.http.get(server.url(&path)).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        body.as_array().map_or(0, Vec::len)
    }
}

/// What the server does after the browser's action `check` (see tests/browser/admin-users.mjs):
/// `Err` says what is wrong.
async fn users_page_check(
    server: &Harness,
    check: &str,
    alice: &[ChatAccount],
    bob: &ChatAccount,
) -> Result<(), String> {
    let expect = |what: &str, got: u16, want: u16| {
        if got == want {
            Ok(())
        } else {
            Err(format!("{what}: {got}, expected {want}"))
        }
    };
    let (check, argument) = check.split_once(' ').unwrap_or((check, ""));
    match check {
        "sessions-ended" => {
            for (index, session) in alice.iter().enumerate() {
                let status = session.session_status(server).await;
                expect(
                    &format!("Alice's session {index} after End sessions"),
                    status,
                    401,
                )?;
            }
            Ok(())
        }
        "disabled" => {
            let status = server.sign_in_status(&alice[0].email).await;
            expect("Alice signing in while disabled", status, 403)
        }
        "enabled" => {
            let status = server.sign_in_status(&alice[0].email).await;
            expect("Alice signing in once enabled", status, 200)
        }
        "deleted" => {
            let (status, found) = server
                .admin(Method::GET, "/admin/api/users?q=bob", None)
                .await;
            expect("the list", status, 200)?;
            if found["total"] != 0 {
                return Err(format!("Bob is still listed: {found}"));
            }
            expect("Bob's session", bob.session_status(server).await, 401)?;
            if server.sign_in_status(&bob.email).await == 200 {
                return Err("Bob can still sign in".to_owned());
            }
            let fresh = server.sign_in_status(&alice[0].email).await;
            expect("Alice signing in after Bob went", fresh, 200)
        }
        "invite" => {
            let secret = argument
                .split_once("/signup#invite=")
                .ok_or_else(|| format!("not a sign-up link: {argument}"))?
                .1;
            let (wrong, _) = server
                .chat_session("Eve", "eve@example.com", true, Some(secret))
                .await;
            expect("someone else signing up with Dana's link", wrong, 403)?;
            let (status, _) = server
                .chat_session("Dana Dale", "dana@example.com", true, Some(secret))
                .await;
            expect("Dana signing up with her link", status, 201)
        }
        other => Err(format!("unknown check {other}")),
    }
}

/// The dashboard's Users page in headless Chromium (tests/browser/admin-users.mjs), against
/// accounts created here: search, end sessions, disable, enable, delete, invite. After each
/// action the browser waits while this side checks the server agrees (tokens refused, sign-in
/// refused, the account gone, the link usable). Skipped like the test above.
#[tokio::test]
async fn the_users_page_works_in_a_real_browser() {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    if !browser::browser_available("users page") {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let server = Harness::start().await;
    // Newest first on the page: apart in time, so the order is certain.
    let alice = server.signup("Alice Archer", "alice@example.com").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let bob = server.signup("Bob Baker", "bob@example.com").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    server
        .signup(
            "Carol <img src=x onerror=\"window.__xss=1\">",
            "carol@example.com",
        )
        .await;
    let (status, phone) = server
        .chat_session("", "alice@example.com", false, None)
        .await;
    assert_eq!(status, 200);
    let alice = [alice, phone.unwrap()];
    // Three messages in Bob's one conversation, to go with his account.
    bob.send(&server, &alice[0], "hello Alice").await;
    bob.send(&server, &alice[0], "are you there?").await;
    alice[0].send(&server, &bob, "yes").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while bob.history_len(&server, &alice[0]).await < 3 {
        assert!(Instant::now() < deadline, "the messages are saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let screenshots = root.join("target");
    std::fs::create_dir_all(&screenshots).unwrap();
    let started = Instant::now();
    let mut child = tokio::process::Command::new("node")
        .arg("tests/browser/admin-users.mjs")
        .current_dir(root)
        .env("COURIER_URL", &server.base)
        .env("COURIER_ADMIN_KEY", &server.admin_key)
        .env("SCREENSHOT_DIR", &screenshots)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut report = String::new();
    let mut failures = Vec::new();
    let dialogue = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            report.push_str(&line);
            report.push('\n');
            let Some(check) = line.strip_prefix("CHECK ") else {
                continue;
            };
            let answer = match users_page_check(&server, check, &alice, &bob).await {
                Ok(()) => "ok\n",
                Err(failure) => {
                    failures.push(failure);
                    "fail\n"
                }
            };
            stdin.write_all(answer.as_bytes()).await.unwrap();
            stdin.flush().await.unwrap();
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(120), dialogue)
        .await
        .expect("the browser test finishes within 120 s");
    let report = format!("{report}{}", errors.await.unwrap());
    assert!(
        failures.is_empty(),
        "the server disagrees with the page: {failures:?}\n{report}"
    );
    assert!(status.success(), "browser test failed:\n{report}");
    println!(
        "{report}browser test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(screenshots.join("admin-dashboard-users.png").exists());
    server.stop().await;
}
