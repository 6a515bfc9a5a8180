//! The chat web client: `static/app/` embedded in the binary and served at `/`.
//!
//! The page (`index.html`) answers `/` and the client's own routes (`/login`, `/signup`,
//! `/profile`, `/chat/<userId>`, `/groups/<groupId>`), always revalidated (`no-cache` + ETag) so an upgrade reaches
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
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::assets::{self, Caching, Site};
use super::{ApiError, AppState};

/// The client's routes and files; with `FRONTEND_DIR` only its e-mail link pages (the folder's
/// front end takes the rest, see `frontend.rs`).
pub fn router(config: &crate::config::Config) -> Router<AppState> {
    let client = if config.serve.frontend_dir.is_some() {
        Router::new()
    } else {
        Router::new()
            .route("/", get(page))
            .route("/login", get(page))
            .route("/signup", get(page))
            .route("/profile", get(page))
            .route("/chat/{user_id}", get(page))
            .route("/groups/{group_id}", get(page))
    };
    client
        .route("/verify-email", get(page))
        .route("/unsubscribe", get(page))
        .route("/reset-password", get(page))
        .route("/forgot-password", get(page))
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

const SITE: Site = Site {
    content_security_policy: CONTENT_SECURITY_POLICY,
};

/// Where the page finds its files; rewritten to `/app/<version>/` when the page is served.
const ASSET_PREFIX: &str = "/app/";

/// Characters of the hex digest used as the version segment.
const VERSION_LEN: usize = 12;

/// A digest of every embedded file (names and contents), computed once.
static VERSION: LazyLock<String> = LazyLock::new(|| assets::version::<Assets>(VERSION_LEN));

/// `index.html` with its asset URLs pinned to [`VERSION`], and the page's ETag.
static PAGE: LazyLock<Option<(Vec<u8>, String)>> = LazyLock::new(|| {
    let file = Assets::get("index.html")?;
    let text = String::from_utf8_lossy(&file.data);
    let pinned = text.replace(
        &format!("\"{ASSET_PREFIX}"),
        &format!("\"{ASSET_PREFIX}{}/", *VERSION),
    );
    let etag = assets::etag_of(pinned.as_bytes());
    Some((pinned.into_bytes(), etag))
});

/// `GET /` and the client's routes: the page. It holds no data, so it is served to anyone; the
/// client asks `/api/auth/check` and shows the login form without a session.
async fn page(headers: HeaderMap) -> Response {
    let Some((body, etag)) = PAGE.as_ref() else {
        return ApiError::not_found("not found").into_response();
    };
    SITE.respond(
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
    SITE.file::<Assets>(name, caching, &headers)
}

fn is_version(segment: &str) -> bool {
    segment.len() == VERSION_LEN && segment.bytes().all(|byte| byte.is_ascii_hexdigit())
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
                assets::content_type(&name),
                "application/octet-stream",
                "{name} would be served as bytes"
            );
        }
    }
}
