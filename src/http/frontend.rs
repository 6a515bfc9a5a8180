//! `FRONTEND_DIR`: a built single-page front end (such as the MERN app's `npm run build`
//! output) served from a folder at `/`, in place of the embedded client.
//!
//! A request no route takes comes here ([`fallback`]): a file of the folder when there is one
//! (GET and HEAD only), else the folder's `index.html`, so the front end's own routes
//! (`/login`, `/settings`, ...) load the page and its router takes over. Paths under Courier's
//! own prefixes (`/api`, `/admin`, `/ws`, `/socket.io`, `/uploads`, `/metrics`, `/healthz`,
//! `/readyz`) are never answered with the page: an unknown API route stays a JSON 404. Files
//! keep their types (tower-http's `ServeDir`; unknown extensions are `application/octet-stream`,
//! and every answer is `nosniff`); the page and unversioned files are revalidated on every load
//! (`no-cache`), files under `/assets/` (hashed names in a Vite build) are cached for a year.
//!
//! The embedded client's e-mail link pages (`/verify-email`, `/reset-password`,
//! `/forgot-password`, `/unsubscribe`, with its files under `/app/`) stay, since links in
//! e-mails already sent point there and the stock front end has no such pages.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt as _;
use tower_http::services::{ServeDir, ServeFile};

use super::{ApiError, AppState};

/// First path segments that belong to Courier, never to the front end.
const RESERVED: &[&str] = &[
    "api",
    "admin",
    "ws",
    "socket.io",
    "uploads",
    "metrics",
    "healthz",
    "readyz",
];

/// Whether `path` is under one of Courier's own prefixes.
pub fn is_reserved(path: &str) -> bool {
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    RESERVED
        .iter()
        .any(|reserved| first.eq_ignore_ascii_case(reserved))
}

/// What answers a request no route took: the front end folder's file or page, or a JSON 404.
pub async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let not_found = || ApiError::not_found("not found").into_response();
    let Some(dir) = state.config().serve.frontend_dir.clone() else {
        return not_found();
    };
    let path = request.uri().path().to_owned();
    if !matches!(*request.method(), Method::GET | Method::HEAD) || is_reserved(&path) {
        return not_found();
    }
    let page = ServeFile::new(dir.join("index.html"));
    let files = ServeDir::new(&dir)
        .append_index_html_on_directories(true)
        .fallback(page);
    let mut response = match files.oneshot(request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(never) => match never {},
    };
    if response.status() == StatusCode::NOT_FOUND {
        // The folder lost its index.html after start-up.
        tracing::warn!(dir = %dir.display(), "FRONTEND_DIR has no index.html");
        return not_found();
    }
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    let caching = if !is_page && path.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(caching));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn courier_prefixes_are_reserved() {
        for path in [
            "/api",
            "/api/nothing",
            "/admin/queues",
            "/ws",
            "/socket.io/",
            "/uploads/x",
            "/metrics",
            "/healthz",
            "/API/x",
        ] {
            assert!(is_reserved(path), "{path}");
        }
        for path in [
            "/",
            "/login",
            "/settings",
            "/assets/index.js",
            "/apixyz",
            "/avatar.png",
        ] {
            assert!(!is_reserved(path), "{path}");
        }
    }
}
