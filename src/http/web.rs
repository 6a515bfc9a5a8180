//! The chat web client: `static/app/` embedded in the binary and served at `/`.
//!
//! The page (`index.html`) answers `/` and the client's own routes (`/login`, `/signup`,
//! `/profile`, `/chat/<userId>`), always revalidated (`no-cache` + ETag) so an upgrade reaches
//! every browser on its next load. The page names its files under `/app/<version>/`, where the
//! version is a digest of every embedded file: those URLs never change meaning, so they are cached
//! for a year (`immutable`). The same files are also served unversioned at `/app/<path>` with
//! `no-cache`, for anything that does not know the version.
//!
//! Every response carries a Content-Security-Policy that allows only this origin's scripts and
//! styles (no inline script or style), so user text that ever slipped into markup still could not
//! run. Must not depend on the chat domain: the client talks to it through the JSON API and `/ws`.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest as _, Sha256};

use super::{ApiError, AppState};

/// The client's routes and files.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/login", get(page))
        .route("/signup", get(page))
        .route("/profile", get(page))
        .route("/verify-email", get(page))
        .route("/unsubscribe", get(page))
        .route("/reset-password", get(page))
        .route("/forgot-password", get(page))
        .route("/chat/{user_id}", get(page))
        .route("/app/{*path}", get(asset))
        // The client's scripts and styles shrink to about a quarter with gzip.
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
}

#[derive(rust_embed::Embed)]
#[folder = "static/app/"]
struct Assets;

/// The policy of every client response. `img-src` admits `https:` for profile pictures and images
/// stored on Cloudinary, `data:`/`blob:` for previews before upload; `connect-src` admits `/ws`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data: blob: https:; \
     connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Where the page finds its files; rewritten to `/app/<version>/` when the page is served.
const ASSET_PREFIX: &str = "/app/";

/// Characters of the hex digest used as the version segment.
const VERSION_LEN: usize = 12;

/// A digest of every embedded file (names and contents), computed once.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut names: Vec<_> = Assets::iter().collect();
    names.sort();
    let mut digest = Sha256::new();
    for name in names {
        digest.update(name.as_bytes());
        digest.update([0]);
        if let Some(file) = Assets::get(&name) {
            digest.update(file.metadata.sha256_hash());
        }
    }
    hex::encode(digest.finalize())[..VERSION_LEN].to_owned()
});

/// `index.html` with its asset URLs pinned to [`VERSION`], and the page's ETag.
static PAGE: LazyLock<Option<(Vec<u8>, String)>> = LazyLock::new(|| {
    let file = Assets::get("index.html")?;
    let text = String::from_utf8_lossy(&file.data);
    let pinned = text.replace(
        &format!("\"{ASSET_PREFIX}"),
        &format!("\"{ASSET_PREFIX}{}/", *VERSION),
    );
    let etag = format!(
        "\"{}\"",
        hex::encode(&Sha256::digest(pinned.as_bytes())[..16])
    );
    Some((pinned.into_bytes(), etag))
});

/// `GET /` and the client's routes: the page. It holds no data, so it is served to anyone; the
/// client asks `/api/auth/check` and shows the login form without a session.
async fn page(headers: HeaderMap) -> Response {
    let Some((body, etag)) = PAGE.as_ref() else {
        return ApiError::not_found("not found").into_response();
    };
    respond(
        "index.html",
        body.clone(),
        etag,
        Caching::Revalidate,
        &headers,
    )
}

/// `GET /app/<path>` and `GET /app/<version>/<path>`.
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let (name, caching) = match path.split_once('/') {
        Some((version, rest)) if is_version(version) => {
            // An older page may still ask for its own version after an upgrade: it gets today's
            // file, but not cached for a year under the old name.
            let caching = if version == VERSION.as_str() {
                Caching::Immutable
            } else {
                Caching::Revalidate
            };
            (rest, caching)
        }
        _ => (path.as_str(), Caching::Revalidate),
    };
    // The page is served at `/` only, with its URLs pinned.
    if name == "index.html" {
        return ApiError::not_found("not found").into_response();
    }
    let Some(file) = Assets::get(name) else {
        return ApiError::not_found("not found").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    respond(name, file.data.into_owned(), &etag, caching, &headers)
}

fn is_version(segment: &str) -> bool {
    segment.len() == VERSION_LEN && segment.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[derive(Debug, Clone, Copy)]
enum Caching {
    /// Ask the server every time (cheap: the ETag usually answers 304).
    Revalidate,
    /// The URL names one version of the file forever.
    Immutable,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("webmanifest") => "application/manifest+json",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn respond(
    name: &str,
    body: Vec<u8>,
    etag: &str,
    caching: Caching,
    request_headers: &HeaderMap,
) -> Response {
    let cache_control = match caching {
        Caching::Revalidate => "no-cache",
        Caching::Immutable => "public, max-age=31536000, immutable",
    };
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(name)),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let mut response = if not_modified {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (headers, body).into_response()
    };
    if let Ok(etag) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_files_under_the_version() {
        let (body, etag) = PAGE.as_ref().expect("index.html is embedded");
        let page = String::from_utf8_lossy(body);
        assert!(page.contains(&format!("\"/app/{}/", *VERSION)), "{page}");
        assert!(!page.contains("\"/app/main.js\""));
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        assert!(is_version(&VERSION));
    }

    #[test]
    fn every_embedded_file_has_a_known_content_type() {
        for name in Assets::iter() {
            assert_ne!(
                content_type(&name),
                "application/octet-stream",
                "{name} would be served as bytes"
            );
        }
    }
}
