//! Request forgery and socket hijacking: a request that the browser authenticated with the
//! user's `jwt` cookie is served only when it comes from a page of Courier's own origin or of
//! one listed in `CORS_ORIGINS`.
//!
//! `SameSite=Strict` keeps the cookie off cross-*site* requests, but a page on another port of
//! the same host, or on a sibling subdomain, is the same site: the browser sends it the cookie,
//! and a WebSocket has no same-origin policy at all. So every state-changing request and every
//! socket handshake that carries the cookie (and no token of its own) is checked here:
//! - with an `Origin` header, it must be an allowed origin (`null` never is);
//! - without one, `Sec-Fetch-Site` (sent by current browsers) must say `same-origin` or `none`;
//! - with neither, only bodies a page cannot send without a CORS preflight are accepted: a
//!   form-encoded, multipart or plain-text `POST` (what an HTML form sends) is refused.
//!
//! Requests with an explicit token (`Authorization: Bearer`, or `?token=` on a socket) carry a
//! credential no other page has, so they are not checked. Admin routes have their own cookie
//! and check (`admin.rs`).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::session::SESSION_COOKIE;
use super::settings::normalise_origin;
use super::{ApiError, AppState};

/// Refuses cookie-authenticated requests from other origins (see the module docs).
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if needs_check(&request) {
        if let Err(refusal) = check(request.headers(), &state.config().http.allowed_origins()) {
            tracing::warn!(
                method = %request.method(),
                path = %request.uri().path(),
                origin = request
                    .headers()
                    .get(header::ORIGIN)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("-"),
                reason = refusal.reason,
                "cross-origin request with the session cookie refused"
            );
            return ApiError::forbidden(refusal.message).into_response();
        }
    }
    next.run(request).await
}

/// Why a request with the session cookie and these headers may not act as the user (see the
/// module docs), or `None` when it may. For handshakes that authenticate later, such as
/// Socket.IO's namespace connect.
pub fn cookie_origin_refusal(headers: &HeaderMap, allowed: &[String]) -> Option<&'static str> {
    check(headers, allowed).err().map(|refusal| refusal.message)
}

/// Why a request was refused: `message` for the client, `reason` for the log.
#[derive(Debug)]
struct Refusal {
    message: &'static str,
    reason: &'static str,
}

/// Whether the request is one a foreign page could make with the user's cookie and that acts
/// as the user: a socket handshake or a state-changing method, authenticated by the cookie.
fn needs_check(request: &Request) -> bool {
    let acts = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) || is_websocket_upgrade(request.headers());
    acts && has_session_cookie(request.headers()) && !has_explicit_token(request)
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.trim().eq_ignore_ascii_case("websocket"))
}

fn has_session_cookie(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name.trim() == SESSION_COOKIE && !value.trim().is_empty())
}

/// A Bearer header, or the `token` query parameter the socket routes accept. Either one is
/// what authenticates the request (it wins over the cookie: see `session::request_token`).
fn has_explicit_token(request: &Request) -> bool {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| !token.trim().is_empty());
    let query_token = request.uri().query().is_some_and(|query| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .any(|(name, value)| name == "token" && !value.is_empty())
    });
    bearer || query_token
}

fn check(headers: &HeaderMap, allowed: &[String]) -> Result<(), Refusal> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        return if origin_allowed(origin, headers, allowed) {
            Ok(())
        } else {
            Err(Refusal {
                message: "cross-origin request refused: this origin is not allowed (CORS_ORIGINS)",
                reason: "origin not allowed",
            })
        };
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.to_str().unwrap_or("") {
            "same-origin" | "none" => Ok(()),
            _ => Err(Refusal {
                message: "cross-origin request refused: it came from another site or origin",
                reason: "sec-fetch-site is not same-origin",
            }),
        };
    }
    if is_websocket_upgrade(headers) || !is_form_like(headers) {
        // Browsers always send Origin on socket handshakes and on the form-like bodies below,
        // so a request with neither header comes from a program, not from someone's page.
        return Ok(());
    }
    Err(Refusal {
        message: "form and multipart bodies with the session cookie need an Origin header",
        reason: "form-like body without origin",
    })
}

/// A body an HTML form (or a `fetch` without a preflight) can send: anything but JSON.
fn is_form_like(headers: &HeaderMap) -> bool {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.trim().to_ascii_lowercase());
    match content_type {
        Some(content_type) => !content_type.starts_with("application/json"),
        None => headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0"),
    }
}

/// Courier's own origin (the page was served by this host and port) or a configured one.
fn origin_allowed(origin: &str, headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = normalise_origin(origin) else {
        // `null` (sandboxed frames, file pages) and anything malformed.
        return false;
    };
    if allowed.contains(&origin) {
        return true;
    }
    let own_host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    match (own_host, origin.split_once("://")) {
        (Some(own_host), Some((scheme, authority))) => {
            // The Host header omits a default port just as Origin does; compare them the same way.
            normalise_origin(&format!("{scheme}://{own_host}"))
                .is_some_and(|own| own.split_once("://").map(|(_, host)| host) == Some(authority))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn own_and_configured_origins_pass_others_do_not() {
        let allowed = vec!["http://localhost:5173".to_owned()];
        let own = headers(&[
            ("host", "chat.example.com"),
            ("origin", "https://chat.example.com"),
        ]);
        assert!(check(&own, &allowed).is_ok());
        let configured = headers(&[
            ("host", "127.0.0.1:5000"),
            ("origin", "http://localhost:5173"),
        ]);
        assert!(check(&configured, &allowed).is_ok());
        for origin in [
            "http://127.0.0.1:5001",
            "http://evil.chat.example.com",
            "null",
            "http://chat.example.com.evil.test",
        ] {
            let mut foreign = headers(&[("host", "127.0.0.1:5000")]);
            foreign.insert("origin", HeaderValue::from_str(origin).unwrap());
            assert!(
                check(&foreign, &allowed).is_err(),
                "{origin} should be refused"
            );
        }
    }

    #[test]
    fn without_origin_fetch_metadata_or_the_body_type_decides() {
        let none: Vec<String> = Vec::new();
        assert!(check(&headers(&[("sec-fetch-site", "same-site")]), &none).is_err());
        assert!(check(&headers(&[("sec-fetch-site", "same-origin")]), &none).is_ok());
        let form = headers(&[("content-type", "multipart/form-data; boundary=x")]);
        assert!(check(&form, &none).is_err());
        let plain = headers(&[("content-type", "text/plain")]);
        assert!(check(&plain, &none).is_err());
        let json = headers(&[("content-type", "application/json")]);
        assert!(check(&json, &none).is_ok());
        let upgrade = headers(&[("upgrade", "websocket")]);
        assert!(check(&upgrade, &none).is_ok());
    }
}
