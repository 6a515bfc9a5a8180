//! Images through the real server: the pixel limit read from headers before anything is kept,
//! metadata stripped from what is stored and served, and one image per message.
//!
//! Multipart requests carry a Bearer token from a client without cookies, as an app would (the
//! browser's form posts are a cookie session's, and those are checked for their origin).

mod common;

use std::path::Path;

use base64::Engine as _;
use common::{eventually, TestServer, User};
use serde_json::{json, Value};
use sha2::Digest as _;
use test_images::{
    contains, exif_with_gps, jpeg, jpeg_segment, png, png_chunk, JPEG_SCAN, PNG_PIXELS,
};

/// The image builders of the unit tests: hand-made PNG, JPEG, GIF and WebP files whose
/// metadata is marked "Secret" and "GPS", with pixel data that must come back untouched.
#[allow(dead_code)]
#[path = "../src/chat/images/test_images.rs"]
mod test_images;

fn data_url(kind: &str, bytes: &[u8]) -> String {
    format!(
        "data:image/{kind};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn photo_with_gps() -> Vec<u8> {
    jpeg(
        4,
        3,
        &[
            test_images::jfif(b""),
            jpeg_segment(0xe1, &[&b"Exif\0\0"[..], &exif_with_gps()].concat()),
            jpeg_segment(
                0xe1,
                b"http://ns.adobe.com/xap/1.0/\0<exif:GPSLatitude>48,51.5N</exif:GPSLatitude>",
            ),
            jpeg_segment(0xfe, b"a Secret comment"),
        ],
    )
}

/// The orientation block the server keeps: big-endian TIFF, one entry, tag 0x0112 = 6.
const ORIENTATION_ONLY: &[u8] =
    b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";

fn stored_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("uploads")).map_or(0, Iterator::count)
}

/// A client without cookies that signs its requests with `user`'s token.
async fn post_multipart(
    server: &TestServer,
    user: &User,
    to: &User,
    form: reqwest::multipart::Form,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/api/messages/send/{}", to.id)))
        .bearer_auth(user.token())
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn image_part(bytes: &[u8], name: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_owned())
}

