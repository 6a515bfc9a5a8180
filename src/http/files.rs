//! `POST /api/files/upload` and `GET /api/files/<sha256>[/<name>]` (with the stock front end's
//! `/api/files/proxy/<sha256>[/<name>]` links): file attachments of any type.
//!
//! **Uploads** stream to disk ([`crate::chat::files`]): the body limit is `FILE_MAX_MB` plus a
//! little multipart framing ([`body_limit`] replaces the global 8 MB limit on this one path),
//! the file itself is cut off at `FILE_MAX_MB` while it streams (413, nothing kept), and the
//! answer comes only once the file is synced under its hash. Uploads per user are limited
//! (`RATE_LIMIT_UPLOAD` a minute), and may take [`UPLOAD_TIMEOUT`] rather than 30 s. Errors carry both `message` and `error` (the stock upload
//! dialog reads `error`).
//!
//! **Who may read a file:** anyone signed in who has its URL. The URL holds the SHA-256 of the
//! content, which cannot be guessed, and is only ever given to the uploader and to whomever a
//! message carrying it reaches. (Someone holding the very same bytes could compute the hash and
//! learn that they were uploaded here; a per-conversation check needs the message record to
//! name its file, which is the send side's.)
//!
//! **Serving** never lets a file run as a page on Courier's origin: only a PNG, JPEG, GIF or
//! WebP recognised by its bytes (and within the image limit, so it passed the image checks) is
//! served inline with its own type; everything else, HTML, SVG and scripts included, is
//! `application/octet-stream` with `Content-Disposition: attachment`. Every answer carries
//! `nosniff`, `Content-Security-Policy: sandbox; default-src 'none'` and
//! `Cross-Origin-Resource-Policy: same-site`; the hash is the ETag and the content never
//! changes (`immutable`); ranges work (tower-http's `ServeFile`).

mod settings;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use tower::ServiceExt as _;

use super::session::CurrentUser;
use super::{ApiError, AppState, MAX_BODY_BYTES, REQUEST_TIMEOUT};
use crate::chat::files::{self, FileStore, UploadError};
use crate::chat::images::ImageLimits;
use crate::config::Config;

pub use settings::ServeSettings;

/// The upload route, which alone takes bodies beyond [`MAX_BODY_BYTES`].
pub const UPLOAD_PATH: &str = "/api/files/upload";

/// Room for the multipart framing around the file (boundaries, part headers, small fields).
const MULTIPART_SLACK: u64 = 64 * 1024;

/// The policy of every served file: nothing in it may run, load or be framed as a page.
const FILE_CSP: &str = "sandbox; default-src 'none'; frame-ancestors 'none'";

