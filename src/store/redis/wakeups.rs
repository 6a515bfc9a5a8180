//! The wake-up listener: other instances' wake-up messages turned into local wake-ups (see the
//! module documentation of `store::redis`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::MAX_RESUBSCRIBE_DELAY;
use crate::store::WorkWatch;

/// The task that turns other instances' wake-up messages into local wake-ups.
pub(super) struct Listener {
    pub(super) client: redis::Client,
    /// `{<prefix>:`, the start of every channel name.
    pub(super) tag: String,
    pub(super) instance: String,
    pub(super) watches: Arc<Mutex<HashMap<String, WorkWatch>>>,
}

impl Listener {
    pub(super) async fn run(self) {
        use futures_util::StreamExt;
        let mut delay = Duration::from_millis(100);
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub
                        .psubscribe(format!("{}*}}:wake", self.tag))
                        .await
                        .is_ok()
                    {
                        delay = Duration::from_millis(100);
                        // Messages may have been lost while no one listened.
                        self.wake_all();
                        let mut messages = pubsub.on_message();
                        while let Some(message) = messages.next().await {
                            if message.get_payload_bytes() != self.instance.as_bytes() {
                                self.wake(message.get_channel_name());
                            }
                        }
                    }
                }
                Err(err) => tracing::debug!(error = %err, "redis wake-up listener cannot connect"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RESUBSCRIBE_DELAY);
        }
    }

    /// Wakes the workers of the queue a channel `{<prefix>:<queue>}:wake` names.
    fn wake(&self, channel: &str) {
        let Some(queue) = channel
            .strip_prefix(self.tag.as_str())
            .and_then(|rest| rest.strip_suffix("}:wake"))
        else {
            return;
        };
        if let Some(watch) = self.watches.lock().get(queue) {
            watch.wake();
        }
    }

    fn wake_all(&self) {
        for watch in self.watches.lock().values() {
            watch.wake();
        }
    }
}
