//! The web client served by the binary: the page and its client-side routes, the versioned
//! (immutable) and unversioned assets, their content types and security headers, conditional
//! requests, the JSON 404 still answering for unknown API paths; and the whole client driven
//! end to end in headless Chromium (tests/browser/chat.mjs).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use browser::{browser_available, run_browser_script, screenshot_dir};
use common::TestServer;
use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;

const CSP: &str =
    "default-src 'self'; img-src 'self' data: blob: https:; connect-src 'self' ws: wss:; \
     style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

fn header(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(&name)
        .unwrap_or_else(|| panic!("{name} is missing"))
        .to_str()
        .unwrap()
}

/// The headers every client response carries.
fn check_security_headers(path: &str, headers: &HeaderMap) {
    assert_eq!(
        header(headers, header::CONTENT_SECURITY_POLICY),
        CSP,
        "{path}"
    );
    assert_eq!(
        header(headers, header::X_CONTENT_TYPE_OPTIONS),
        "nosniff",
        "{path}"
    );
    assert_eq!(header(headers, header::X_FRAME_OPTIONS), "DENY", "{path}");
    assert_eq!(
        header(headers, header::REFERRER_POLICY),
        "no-referrer",
        "{path}"
    );
}

async fn get(path: &str, server: &TestServer) -> (StatusCode, HeaderMap, String) {
    let response = reqwest::get(server.url(path)).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// The `/app/<version>/...` URLs the page names.
fn asset_urls(page: &str) -> Vec<String> {
    page.split('"')
        .filter(|part| part.starts_with("/app/"))
        .map(str::to_owned)
        .collect()
}

fn expected_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        other => panic!("unexpected asset type {other:?} in {path}"),
    }
}