/// The upload limits and where files go; one per router.
struct Files {
    store: FileStore,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

pub fn router(config: &Config) -> Router<AppState> {
    // The pixel limit was validated at start-up by the chat domain; fall back to the default
    // rather than refuse to serve files when it is odd.
    let limits = ImageLimits::new(config.max_image_pixels).unwrap_or_else(|_| {
        ImageLimits::new(crate::chat::images::DEFAULT_MAX_IMAGE_PIXELS)
            .unwrap_or_else(|_| unreachable!("the default pixel limit is at least 1"))
    });
    let store = FileStore::new(&config.data_dir, config.serve.file_max_bytes(), limits);
    // Built once at start-up, before any upload: what a crash left half-written goes now.
    match store.remove_leftovers() {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed unfinished uploads"),
        Err(err) => tracing::warn!(error = %err, "cannot remove unfinished uploads"),
    }
    let files = Arc::new(Files {
        store,
        limiter: NonZeroU32::new(config.serve.rate_limit_upload)
            .map(|limit| RateLimiter::keyed(Quota::per_minute(limit))),
    });
    Router::new()
        .route(
            UPLOAD_PATH,
            // The size is enforced while the file streams (and by `body_limit`).
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/files/proxy/{*path}", get(proxy))
        .route("/api/files/{hash}", get(download))
        .route("/api/files/{hash}/{name}", get(download_named))
        .layer(Extension(files))
}

/// The request body limit of every route: [`MAX_BODY_BYTES`], or `FILE_MAX_MB` plus the
/// multipart framing on [`UPLOAD_PATH`]. A declared length over it is refused at once; a body
/// that runs past it fails while it is read (413 either way).
pub async fn body_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = if request.uri().path() == UPLOAD_PATH && request.method() == Method::POST {
        usize::try_from(state.config().serve.file_max_bytes() + MULTIPART_SLACK)
            .unwrap_or(usize::MAX)
    } else {
        MAX_BODY_BYTES
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        let refusal = ApiError::PayloadTooLarge("request body is too large".to_owned());
        return if request.uri().path() == UPLOAD_PATH {
            with_error_key(refusal.into_response()).await
        } else {
            refusal.into_response()
        };
    }
    let request = request.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
    next.run(request).await
}

/// How long an upload may take: 25 MB over a 1 Mbit/s uplink takes more than three minutes,
/// and the global [`REQUEST_TIMEOUT`] would cut it at 30 s. (A connection that stops sending
/// is still closed after `IDLE_TIMEOUT_SECS`.)
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The time limit of every request: [`REQUEST_TIMEOUT`], or [`UPLOAD_TIMEOUT`] on
/// [`UPLOAD_PATH`]; past it the client gets 408.
pub async fn deadline(request: Request, next: Next) -> Response {
    let limit = if request.uri().path() == UPLOAD_PATH && request.method() == Method::POST {
        UPLOAD_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

async fn upload(
    State(state): State<AppState>,
    Extension(files): Extension<Arc<Files>>,
    user: Result<CurrentUser, ApiError>,
    request: Request,
) -> Response {
    let answer = match user {
        Ok(CurrentUser(user)) => receive(&state, &files, &user.id, request).await,
        Err(refused) => Err(refused),
    };
    match answer {
        Ok(answer) => answer.into_response(),
        Err(err) => with_error_key(err.into_response()).await,
    }
}

async fn receive(
    state: &AppState,
    files: &Files,
    user_id: &str,
    request: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(limiter) = &files.limiter {
        limiter
            .check_key(&user_id.to_owned())
            .map_err(|not_until| ApiError::TooManyRequests {
                message: "Too many uploads, slow down".to_owned(),
                retry_after_secs: crate::chat::lockout::whole_seconds(
                    not_until.wait_time_from(DefaultClock::default().now()),
                ),
            })?;
    }
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("multipart/form-data"));
    if !is_multipart {
        return Err(ApiError::UnsupportedMediaType(
            "send the file as multipart/form-data in the field file".to_owned(),
        ));
    }
    let mut multipart =
        <Multipart as axum::extract::FromRequest<AppState>>::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let malformed = |err: axum::extract::multipart::MultipartError| {
        if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(files.store.max_bytes())
        } else {
            ApiError::bad_request(format!("malformed multipart body: {}", err.body_text()))
        }
    };
    while let Some(mut field) = multipart.next_field().await.map_err(malformed)? {
        if field.name() != Some("file") {
            if field.file_name().is_some() {
                return Err(ApiError::bad_request(format!(
                    "unexpected file field {}: send one file as the field file",
                    field.name().unwrap_or_default()
                )));
            }
            continue;
        }
        let name = files::clean_file_name(field.file_name().unwrap_or_default());
        let declared = field.content_type().map(str::to_owned);
        let mut staged = files.store.begin().await.map_err(upload_error)?;
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            staged.write(&chunk).await.map_err(upload_error)?;
        }
        // multer hands out one field at a time.
        drop(field);
        // One file per upload: a second one would be dropped without the sender knowing.
        if multipart.next_field().await.map_err(malformed)?.is_some() {
            return Err(ApiError::bad_request(
                "send one file per upload, as the field file",
            ));
        }
        let stored = staged.commit().await.map_err(upload_error)?;
        let mut sniffed = files::sniff(&stored.head, declared.as_deref(), &name);
        if files::is_inline_image(&stored.head, stored.size).is_none()
            && sniffed.kind == files::FileKind::Image
        {
            // A photo past the image limit is only downloaded: a front end that previews
            // `image` files would show it broken.
            sniffed.kind = files::FileKind::Other;
        }
        tracing::info!(
            user = user_id,
            hash = %stored.hash,
            size = stored.size,
            kind = sniffed.kind.as_str(),
            "file stored"
        );
        return Ok(Json(json!({
            "success": true,
            "file": {
                "url": files::file_url(&stored.hash, &name),
                "filename": name,
                "size": stored.size,
                "type": sniffed.kind.as_str(),
                "mimeType": sniffed.mime_type,
            },
            "message": "File uploaded successfully",
        })));
    }
    Err(ApiError::bad_request("no file: send it as the field file"))
}

fn too_large(limit: u64) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the file is too large (at most {} MB)",
        limit / (1024 * 1024)
    ))
}

fn upload_error(err: UploadError) -> ApiError {
    match err {
        UploadError::TooLarge { limit } => too_large(limit),
        UploadError::Refused(refused) => refused.into(),
        UploadError::Io(io) => {
            ApiError::Internal(anyhow::Error::new(io).context("cannot store a file"))
        }
    }
}

