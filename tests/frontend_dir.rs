//! `FRONTEND_DIR`: a built single-page front end served from a folder in place of the embedded
//! client, with `index.html` for its own routes and Courier's routes left alone; and the small
//! answers the stock front end reads on its login page (`/api/auth/oauth/providers`).

mod common;

use std::path::Path;

use common::{TestServer, User};
use courier::config::{Config, ConfigError};
use serde_json::{json, Value};

const PAGE: &str = "<!doctype html><title>stock front end</title><div id=root></div>";
const SCRIPT: &str = "console.log('the stock bundle')";

/// A folder like a Vite build: `index.html`, hashed assets, a picture at the top.
fn build_folder(dir: &Path) {
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), PAGE).unwrap();
    std::fs::write(dir.join("assets").join("index-3f2a1b.js"), SCRIPT).unwrap();
    std::fs::write(dir.join("avatar.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
}

async fn fetch(server: &TestServer, path: &str) -> (u16, String, String, String) {
    let response = reqwest::get(server.url(path)).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (content_type, cache) = (header("content-type"), header("cache-control"));
    let status = response.status().as_u16();
    (status, content_type, cache, response.text().await.unwrap())
}

#[tokio::test]
async fn the_folder_is_served_with_its_page_for_the_front_ends_own_routes() {
    let folder = tempfile::tempdir().unwrap();
    build_folder(folder.path());
    let dir = folder.path().to_owned();
    let server = TestServer::memory_with(|config| config.serve.frontend_dir = Some(dir)).await;

    for path in [
        "/",
        "/login",
        "/signup",
        "/settings",
        "/profile",
        "/some/deep/route",
    ] {
        let (status, content_type, cache, body) = fetch(&server, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        assert_eq!(cache, "no-cache", "{path}");
        assert_eq!(body, PAGE, "{path}");
    }
    let (status, content_type, cache, body) = fetch(&server, "/assets/index-3f2a1b.js").await;
    assert_eq!(status, 200);
    assert!(content_type.contains("javascript"), "{content_type}");
    assert!(cache.contains("immutable"), "{cache}");
    assert_eq!(body, SCRIPT);
    let (status, content_type, _, _) = fetch(&server, "/avatar.png").await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));

    // Nothing outside the folder, however the path is spelled.
    for path in [
        "/..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%5c..%5cx",
    ] {
        let (status, _, _, body) = fetch(&server, path).await;
        assert!(
            status == 200 && body == PAGE || status >= 400,
            "{path}: {status}"
        );
        assert!(!body.contains("root:"), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn courier_routes_are_never_swallowed_by_the_page() {
    let folder = tempfile::tempdir().unwrap();
    build_folder(folder.path());
    let dir = folder.path().to_owned();
    let server = TestServer::memory_with(|config| config.serve.frontend_dir = Some(dir)).await;

    // Unknown API routes stay JSON 404s; known ones answer as always.
    for path in [
        "/api/nothing",
        "/api/messages/send/a/b",
        "/uploads/nothing",
        "/socket.io/x",
    ] {
        let (status, content_type, _, body) = fetch(&server, path).await;
        assert!(status == 404 || status == 405, "{path}: {status}");
        assert!(content_type.starts_with("application/json"), "{path}");
        assert_ne!(body, PAGE);
    }
    let (status, _, _, body) = fetch(&server, "/api/auth/check").await;
    assert_eq!(status, 401, "{body}");
    let (status, _, _, _) = fetch(&server, "/healthz").await;
    assert_eq!(status, 200);
    let (status, _, _, body) = fetch(&server, "/admin/queues").await;
    assert_eq!(status, 200);
    assert_ne!(body, PAGE, "the dashboard is Courier's");
    // The e-mail link pages are still the embedded client's.
    let (status, _, _, body) = fetch(&server, "/verify-email").await;
    assert_eq!(status, 200);
    assert_ne!(body, PAGE);
    // Only reads get the page.
    let response = reqwest::Client::new()
        .post(server.url("/settings"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // The API works from the front end's origin as before.
    let alice = User::signup(&server, "Alice").await;
    let (status, _) = alice.get("/api/messages/users").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn without_the_setting_the_embedded_client_answers() {
    let server = TestServer::memory().await;
    let (status, content_type, _, body) = fetch(&server, "/").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"));
    assert_ne!(body, PAGE);
    let (status, content_type, _, _) = fetch(&server, "/settings").await;
    assert_eq!(status, 404);
    assert!(content_type.starts_with("application/json"));
    server.stop().await;
}

fn config_error(args: &[&str]) -> String {
    match Config::from_args(args.iter().copied()) {
        Err(ConfigError::Invalid(message)) => message,
        Err(ConfigError::Info(info)) => panic!("info: {info}"),
        Ok(_) => panic!("{args:?} was accepted"),
    }
}

#[test]
fn a_folder_that_cannot_be_served_is_refused_at_start_up() {
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap().to_owned();
    let message = config_error(&["courier", "--ephemeral", "--frontend-dir", &empty]);
    assert!(
        message.contains("FRONTEND_DIR") && message.contains("no index.html"),
        "{message}"
    );
    let message = config_error(&[
        "courier",
        "--ephemeral",
        "--frontend-dir",
        "/no/such/folder",
    ]);
    assert!(message.contains("is not a folder"), "{message}");
    assert!(!message.contains('\n'));

    let built = tempfile::tempdir().unwrap();
    build_folder(built.path());
    let config = Config::from_args([
        "courier",
        "--ephemeral",
        "--frontend-dir",
        built.path().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(config.serve.frontend_dir.as_deref(), Some(built.path()));
}

#[test]
fn the_binary_exits_2_with_one_line_for_a_bad_folder() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["--ephemeral"])
        .env("FRONTEND_DIR", "/no/such/folder")
        .env_remove("DATA_DIR")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("FRONTEND_DIR"), "{stderr}");
}

#[tokio::test]
async fn the_login_page_learns_that_no_sign_in_provider_is_configured() {
    let server = TestServer::memory().await;
    let response = reqwest::get(server.url("/api/auth/oauth/providers"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["providers"], json!({}));
    assert_eq!(body["configured"], false);
    assert_eq!(body["setupRequired"], false);
    server.stop().await;
}