async fn update_profile_pic(user: &User, server: &TestServer, url: String) -> (u16, Value) {
    let response = user
        .http
        .put(server.url("/api/auth/update-profile"))
        .json(&json!({ "profilePic": url }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Fetches an `/uploads/<hash>` URL and checks the name is the hash of what is served.
async fn fetch_upload(user: &User, server: &TestServer, url: &str) -> Vec<u8> {
    let response = user.http.get(server.url(url)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let bytes = response.bytes().await.unwrap().to_vec();
    let hash = hex::encode(sha2::Sha256::digest(&bytes));
    assert_eq!(
        url,
        format!("/uploads/{hash}"),
        "the name is the served bytes' hash"
    );
    bytes
}

#[tokio::test]
async fn an_image_past_the_pixel_limit_is_refused_and_nothing_is_stored() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;

    // A few hundred bytes each, 900 megapixels (or more) once decoded.
    let mut gif_with_a_huge_frame = b"GIF89a\x01\0\x01\0\0\0\0".to_vec();
    gif_with_a_huge_frame.extend_from_slice(&[0x2c, 0, 0, 0, 0, 0x30, 0x75, 0x30, 0x75, 0, 2]);
    gif_with_a_huge_frame.extend_from_slice(&[2, 0x4c, 0x01, 0, 0x3b]);
    let mut webp = b"RIFF\x24\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
    webp.extend_from_slice(&[0x2f, 0x75, 0, 0x2f, 0x75, 0]);
    webp.extend_from_slice(b"VP8L\x05\0\0\0\x2f\0\0\0\0\0");
    let huge = [
        ("png", png(30_000, 30_000, &[])),
        ("jpeg", jpeg(30_000, 30_000, &[])),
        ("gif", gif_with_a_huge_frame),
        ("webp", webp),
    ];
    for (kind, image) in &huge {
        let (status, body) = alice
            .send_json(&bob.id, json!({ "image": data_url(kind, image) }))
            .await;
        assert_eq!(status, 413, "{kind}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("30000x30000") && message.contains("limit of 40000000 pixels"),
            "{kind}: {message}"
        );
    }
    let (png_name, huge_png) = &huge[0];
    let form = reqwest::multipart::Form::new()
        .text("text", "look")
        .part("image", image_part(huge_png, "big.png"));
    let (status, body) = post_multipart(&server, &alice, &bob, form).await;
    assert_eq!(status, 413, "multipart: {body}");
    let (status, body) = update_profile_pic(&alice, &server, data_url(png_name, huge_png)).await;
    assert_eq!(status, 413, "profile picture: {body}");

    let counts = server.queues.queue("message").unwrap().counts().await;
    assert_eq!(counts.unwrap().total(), 0, "nothing queued");
    assert_eq!(stored_files(&server.data_dir), 0, "nothing stored");
    server.stop().await;
}

#[tokio::test]
async fn the_pixel_limit_is_a_setting() {
    let server = TestServer::memory_with(|config| config.max_image_pixels = 100).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let (status, body) = alice
        .send_json(
            &bob.id,
            json!({ "image": data_url("png", &png(10, 10, &[])) }),
        )
        .await;
    assert_eq!(status, 202, "exactly at the limit: {body}");
    let (status, body) = alice
        .send_json(
            &bob.id,
            json!({ "image": data_url("png", &png(11, 10, &[])) }),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body["message"],
        "image is 11x10 pixels, more than the limit of 100 pixels"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_photo_is_served_without_its_gps_position_but_keeps_its_orientation() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let photo = photo_with_gps();
    assert!(contains(&photo, b"GPS-WGS84"));
    let (status, body) = alice
        .send_json(&bob.id, json!({ "image": data_url("jpeg", &photo) }))
        .await;
    assert_eq!(status, 202, "{body}");
    // Multipart goes through the same door.
    let form = reqwest::multipart::Form::new().part("image", image_part(&photo, "IMG_0001.JPG"));
    let (status, body) = post_multipart(&server, &alice, &bob, form).await;
    assert_eq!(status, 202, "{body}");

    let image_urls = || async {
        bob.history(&alice, "")
            .await
            .iter()
            .filter_map(|message| message["image"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    eventually("both photos in the history", || async {
        image_urls().await.len() == 2
    })
    .await;
    let urls = image_urls().await;
    assert_eq!(urls[0], urls[1], "the same photo, the same stripped file");
    let served = fetch_upload(&bob, &server, &urls[0]).await;
    for gone in [&b"GPS"[..], b"Secret", b"http://ns.adobe.com"] {
        assert!(
            !contains(&served, gone),
            "{} is still served",
            String::from_utf8_lossy(gone)
        );
    }
    assert!(contains(&served, JPEG_SCAN), "the pixels are untouched");
    assert!(contains(&served, ORIENTATION_ONLY), "the orientation stays");
    assert_eq!(stored_files(&server.data_dir), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_second_image_in_one_request_is_refused() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let (first, second) = (png(1, 1, &[]), png(2, 2, &[]));

    let two_images = reqwest::multipart::Form::new()
        .text("text", "two pictures")
        .part("image", image_part(&first, "a.png"))
        .part("image", image_part(&second, "b.png"));
    let (status, body) = post_multipart(&server, &alice, &bob, two_images).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "a message can carry only one image");

    let another_field = reqwest::multipart::Form::new()
        .part("image", image_part(&first, "a.png"))
        .part("file", image_part(&second, "b.png"));
    let (status, body) = post_multipart(&server, &alice, &bob, another_field).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("file"), "{body}");

    let two_texts = reqwest::multipart::Form::new()
        .text("text", "one")
        .text("text", "two");
    let (status, body) = post_multipart(&server, &alice, &bob, two_texts).await;
    assert_eq!(status, 400, "{body}");

    // JSON cannot name an image twice either.
    let duplicate_key = format!(
        r#"{{"image":"{}","image":"{}"}}"#,
        data_url("png", &first),
        data_url("png", &second)
    );
    let response = alice
        .http
        .post(server.url(&format!("/api/messages/send/{}", bob.id)))
        .header("content-type", "application/json")
        .body(duplicate_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let counts = server.queues.queue("message").unwrap().counts().await;
    assert_eq!(counts.unwrap().total(), 0, "nothing queued");
    assert_eq!(stored_files(&server.data_dir), 0, "nothing stored");
    server.stop().await;
}

#[tokio::test]
async fn a_profile_picture_loses_its_metadata() {
    let server = TestServer::memory().await;
    let alice = User::signup(&server, "Alice").await;
    let exif = exif_with_gps();
    let picture = png(
        4,
        4,
        &[
            (b"tEXt", b"Author\0Alice Secret"),
            (b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0<x>GPS Secret</x>"),
            (b"eXIf", &exif),
            (b"tIME", &[7, 234, 12, 2, 8, 0, 0]),
        ],
    );
    let (status, user) = update_profile_pic(&alice, &server, data_url("png", &picture)).await;
    assert_eq!(status, 200, "{user}");
    let url = user["profilePic"].as_str().unwrap().to_owned();
    let served = fetch_upload(&alice, &server, &url).await;
    for gone in [&b"Secret"[..], b"GPS", b"tEXt", b"iTXt", b"tIME"] {
        assert!(
            !contains(&served, gone),
            "{} is still served",
            String::from_utf8_lossy(gone)
        );
    }
    assert!(contains(&served, &png_chunk(b"IDAT", PNG_PIXELS)));
    assert!(contains(
        &served,
        &png_chunk(b"eXIf", &ORIENTATION_ONLY[6..])
    ));
    let (_, me) = alice.get("/api/auth/check").await;
    assert_eq!(me["profilePic"], url.as_str());
    server.stop().await;
}
