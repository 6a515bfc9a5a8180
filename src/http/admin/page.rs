//! The dashboard page and its files (`static/admin/`), and `GET /admin/queues/info`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::key::{session_body, Admin};
use crate::http::assets::{Caching, Site};
use crate::http::{ApiError, AppState};

#[derive(rust_embed::Embed)]
#[folder = "static/admin/"]
struct Assets;

/// The page's own scripts and styles only; inline script (and so any injected handler) is
/// refused by the browser even if markup ever slipped through.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

const SITE: Site = Site {
    content_security_policy: CONTENT_SECURITY_POLICY,
};

/// The page, its files and `/admin/queues/info`.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/queues", get(dashboard))
        .route("/admin/queues/static/{file}", get(asset))
        .route("/admin/queues/info", get(info))
}

/// `GET /admin/queues`: the dashboard. The page holds no data (it asks the API, which needs the
/// key), so it is served to anyone; without a session it shows the login form.
async fn dashboard(headers: HeaderMap) -> Response {
    serve_asset("index.html", &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file == "index.html" {
        return ApiError::not_found("not found").into_response();
    }
    serve_asset(&file, &headers)
}

fn serve_asset(name: &str, request_headers: &HeaderMap) -> Response {
    SITE.file::<Assets>(name, Caching::Revalidate, request_headers)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InfoBody {
    message: &'static str,
    queues: Vec<String>,
    read_only: bool,
    endpoints: Endpoints,
    instructions: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Endpoints {
    dashboard: &'static str,
    info: &'static str,
    stats: &'static str,
    health: &'static str,
    metrics: &'static str,
    clear_failed: &'static str,
    retry: &'static str,
    prometheus: &'static str,
    events: &'static str,
    api: &'static str,
}

/// `GET /admin/queues/info`, as the MERN app had it: what the admin side offers.
async fn info(admin: Admin, State(state): State<AppState>) -> Json<InfoBody> {
    let _ = admin;
    Json(InfoBody {
        message: "Courier queue admin",
        queues: session_body(&state).queues,
        read_only: state.config().admin_read_only,
        endpoints: Endpoints {
            dashboard: "GET /admin/queues",
            info: "GET /admin/queues/info",
            stats: "GET /api/messages/queue/stats",
            health: "GET /api/messages/queue/health",
            metrics: "GET /api/messages/queue/metrics",
            clear_failed: "DELETE /api/messages/queue/{queueName}/failed",
            retry: "POST /api/messages/queue/{queueName}/retry",
            prometheus: "GET /metrics",
            events: "GET /admin/api/events",
            api: "/admin/api/queues",
        },
        instructions: vec![
            "Open /admin/queues in a browser and sign in with the admin key (QUEUE_ADMIN_KEY, or the key printed at first start).",
            "API clients send the key in the X-Admin-Key header.",
            "Set ADMIN_READ_ONLY=true to let the key look without changing anything.",
        ],
    })
}
