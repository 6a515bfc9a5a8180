//! The HTTP layer: the shared [`AppState`], the router ([`app`]) with its middleware stack, the
//! API error mapping, and the routes. Owns every wire (serde) type; the layers below never see
//! axum or JSON.
//!
//! Each route module exposes its own `router() -> Router<AppState>`; [`app`] merges them.

mod account;
mod admin;
mod admin_users;
mod assets;
mod auth;
mod chat;
mod error;
mod files;
mod frontend;
mod groups;
mod health;
mod message_search;
pub mod monitor;
mod origin;
mod prometheus;
mod queue_json;
mod serve;
mod session;
mod settings;
mod socket;
mod user_search;
mod users;
mod web;
pub mod wire;

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::config::{Config, Secrets};
use crate::queue::QueueManager;
use crate::store::JobStore;

pub use error::{error_response, ApiError, ErrorBody, JsonBody, INTERNAL_MESSAGE};
pub use files::{ServeSettings, UPLOAD_PATH};
pub use origin::cookie_origin_refusal;
pub use serve::serve_connections;
pub use session::{authenticate, EXPECTED_USER_HEADER};
pub use settings::HttpSettings;
pub use socket::HubDelivery;

/// Largest request body accepted: a 5 MB image as a base64 data URL plus the JSON around it.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// How long a handler may run before the client gets 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares. Cloning is one reference-count increment.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    secrets: Secrets,
    job_store: Arc<dyn JobStore>,
    queues: QueueManager,
    /// The chat domain and its HTTP limits; set once at start-up (absent in tests that only
    /// exercise the queues, where chat routes answer 503).
    chat: std::sync::OnceLock<chat::ChatState>,
    /// Queue health checks (thresholds, recent stalls), shared with the alert monitor.
    health: crate::alerts::HealthMonitor,
    /// Failed admin-key attempts per client address, and the dashboard's sessions.
    admin_auth: admin::AdminAuth,
    /// Set once start-up has finished; `/readyz` reports it.
    ready: AtomicBool,
    /// Cancelled when shutdown begins: a child of the server's root token, and the parent of
    /// every socket's own token, so long-lived handlers (WebSockets, the event stream) close
    /// instead of holding the process past its grace period.
    shutdown: CancellationToken,
    /// Every task the HTTP layer spawns (connections, socket sessions, their session checks), so
    /// shutdown can wait for them.
    tasks: TaskTracker,
    started_at: Instant,
}

impl AppState {
    /// A state that is not ready yet; call [`AppState::set_ready`] once start-up has finished.
    pub fn new(config: Config, secrets: Secrets, queues: QueueManager) -> AppState {
        AppState::with_shutdown(config, secrets, queues, CancellationToken::new())
    }

