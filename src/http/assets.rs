//! The one server of embedded static files, shared by the chat client (`web`) and the dashboard
//! (`admin`): content types, ETags and `If-None-Match`, the two caching policies, the security
//! headers, and the version digest behind the client's immutable URLs.
//!
//! Each site embeds its own folder with `rust_embed` and names its own Content-Security-Policy
//! ([`Site`]); compression is a layer on the site's router. Must not know any route.

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;
use sha2::{Digest as _, Sha256};

use super::ApiError;

/// How long a browser may keep a response without asking again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// Ask the server every time (cheap: the ETag usually answers 304), so an upgrade is never
    /// half-applied.
    Revalidate,
    /// The URL names one version of the file forever.
    Immutable,
}

/// What differs between the sites that serve embedded files: their security policy.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    pub content_security_policy: &'static str,
}

impl Site {
    /// Serves the embedded file `name` of `E`, or 404.
    pub fn file<E: RustEmbed>(
        &self,
        name: &str,
        caching: Caching,
        headers: &HeaderMap,
    ) -> Response {
        let Some(file) = E::get(name) else {
            return ApiError::not_found("not found").into_response();
        };
        let etag = etag_of_digest(&file.metadata.sha256_hash());
        self.respond(name, file.data, &etag, caching, headers)
    }

    /// Serves `body` as the file `name` (its extension picks the content type) with `etag`,
    /// or 304 when the request already holds that version.
    pub fn respond(
        &self,
        name: &str,
        body: impl Into<Body>,
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
                HeaderValue::from_static(self.content_security_policy),
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
            (headers, body.into()).into_response()
        };
        if let Ok(etag) = HeaderValue::from_str(etag) {
            response.headers_mut().insert(header::ETAG, etag);
        }
        response
    }
}

/// A quoted ETag from a content digest (its first 16 bytes).
pub fn etag_of_digest(digest: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&digest[..digest.len().min(16)]))
}

/// The ETag of `bytes`.
pub fn etag_of(bytes: &[u8]) -> String {
    etag_of_digest(&Sha256::digest(bytes))
}

/// A digest of every embedded file of `E` (names and contents), `len` hex characters long: it
/// changes whenever any file does.
pub fn version<E: RustEmbed>(len: usize) -> String {
    let mut names: Vec<Cow<'static, str>> = E::iter().collect();
    names.sort();
    let mut digest = Sha256::new();
    for name in names {
        digest.update(name.as_bytes());
        digest.update([0]);
        if let Some(file) = E::get(&name) {
            digest.update(file.metadata.sha256_hash());
        }
    }
    let mut version = hex::encode(digest.finalize());
    version.truncate(len);
    version
}

/// The content type of a file by its extension.
pub fn content_type(name: &str) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: Site = Site {
        content_security_policy: "default-src 'none'",
    };

    #[test]
    fn a_matching_etag_answers_not_modified_with_the_same_headers() {
        let etag = etag_of(b"body");
        let fresh = SITE.respond(
            "a.js",
            b"body".to_vec(),
            &etag,
            Caching::Immutable,
            &HeaderMap::new(),
        );
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(
            fresh.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        let mut request = HeaderMap::new();
        request.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", {etag}")).unwrap(),
        );
        let cached = SITE.respond(
            "a.js",
            b"body".to_vec(),
            &etag,
            Caching::Revalidate,
            &request,
        );
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(cached.headers()[header::ETAG], etag.as_str());
        assert_eq!(cached.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(
            cached.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'"
        );
        assert_eq!(cached.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
