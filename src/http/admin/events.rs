//! `GET /admin/api/events`: the dashboard's server-sent stream of queue activity.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::key::Admin;
use super::read::{preview, summarize_all, QueueSummary};
use crate::http::AppState;
use crate::queue::QueueEvent;

/// The event stream.
pub(super) fn router() -> Router<AppState> {
    Router::new().route("/admin/api/events", get(events))
}

/// Longest detail text an event carries (the page fetches the job for more).
const EVENT_DETAIL_CHARS: usize = 200;
/// Events sent per batch of the stream; the rest are counted.
const EVENTS_PER_BATCH: usize = 100;
/// How long the stream gathers events before it sends a batch: bounds its rate under load.
const BATCH_WINDOW: Duration = Duration::from_millis(300);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventBody {
    queue: String,
    kind: &'static str,
    job_id: Option<String>,
    detail: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    queues: Vec<QueueSummary>,
    events: Vec<EventBody>,
    /// Events that happened but are not listed (over the batch size, or lost by a lagging
    /// subscription); the page refreshes what it shows when this is not zero.
    unlisted: u64,
}

struct StreamState {
    state: AppState,
    events: broadcast::Receiver<QueueEvent>,
    started: bool,
}

/// `GET /admin/api/events`: server-sent `update` events. The first one comes at once with every
/// queue's counts; after that one per batch of queue events (gathered for up to 300 ms, so the
/// rate stays bounded under load), with fresh counts and the events themselves. The stream ends
/// when the server begins to shut down.
async fn events(
    _admin: Admin,
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = state.queues().hub().subscribe();
    let stream = futures_util::stream::unfold(
        StreamState {
            state,
            events,
            started: false,
        },
        next_update,
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn next_update(mut stream: StreamState) -> Option<(Result<Event, Infallible>, StreamState)> {
    let mut listed = Vec::new();
    let mut unlisted = 0u64;
    if stream.started {
        let first = tokio::select! {
            () = stream.state.shutdown_started() => return None,
            first = receive(&mut stream.events, &mut unlisted) => first?,
        };
        listed.extend(first);
        let deadline = Instant::now() + BATCH_WINDOW;
        loop {
            tokio::select! {
                () = stream.state.shutdown_started() => return None,
                () = tokio::time::sleep_until(deadline) => break,
                next = receive(&mut stream.events, &mut unlisted) => match next? {
                    Some(event) if listed.len() < EVENTS_PER_BATCH => listed.push(event),
                    Some(_) => unlisted += 1,
                    None => {}
                },
            }
        }
    }
    stream.started = true;
    let queues = match summarize_all(&stream.state).await {
        Ok(queues) => queues,
        Err(err) => {
            tracing::warn!(error = %err, "event stream cannot read the queues");
            Vec::new()
        }
    };
    let update = UpdateBody {
        queues,
        events: listed
            .into_iter()
            .map(|event| EventBody {
                queue: event.queue.to_string(),
                kind: event.kind.as_str(),
                job_id: event.job_id.map(|id| id.to_string()),
                detail: event
                    .detail
                    .map(|detail| preview(&detail, EVENT_DETAIL_CHARS)),
            })
            .collect(),
        unlisted,
    };
    let event = match Event::default().event("update").json_data(&update) {
        Ok(event) => event,
        Err(err) => {
            tracing::error!(error = %err, "cannot encode an admin event");
            Event::default().comment("unencodable update skipped")
        }
    };
    Some((Ok(event), stream))
}

/// The next hub event: `Some(None)` after a lag (counted in `unlisted`), `None` once the hub is
/// gone.
async fn receive(
    events: &mut broadcast::Receiver<QueueEvent>,
    unlisted: &mut u64,
) -> Option<Option<QueueEvent>> {
    match events.recv().await {
        Ok(event) => Some(Some(event)),
        Err(broadcast::error::RecvError::Lagged(missed)) => {
            *unlisted += missed;
            Some(None)
        }
        Err(broadcast::error::RecvError::Closed) => None,
    }
}