    /// [`AppState::new`] whose shutdown is `shutdown`, a child of the caller's root token.
    pub fn with_shutdown(
        config: Config,
        secrets: Secrets,
        queues: QueueManager,
        shutdown: CancellationToken,
    ) -> AppState {
        let job_store = queues.store().clone();
        let health =
            crate::alerts::HealthMonitor::new(config.health.clone(), config.data_dir.clone());
        let admin_auth = admin::AdminAuth::new(config.login_max_failures, &secrets.admin_key);
        AppState {
            inner: Arc::new(Inner {
                config,
                secrets,
                job_store,
                queues,
                chat: std::sync::OnceLock::new(),
                health,
                admin_auth,
                ready: AtomicBool::new(false),
                shutdown,
                tasks: TaskTracker::new(),
                started_at: Instant::now(),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The JWT secret and admin key, always present (unlike the `Option`s in [`Config`]).
    pub fn secrets(&self) -> &Secrets {
        &self.inner.secrets
    }

    pub fn job_store(&self) -> &Arc<dyn JobStore> {
        &self.inner.job_store
    }

    /// Attaches the chat domain and the WebSocket hub it delivers through (once; later calls
    /// are ignored).
    pub fn set_chat(&self, chat: Arc<crate::chat::Chat>, hub: crate::ws::Hub) {
        let limits = chat::ChatState::new(chat, hub, &self.inner.config);
        let _ = self.inner.chat.set(limits);
    }

    /// The chat domain and the WebSocket hub, for the `/ws` route.
    pub fn realtime(&self) -> Result<(&Arc<crate::chat::Chat>, &crate::ws::Hub), ApiError> {
        let chat = self.chat_state()?;
        Ok((&chat.chat, &chat.hub))
    }

    fn chat_state(&self) -> Result<&chat::ChatState, ApiError> {
        self.inner
            .chat
            .get()
            .ok_or_else(|| ApiError::Unavailable("chat is not available".to_owned()))
    }

    /// Queue health checks; the alert monitor started by `server` shares this one.
    pub fn health_monitor(&self) -> &crate::alerts::HealthMonitor {
        &self.inner.health
    }

    pub(crate) fn admin_auth(&self) -> &admin::AdminAuth {
        &self.inner.admin_auth
    }

    /// The queue engine (the `message`, `notification` and `email` queues).
    pub fn queues(&self) -> &QueueManager {
        &self.inner.queues
    }

    /// When this process started serving (for `uptimeSeconds`).
    pub fn started_at(&self) -> Instant {
        self.inner.started_at
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }

    /// Marks the start of shutdown: `/readyz` fails and [`AppState::shutdown_started`] resolves.
    pub fn begin_shutdown(&self) {
        self.set_ready(false);
        self.inner.shutdown.cancel();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub async fn shutdown_started(&self) {
        self.inner.shutdown.cancelled().await;
    }

    /// The HTTP layer's shutdown token; long-lived tasks take a child of it.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// The tracker of every task the HTTP layer spawns; shutdown closes it and waits.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }
}

/// The whole HTTP application: every route, the JSON 404 fallback and the middleware stack.
pub fn app(state: AppState) -> Router {
    crate::telemetry::init();
    let cors = cors_layer(&state.config().http.cors_origins);
    // `Router::layer` wraps what came before, so the list reads innermost first.
    let router = Router::new()
        .merge(health::router())
        .merge(monitor::router())
        .merge(admin::router())
        .merge(admin_users::router())
        .merge(prometheus::router())
        .merge(auth::router())
        .merge(account::router())
        .merge(users::router())
        .merge(chat::router())
        .merge(groups::router())
        .merge(socket::router())
        .merge(web::router(state.config()))
        .merge(files::router(state.config()))
        .merge(user_search::router())
        .merge(message_search::router());
    #[cfg(feature = "socketio")]
    let router = router.merge(crate::socketio::router());
    router
        // A JSON 404, or `FRONTEND_DIR`'s front end for paths that are not Courier's.
        .fallback(frontend::fallback)
        .layer(middleware::from_fn_with_state(state.clone(), origin::guard))
        // Outside the origin guard: a preflight is answered here and never reaches it.
        .layer(cors)
        // axum's extractors apply their own 2 MB default; make them agree with the layer below.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // MAX_BODY_BYTES, and FILE_MAX_MB on the upload route.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            files::body_limit,
        ))
        // REQUEST_TIMEOUT, and longer for a file upload on a slow link.
        .layer(middleware::from_fn(files::deadline))
        .layer(CatchPanicLayer::custom(panic_response))
        // Outside the layers above, so their bare 408/413 responses get the JSON shape too.
        .layer(middleware::map_response(json_error_bodies))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // Causes are logged at error level where they happen (ApiError, panics); the
                // trace's own 5xx line is the summary, and readiness 503s while draining are normal.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        // Outermost, so the time includes every layer; `Router::layer` applies it per route,
        // after routing, which is what makes the matched route available as the label.
        .layer(middleware::from_fn(prometheus::track_http))
        .with_state(state)
}

/// CORS for the origins in `CORS_ORIGINS` only (with credentials, so their pages can use the
/// cookie); with none configured, no response carries CORS headers and browsers keep every
/// other origin's scripts from reading the API.
fn cors_layer(origins: &[String]) -> tower::util::Either<CorsLayer, tower::layer::util::Identity> {
    if origins.is_empty() {
        return tower::util::Either::Right(tower::layer::util::Identity::new());
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        // Validated at start-up (`settings::parse_origin`), so each is a valid header value.
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    tower::util::Either::Left(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static(session::EXPECTED_USER_HEADER),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request span: method, path and request id. Only the path is recorded, never the query,
/// which can carry a token (`/ws?token=`).
fn request_span(request: &Request<Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    )
}

/// A handler panicked: log what it said, answer like any other internal error.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    tracing::error!(panic = detail, "handler panicked");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE)
}

/// Error responses made by axum or tower-http themselves (405 from routing, 408 from the
/// timeout, 413 from the body limit) carry an empty or plain-text body; give them the API's
/// `{"message": ...}` shape, keeping their status and headers.
async fn json_error_bodies(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let rewrite = match content_type {
        None => true,
        Some(content_type) => content_type.starts_with("text/plain"),
    };
    if !rewrite {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_default();
    let message = match fixed_message(status) {
        Some(message) => message.to_owned(),
        None if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
        None => text,
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut rewritten = error_response(status, message);
    for (name, value) in parts.headers.iter() {
        rewritten
            .headers_mut()
            .entry(name)
            .or_insert_with(|| value.clone());
    }
    rewritten
}

/// Messages for statuses whose own text is either a cause (5xx) or unhelpful.
fn fixed_message(status: StatusCode) -> Option<&'static str> {
    match status {
        StatusCode::REQUEST_TIMEOUT => Some("request timed out"),
        StatusCode::PAYLOAD_TOO_LARGE => Some("request body is too large"),
        StatusCode::METHOD_NOT_ALLOWED => Some("method not allowed"),
        status if status.is_server_error() => Some(INTERNAL_MESSAGE),
        _ => None,
    }
}
