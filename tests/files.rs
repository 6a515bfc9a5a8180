//! File attachments through the real server: `POST /api/files/upload` streams a file of any
//! type to disk under its SHA-256, and `GET /api/files/<hash>/<name>` (and the stock front end's
//! `/api/files/proxy/...` links) serve it back so that it can never run as a page here.
//!
//! Uploads go as a browser sends them: the `jwt` cookie and the page's own `Origin`.

mod common;

use std::path::PathBuf;

use common::{TestServer, User};
use serde_json::Value;
use sha2::Digest as _;

#[allow(dead_code)]
#[path = "../src/chat/images/test_images.rs"]
mod test_images;

fn files_dir(server: &TestServer) -> PathBuf {
    server.data_dir.join("uploads").join("files")
}

/// Every entry of the files directory (temporary files included).
fn stored(server: &TestServer) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(files_dir(server))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn part(bytes: &[u8], name: &str, mime: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes.to_vec())
        .file_name(name.to_owned())
        .mime_str(mime)
        .unwrap()
}

async fn upload_form(user: &User, form: reqwest::multipart::Form) -> (u16, Value) {
    let response = user
        .http
        .post(format!("{}/api/files/upload", user.base_url()))
        .header("origin", user.base_url())
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn upload(user: &User, bytes: &[u8], name: &str, mime: &str) -> (u16, Value) {
    upload_form(
        user,
        reqwest::multipart::Form::new().part("file", part(bytes, name, mime)),
    )
    .await
}

async fn get(user: &User, path: &str) -> reqwest::Response {
    user.http
        .get(format!("{}{path}", user.base_url()))
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

/// Bytes that look like nothing in particular.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn an_upload_comes_back_byte_for_byte_from_its_url_and_its_proxy_link() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let bytes = noise(300_000);

    let (status, body) = upload(&alice, &bytes, "Zoë's report.bin", "application/x-thing").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let file = &body["file"];
    let hash = sha256(&bytes);
    let url = file["url"].as_str().unwrap();
    assert_eq!(url, format!("/api/files/{hash}/Zo%C3%AB_s%20report.bin"));
    assert_eq!(file["filename"], "Zoë_s report.bin");
    assert_eq!(file["size"], 300_000);
    assert_eq!(file["type"], "other");
    assert_eq!(file["mimeType"], "application/x-thing");
    // Stored under its hash before the answer, and nothing else is left in the directory.
    assert_eq!(stored(&server), vec![hash.clone()]);
    assert_eq!(
        std::fs::read(files_dir(&server).join(&hash)).unwrap(),
        bytes
    );

    // Any signed-in user with the URL reads it (the one it was sent to, here).
    let response = get(&bob, url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "application/octet-stream"
    );
    assert_eq!(
        header(&response, "content-disposition"),
        "attachment; filename=\"Zo__s report.bin\"; filename*=UTF-8''Zo%C3%AB_s%20report.bin"
    );
    assert_eq!(header(&response, "etag"), format!("\"{hash}\""));
    assert!(header(&response, "cache-control").contains("immutable"));
    assert_eq!(response.bytes().await.unwrap().to_vec(), bytes);

    for path in [
        format!("/api/files/{hash}"),
        format!("/api/files/proxy/{hash}"),
        format!("/api/files/proxy/{hash}/report.bin"),
    ] {
        let response = get(&bob, &path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.bytes().await.unwrap().to_vec(), bytes, "{path}");
    }

    // Revalidation and ranges.
    let response = bob
        .http
        .get(server.url(url))
        .header("if-none-match", format!("\"{hash}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    let response = bob
        .http
        .get(server.url(url))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.unwrap().to_vec(), &bytes[10..20]);

    // The same bytes again are the same file.
    let (status, again) = upload(&bob, &bytes, "copy.bin", "application/octet-stream").await;
    assert_eq!(status, 200, "{again}");
    assert!(again["file"]["url"].as_str().unwrap().contains(&hash));
    assert_eq!(stored(&server), vec![hash]);
    server.stop().await;
}

#[tokio::test]
async fn an_upload_survives_a_restart_and_an_unfinished_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let alice = User::signup(&server, "Alice").await;
    let bytes = noise(10_000);
    let (status, body) = upload(&alice, &bytes, "notes.txt", "text/plain").await;
    assert_eq!(status, 200, "{body}");
    let url = body["file"]["url"].as_str().unwrap().to_owned();
    let hash = sha256(&bytes);
    // What a crash in the middle of another upload would have left.
    std::fs::write(
        files_dir(&server).join(".upload-00000000deadbeef"),
        b"half a fi",
    )
    .unwrap();
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    // Answering a request means the routes are built, and with them the leftovers removed.
    let alice = User::login(&server, &alice.email, "secret123")
        .await
        .unwrap();
    assert_eq!(stored(&server), vec![hash], "the unfinished upload is gone");
    let response = get(&alice, &url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().to_vec(), bytes);
    server.stop().await;
}

#[tokio::test]
async fn a_file_over_the_limit_is_refused_with_413_and_nothing_is_kept() {
    let server = TestServer::memory_with(|config| config.serve.file_max_mb = 1).await;
    let alice = User::signup(&server, "Alice").await;
    let limit = 1024 * 1024;

    // Just over: refused while it streams.
    let (status, body) = upload(&alice, &noise(limit + 1), "big.bin", "application/zip").await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("at most 1 MB"),
        "{body}"
    );
    assert_eq!(
        body["error"], body["message"],
        "the stock dialog reads error"
    );
    // Far over, with its length declared: refused before it is read.
    let (status, body) = upload(&alice, &noise(3 * limit), "big.bin", "application/zip").await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], body["message"]);
    // Far over, streamed without a declared length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..48).map(|_| Ok(noise(64 * 1024))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::stream(body).file_name("stream.bin"),
    );
    let (status, body) = upload_form(&alice, form).await;
    assert_eq!(status, 413, "{body}");
    assert!(stored(&server).is_empty(), "{:?}", stored(&server));

    // Exactly the limit is fine.
    let (status, body) = upload(&alice, &noise(limit), "fits.bin", "application/zip").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored(&server).len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn uploads_and_downloads_need_a_session() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let stranger = reqwest::Client::new();
    let form = reqwest::multipart::Form::new().part("file", part(b"hello", "a.txt", "text/plain"));
    let response = stranger
        .post(server.url("/api/files/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].is_string() && body["error"] == body["message"],
        "{body}"
    );
    assert!(stored(&server).is_empty());

    let (status, body) = upload(&alice, b"hello", "a.txt", "text/plain").await;
    assert_eq!(status, 200, "{body}");
    let url = body["file"]["url"].as_str().unwrap();
    let response = stranger.get(server.url(url)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let hash = sha256(b"hello");
    let response = stranger
        .get(server.url(&format!("/api/files/proxy/{hash}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn pages_svg_and_scripts_are_only_ever_downloaded_and_images_show_inline() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let page = b"<!doctype html><script>alert(document.cookie)</script>";
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>";
    let script = b"alert(document.cookie)";
    let cases: [(&[u8], &str, &str); 4] = [
        (page, "page.html", "text/html"),
        (svg, "drawing.svg", "image/svg+xml"),
        (script, "x.js", "application/javascript"),
        // A page that claims to be an image, by name and type.
        (page, "photo.png", "image/png"),
    ];
    for (bytes, name, mime) in cases {
        let (status, body) = upload(&alice, bytes, name, mime).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_ne!(body["file"]["type"], "image", "{name}: {body}");
        let response = get(&alice, body["file"]["url"].as_str().unwrap()).await;
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(
            header(&response, "content-type"),
            "application/octet-stream",
            "{name}"
        );
        assert!(
            header(&response, "content-disposition").starts_with("attachment;"),
            "{name}"
        );
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        let policy = header(&response, "content-security-policy");
        assert!(
            policy.contains("sandbox") && policy.contains("default-src 'none'"),
            "{policy}"
        );
        assert_eq!(response.bytes().await.unwrap().to_vec(), bytes, "{name}");
    }

    let image = test_images::png(2, 1, &[]);
    let (status, body) = upload(&alice, &image, "dot.png", "image/png").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["file"]["type"], "image");
    assert_eq!(body["file"]["mimeType"], "image/png");
    let response = get(&alice, body["file"]["url"].as_str().unwrap()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "image/png");
    assert!(header(&response, "content-disposition").starts_with("inline;"));
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&response, "cross-origin-resource-policy"),
        "same-site"
    );
    assert_eq!(response.bytes().await.unwrap().to_vec(), image);

    // A photo past the image limit (5 MB) is kept as it came, and only downloaded.
    let mut big = test_images::png(2, 1, &[]);
    let end = big.split_off(big.len() - 12);
    big.extend(test_images::png_chunk(b"zzTx", &noise(5 * 1024 * 1024)));
    big.extend(end);
    let (status, uploaded) = upload(&alice, &big, "huge.png", "image/png").await;
    assert_eq!(status, 200, "{uploaded}");
    assert_eq!(uploaded["file"]["type"], "other");
    assert_eq!(uploaded["file"]["mimeType"], "image/png");
    let response = get(&alice, uploaded["file"]["url"].as_str().unwrap()).await;
    assert_eq!(
        header(&response, "content-type"),
        "application/octet-stream"
    );
    assert!(header(&response, "content-disposition").starts_with("attachment;"));
    assert_eq!(response.bytes().await.unwrap().to_vec(), big);

    // HEAD tells the size and type without the bytes.
    let response = alice
        .http
        .head(server.url(body["file"]["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "image/png");
    assert_eq!(header(&response, "content-length"), image.len().to_string());
    server.stop().await;
}

#[test]
fn the_file_size_limit_is_between_1_and_1024_mb() {
    use courier::config::Config;
    let parse = |value: &str| Config::from_args(["courier", "--ephemeral", "--file-max-mb", value]);
    assert!(parse("0").is_err());
    assert!(parse("1025").is_err());
    assert_eq!(
        parse("100").unwrap().serve.file_max_bytes(),
        100 * 1024 * 1024
    );
    let default = Config::from_args(["courier", "--ephemeral"]).unwrap();
    assert_eq!(default.serve.file_max_mb, 25);
}

#[tokio::test]
async fn an_image_sent_as_a_file_loses_its_location_like_a_sent_image() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let photo = test_images::jpeg_with_metadata();
    assert!(test_images::contains(&photo, b"GPS"));
    let (status, body) = upload(&alice, &photo, "holiday.jpg", "image/jpeg").await;
    assert_eq!(status, 200, "{body}");
    let served = get(&alice, body["file"]["url"].as_str().unwrap())
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec();
    assert!(served.starts_with(&[0xff, 0xd8, 0xff]));
    assert!(test_images::contains(&served, test_images::JPEG_SCAN));
    assert!(!test_images::contains(&served, b"GPS"));
    assert!(!test_images::contains(&served, b"Secret"));
    assert_eq!(body["file"]["size"], served.len());
    server.stop().await;
}

#[tokio::test]
async fn paths_that_try_to_escape_get_4xx_and_never_a_file() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let secret = b"the stored bytes";
    let (status, body) = upload(&alice, secret, "a.txt", "text/plain").await;
    assert_eq!(status, 200, "{body}");
    let hash = sha256(secret);
    // Something outside the files directory that a traversal would reach.
    std::fs::write(server.data_dir.join("uploads").join("outside"), b"outside").unwrap();

    for path in [
        "/api/files/..%2Foutside".to_owned(),
        "/api/files/%2e%2e%2f%2e%2e%2foutside".to_owned(),
        "/api/files/proxy/%2e%2e/outside".to_owned(),
        "/api/files/proxy/..%2F..%2Foutside".to_owned(),
        "/api/files/proxy/..%5Coutside".to_owned(),
        format!("/api/files/{hash}/..%2F..%2Foutside"),
        format!("/api/files/proxy/{hash}/%2e%2e"),
        format!("/api/files/proxy/{hash}/x/y"),
        format!("/api/files/{}", &hash[..63]),
        format!("/api/files/{}", hash.to_uppercase()),
        "/api/files/proxy/v1700000000/chat/report.pdf".to_owned(),
    ] {
        let response = get(&alice, &path).await;
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{path}: {status}");
        let body = response.bytes().await.unwrap();
        assert_ne!(&body[..], b"outside", "{path}");
        assert!(!test_images::contains(&body, secret), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_upload_requests_are_refused_clearly() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;

    let (status, body) = upload(&alice, b"", "empty.txt", "text/plain").await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("the file is empty"))
    );
    let form = reqwest::multipart::Form::new().text("note", "no file here");
    let (status, body) = upload_form(&alice, form).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("field file"));
    let form = reqwest::multipart::Form::new()
        .part("file", part(b"one", "1.txt", "text/plain"))
        .part("file", part(b"two", "2.txt", "text/plain"));
    let (status, body) = upload_form(&alice, form).await;
    assert_eq!(status, 400, "{body}");
    let form =
        reqwest::multipart::Form::new().part("attachment", part(b"x", "x.txt", "text/plain"));
    let (status, body) = upload_form(&alice, form).await;
    assert_eq!(status, 400, "{body}");
    let response = alice
        .http
        .post(server.url("/api/files/upload"))
        .json(&serde_json::json!({ "file": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert!(stored(&server).iter().all(|name| !name.starts_with('.')));
    assert!(stored(&server).is_empty(), "{:?}", stored(&server));

    // The page of another origin cannot upload with the cookie.
    let response = alice
        .http
        .post(server.url("/api/files/upload"))
        .header("origin", "http://evil.example")
        .multipart(reqwest::multipart::Form::new().part("file", part(b"x", "x.txt", "text/plain")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(stored(&server).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn uploads_are_rate_limited_per_user() {
    let server = TestServer::memory_with(|config| config.serve.rate_limit_upload = 2).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    for n in 0..2 {
        let (status, body) = upload(
            &alice,
            format!("file {n}").as_bytes(),
            "a.txt",
            "text/plain",
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let response = alice
        .http
        .post(server.url("/api/files/upload"))
        .header("origin", alice.base_url())
        .multipart(
            reqwest::multipart::Form::new().part("file", part(b"third", "c.txt", "text/plain")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    // Another user has their own allowance.
    let (status, body) = upload(&bob, b"bob's", "b.txt", "text/plain").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored(&server).len(), 3);
    server.stop().await;
}
