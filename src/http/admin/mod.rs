//! The admin side: the queue dashboard at `/admin/queues` (static files embedded from
//! `static/admin/`), `GET /admin/queues/info`, the dashboard's JSON API under `/admin/api/`, and
//! a server-sent event stream of queue activity.
//!
//! Who may use it is decided in `key.rs`, by one check that every route taking the admin key
//! shares (the job status route in `chat.rs` too): the `X-Admin-Key` header, compared in
//! constant time, or the `courier_admin` cookie the login form sets, which is a signed session
//! that expires after 12 hours and never holds the key (`cookie.rs`). Failures from one address
//! count together wherever they happen; past `LOGIN_MAX_FAILURES` in 15 minutes the address gets
//! 429 with the remaining wait, even with the right key. `ADMIN_READ_ONLY` lets the key look but
//! refuses every action with 403. Job data is sent as JSON values and rendered by the page as
//! text only.

mod actions;
mod cookie;
mod events;
mod key;
mod page;
mod read;

use axum::response::Redirect;
use axum::routing::get;
use axum::Router;

pub(crate) use key::{admin_from_headers, ClientAddress};
pub use key::{Admin, AdminAuth};

use super::AppState;

/// The admin routes: dashboard, info, login and logout, the dashboard's API and its event stream.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/queues") }))
        .route(
            "/admin/queues/",
            get(|| async { Redirect::to("/admin/queues") }),
        )
        .merge(page::router())
        .merge(read::router())
        .merge(actions::router())
        .merge(events::router())
        .merge(key::router())
}
