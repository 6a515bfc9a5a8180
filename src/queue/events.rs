//! The event hub: every job transition is published here for WebSockets and the admin page.
//!
//! [`EventHub`] is a trait so a Redis pub/sub implementation can fan events out across instances;
//! [`LocalHub`] is the in-process broadcast used by a single instance. Publishing never blocks:
//! a subscriber that falls behind loses the oldest events and is told how many (broadcast lag).

use std::sync::Arc;

use tokio::sync::broadcast;

/// What happened to a job or a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Added,
    Waiting,
    Active,
    Progress,
    Completed,
    Failed,
    Stalled,
    Delayed,
    Removed,
    Paused,
    Resumed,
    Drained,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "added",
            EventKind::Waiting => "waiting",
            EventKind::Active => "active",
            EventKind::Progress => "progress",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Stalled => "stalled",
            EventKind::Delayed => "delayed",
            EventKind::Removed => "removed",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::Drained => "drained",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueEvent {
    pub queue: Arc<str>,
    pub kind: EventKind,
    /// The job concerned; `None` for queue-wide events (paused, resumed, drained).
    pub job_id: Option<Arc<str>>,
    /// Kind-specific detail as JSON text: progress value, failed reason, return value.
    pub detail: Option<String>,
}

pub trait EventHub: Send + Sync + 'static {
    fn publish(&self, event: QueueEvent);
    fn subscribe(&self) -> broadcast::Receiver<QueueEvent>;
}

/// In-process hub over a tokio broadcast channel.
pub struct LocalHub {
    sender: broadcast::Sender<QueueEvent>,
}

impl LocalHub {
    pub fn new(capacity: usize) -> LocalHub {
        let (sender, _) = broadcast::channel(capacity.max(1));
        LocalHub { sender }
    }
}

impl Default for LocalHub {
    fn default() -> Self {
        LocalHub::new(8192)
    }
}

impl EventHub for LocalHub {
    fn publish(&self, event: QueueEvent) {
        // No subscriber is not an error: events are a view, the store is the truth.
        let _ = self.sender.send(event);
    }

    fn subscribe(&self) -> broadcast::Receiver<QueueEvent> {
        self.sender.subscribe()
    }
}
