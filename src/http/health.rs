//! Liveness and readiness probes: `GET /healthz` answers while the process serves HTTP at all;
//! `GET /readyz` answers 200 only between start-up finishing and shutdown beginning, so a load
//! balancer stops routing to an instance that is draining.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::{ApiError, AppState};

/// The probe routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[derive(Debug, Serialize)]
struct ProbeStatus {
    status: &'static str,
}

async fn healthz() -> Json<ProbeStatus> {
    Json(ProbeStatus { status: "ok" })
}

async fn readyz(State(state): State<AppState>) -> Result<Json<ProbeStatus>, ApiError> {
    if state.is_shutting_down() {
        return Err(ApiError::Unavailable("shutting down".to_owned()));
    }
    if !state.is_ready() {
        return Err(ApiError::Unavailable("not ready".to_owned()));
    }
    Ok(Json(ProbeStatus { status: "ready" }))
}