/// Adds `error` beside `message` in an error answer (the stock upload dialog reads `error`).
async fn with_error_key(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return (parts.status, parts.headers).into_response();
    };
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        if let Some(message) = object.get("message").cloned() {
            object.insert("error".to_owned(), message);
        }
    }
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    (parts.status, headers, Json(value)).into_response()
}

async fn download(
    Extension(files): Extension<Arc<Files>>,
    _user: CurrentUser,
    Path(hash): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    serve(&files, &hash, None, request).await
}

async fn download_named(
    Extension(files): Extension<Arc<Files>>,
    _user: CurrentUser,
    Path((hash, name)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    serve(&files, &hash, Some(&name), request).await
}

/// `/api/files/proxy/<sha256>[/<name>]`: the stock front end's download links, which take the
/// part of a file URL after an `/upload/` segment.
async fn proxy(
    Extension(files): Extension<Arc<Files>>,
    _user: CurrentUser,
    Path(path): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments
        .iter()
        .any(|segment| *segment == ".." || *segment == "." || segment.contains('\\'))
    {
        return Err(ApiError::bad_request("invalid file path"));
    }
    match segments.as_slice() {
        [hash] => serve(&files, hash, None, request).await,
        [hash, name] => serve(&files, hash, Some(name), request).await,
        _ => Err(ApiError::not_found("File not found")),
    }
}

async fn serve(
    files: &Files,
    hash: &str,
    name: Option<&str>,
    request: Request,
) -> Result<Response, ApiError> {
    // Only the hash ever names a path on disk; a name that tries to be a path is refused all
    // the same, so a link that looks like an escape never answers with a file.
    let escapes =
        |text: &str| text.contains(['/', '\\']) || text.split('/').any(|part| part == "..");
    if escapes(hash) || name.is_some_and(|name| name == "." || escapes(name)) {
        return Err(ApiError::bad_request("invalid file path"));
    }
    let not_found = || ApiError::not_found("File not found");
    let path = files.store.path_of(hash).ok_or_else(not_found)?;
    let stored = files
        .store
        .stat(hash)
        .await
        .map_err(|err| ApiError::Internal(anyhow::Error::new(err).context("cannot read a file")))?
        .ok_or_else(not_found)?;
    let etag = format!("\"{hash}\"");
    let headers = request.headers().clone();
    let inline = files::is_inline_image(&stored.head, stored.size);
    let name = files::clean_file_name(name.unwrap_or(hash));
    let mut response = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let served = tower_http::services::ServeFile::new(&path)
            .oneshot(request)
            .await
            .map_err(|err| {
                ApiError::Internal(anyhow::Error::new(err).context("cannot serve a file"))
            })?;
        served.map(Body::new)
    };
    if response.status() == StatusCode::NOT_FOUND {
        return Err(not_found());
    }
    let content_type = inline.map_or("application/octet-stream", |kind| kind.content_type());
    let disposition = format!(
        "{}; {}",
        if inline.is_some() {
            "inline"
        } else {
            "attachment"
        },
        disposition_name(&name)
    );
    let set = response.headers_mut();
    set.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        set.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        set.insert(header::ETAG, value);
    }
    set.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    set.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(FILE_CSP),
    );
    set.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    set.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        // Same-site, not same-origin: a front end on another port of this host (a development
        // server allowed by CORS_ORIGINS) still shows the images.
        HeaderValue::from_static("same-site"),
    );
    Ok(response)
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|candidate| candidate == etag || candidate == "*" || candidate == format!("W/{etag}"))
}

/// What RFC 8187 leaves unencoded in `filename*` (`attr-char`).
const ATTR_CHARS: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>` (RFC 6266).
fn disposition_name(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, ATTR_CHARS);
    format!("filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_names_are_quoted_safely() {
        assert_eq!(
            disposition_name("Zoë \"x\".txt"),
            "filename=\"Zo_ _x_.txt\"; filename*=UTF-8''Zo%C3%AB%20%22x%22.txt"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn uploads_may_take_longer_than_other_requests() {
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "done"
        };
        let app: Router = Router::new()
            .route("/slow", get(slow))
            .route(UPLOAD_PATH, post(slow))
            .layer(axum::middleware::from_fn(deadline));
        let request = |method: Method, path: &str| {
            axum::http::Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap()
        };
        let response = app
            .clone()
            .oneshot(request(Method::GET, "/slow"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let response = app
            .oneshot(request(Method::POST, UPLOAD_PATH))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn etags_match_exactly_or_weakly() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(if_none_match(&headers, "\"b\""));
        assert!(if_none_match(&headers, "\"a\""));
        assert!(!if_none_match(&headers, "\"c\""));
    }
}