/// Relative module imports (`from './state.js'`) of a script.
fn imports(script: &str) -> BTreeSet<String> {
    script
        .split("from '")
        .skip(1)
        .filter_map(|rest| rest.split_once('\''))
        .map(|(target, _)| target)
        .filter_map(|target| target.strip_prefix("./"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_page_answers_every_client_route_revalidated_and_locked_down() {
    let server = TestServer::memory().await;

    let (status, headers, page) = get("/", &server).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(header(&headers, header::CACHE_CONTROL), "no-cache");
    check_security_headers("/", &headers);
    let etag = header(&headers, header::ETAG).to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(
        page.contains("<script type=\"module\" src=\"/app/"),
        "{page}"
    );
    // No inline script or style: the CSP would refuse them.
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "{page}"
    );
    // Everything comes from this server (the client works offline).
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));

    let chat_route = "/chat/65f0a1b2c3d4e5f6a7b8c9d0";
    let group_route = "/groups/65f0a1b2c3d4e5f6a7b8c9d1";
    for path in ["/login", "/signup", "/profile", chat_route, group_route] {
        let (status, headers, body) = get(path, &server).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            header(&headers, header::CONTENT_TYPE),
            "text/html; charset=utf-8",
            "{path}"
        );
        assert_eq!(header(&headers, header::ETAG), etag, "{path}");
        check_security_headers(path, &headers);
        assert_eq!(body, page, "{path} serves the same page");
    }

    // A browser that has the page revalidates it with the ETag.
    let response = reqwest::Client::new()
        .get(server.url("/"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(response.headers(), header::ETAG), etag);
    assert!(response.text().await.unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn versioned_assets_are_immutable_and_every_module_the_client_imports_exists() {
    let server = TestServer::memory().await;
    let (_, _, page) = get("/", &server).await;
    let urls = asset_urls(&page);
    assert!(urls.len() >= 4, "{urls:?}");
    let version = urls[0].split('/').nth(2).unwrap().to_owned();
    assert_eq!(version.len(), 12, "{version}");
    assert!(version.bytes().all(|byte| byte.is_ascii_hexdigit()));

    let mut scripts = Vec::new();
    for url in &urls {
        assert!(url.starts_with(&format!("/app/{version}/")), "{url}");
        let (status, headers, body) = get(url, &server).await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(
            header(&headers, header::CONTENT_TYPE),
            expected_type(url),
            "{url}"
        );
        assert_eq!(
            header(&headers, header::CACHE_CONTROL),
            "public, max-age=31536000, immutable",
            "{url}"
        );
        check_security_headers(url, &headers);
        if url.ends_with(".js") {
            scripts.push(body);
        }
    }

    // Follow the module graph from main.js: each import resolves under the same version.
    let mut seen = BTreeSet::new();
    while let Some(script) = scripts.pop() {
        for module in imports(&script) {
            if !seen.insert(module.clone()) {
                continue;
            }
            let url = format!("/app/{version}/{module}");
            let (status, headers, body) = get(&url, &server).await;
            assert_eq!(status, 200, "{url} is imported but not served");
            assert_eq!(
                header(&headers, header::CONTENT_TYPE),
                "text/javascript; charset=utf-8",
                "{url}"
            );
            assert!(
                !body.contains("innerHTML") && !body.contains("insertAdjacentHTML"),
                "{url} builds markup from strings"
            );
            scripts.push(body);
        }
    }
    for module in [
        "state.js",
        "socket.js",
        "api.js",
        "conversation.js",
        "sidebar.js",
    ] {
        assert!(
            seen.contains(module),
            "{module} is not reachable from main.js: {seen:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn unversioned_and_stale_assets_revalidate_and_unknown_paths_stay_json_404s() {
    let server = TestServer::memory().await;

    let (status, headers, body) = get("/app/main.js", &server).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, header::CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&headers, header::CACHE_CONTROL), "no-cache");
    check_security_headers("/app/main.js", &headers);
    let etag = header(&headers, header::ETAG).to_owned();
    let response = reqwest::Client::new()
        .get(server.url("/app/main.js"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);

    // A page from before an upgrade asks for its old version: today's file, not cached for good.
    let (status, headers, stale) = get("/app/0123456789ab/main.js", &server).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, header::CACHE_CONTROL), "no-cache");
    assert_eq!(stale, body);

    for (path, content_type) in [
        ("/app/style.css", "text/css; charset=utf-8"),
        ("/app/icon.svg", "image/svg+xml"),
        ("/app/theme-init.js", "text/javascript; charset=utf-8"),
    ] {
        let (status, headers, _) = get(path, &server).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            header(&headers, header::CONTENT_TYPE),
            content_type,
            "{path}"
        );
    }

    for path in [
        "/app/nope.js",
        "/app/index.html",
        "/app/../Cargo.toml",
        "/app/%2e%2e/Cargo.toml",
        "/api/nope",
        "/api/messages/users/extra/segments",
        "/chat/not-an-id/extra",
        "/nowhere",
    ] {
        let (status, headers, body) = get(path, &server).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(
            header(&headers, header::CONTENT_TYPE),
            "application/json",
            "{path}"
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(json["message"].is_string(), "{path}: {body}");
    }

    // The API still answers as before next to the page.
    let (status, _, body) = get("/api/messages/users", &server).await;
    assert_eq!(status, 401, "{body}");
    server.stop().await;
}

/// Two people chat in headless Chromium against the real server (tests/browser/chat.mjs):
/// sign-up with validation, a profile photo, text and a photo live with presence and unread
/// badges, typing, read receipts both ways, a network cut and a reload with every message shown
/// exactly once, markup shown as text, a failed send retried, a notification, older pages on
/// scrolling up, logout. Screenshots go to `target/screenshots/`. Skipped outside CI when the
/// browser is missing (see `browser_available`).
#[tokio::test]
async fn the_chat_client_works_end_to_end_in_a_real_browser() {
    if !browser_available("chat") {
        return;
    }
    let server = TestServer::memory().await;
    let screenshots = screenshot_dir();
    let report = run_browser_script(
        "chat.mjs",
        &[&server.base, &screenshots.to_string_lossy()],
        &[],
        Duration::from_secs(120),
    )
    .await;
    println!("{report}");
    for name in [
        "chat-desktop-light.png",
        "chat-desktop-dark.png",
        "chat-phone-light.png",
        "chat-phone-dark.png",
    ] {
        assert!(screenshots.join(name).exists(), "{name} was not saved");
    }
    server.stop().await;
}

/// Replies, reactions, edits, a file and a delete in a direct conversation, then a group of
/// three with a member removed, in headless Chromium (tests/browser/features.mjs). Skipped like
/// the chat browser test.
#[tokio::test]
async fn groups_and_message_actions_work_in_a_real_browser() {
    if !browser_available("groups") {
        return;
    }
    let server = TestServer::memory().await;
    let screenshots = screenshot_dir();
    let report = run_browser_script(
        "features.mjs",
        &[&server.base, &screenshots.to_string_lossy()],
        &[],
        Duration::from_secs(120),
    )
    .await;
    println!("{report}");
    for name in [
        "message-actions-desktop-light.png",
        "message-actions-desktop-dark.png",
        "group-desktop-light.png",
        "group-desktop-dark.png",
        "group-phone-light.png",
        "group-phone-dark.png",
        "search-desktop-light.png",
        "search-desktop-dark.png",
        "search-phone-light.png",
        "search-phone-dark.png",
    ] {
        assert!(screenshots.join(name).exists(), "{name} was not saved");
    }
    server.stop().await;
}

/// With `SIGNUP_MODE=invite`, the sign-in page offers no sign-up, the sign-up page explains
/// that an invitation is needed, and an invitation link signs one person up, once
/// (tests/browser/signup.mjs). Skipped like the chat browser test.
#[tokio::test]
async fn invitation_only_sign_up_works_in_a_real_browser() {
    if !browser_available("sign-up") {
        return;
    }
    let server = TestServer::memory_with(|config| {
        config.signup_mode = courier::chat::SignupMode::Invite;
    })
    .await;
    let invitation: serde_json::Value = reqwest::Client::new()
        .post(server.url("/admin/api/invites"))
        .header("x-admin-key", &server.admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The link names PUBLIC_URL's default; the browser opens it on this test server instead.
    let (_, fragment) = invitation["url"]
        .as_str()
        .and_then(|url| url.split_once("/signup#"))
        .expect("an invitation link");
    let link = format!("{}/signup#{fragment}", server.base);
    let report = run_browser_script(
        "signup.mjs",
        &[&server.base, &link, &screenshot_dir().to_string_lossy()],
        &[],
        Duration::from_secs(60),
    )
    .await;
    println!("{report}");
    server.stop().await;
}

#[tokio::test]
async fn the_client_is_sent_gzipped_to_browsers_that_accept_it() {
    let server = TestServer::memory().await;
    let (_, _, page) = get("/", &server).await;
    let mut largest = (String::new(), 0);
    for url in asset_urls(&page)
        .into_iter()
        .filter(|url| url.ends_with(".js") || url.ends_with(".css"))
    {
        let (_, _, body) = get(&url, &server).await;
        if body.len() > largest.1 {
            largest = (url, body.len());
        }
    }
    let script = largest.0;
    // reqwest here has no gzip decoder, so the body arrives as sent.
    let response = reqwest::Client::new()
        .get(server.url(&script))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let compressed = response.bytes().await.unwrap();
    let (_, _, plain) = get(&script, &server).await;
    assert!(
        compressed.len() < plain.len() / 2,
        "{} vs {}",
        compressed.len(),
        plain.len()
    );
    assert_eq!(&compressed[..2], &[0x1f, 0x8b]);
}
