//! The chat domain: accounts, conversations, messages, notifications and e-mail.
//!
//! Owns the rules (who may read what, what a valid message is, how a message travels through the
//! queues); persists through [`ChatStore`], queues work through the engine, and pushes real-time
//! events through [`Delivery`]. It imports no web framework and no database crate.

pub mod accounts;
pub mod administration;
pub mod blocks;
pub mod delivery;
pub mod email;
pub mod error;
pub mod files;
pub mod groups;
pub mod ids;
pub mod images;
pub mod last_seen;
pub mod lifecycle;
pub mod lockout;
pub mod mail_links;
pub mod message_search;
pub mod messages;
pub mod names;
pub mod profile;
pub mod sessions;
pub mod staging;
pub mod user_search;
pub mod verification;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::jobs::{EMAIL_QUEUE, MESSAGE_QUEUE, NOTIFICATION_QUEUE};
use crate::queue::clock::Clock;
use crate::queue::model::Job;
use crate::queue::{EventKind, JobContext, QueueManager};
use crate::store::chat::{ChatStore, HistoryPage, MessageRecord, UserRecord};

pub use accounts::{Accounts, Authenticated, HashCost, Signup};
pub use administration::{AccountSummary, Invitation, SignupMode};
pub use delivery::{ChatEvent, Delivery, MessageView, NoDelivery, ReplyPreview};
pub use error::ChatError;
pub use groups::{GroupDetails, GroupMessage, GroupView, MemberInfo, NewGroup};
pub use lifecycle::{AttachmentInput, ReactionList};
pub use messages::{ImageInput, SendInput, Sent};
pub use sessions::{ClientInfo, SessionInfo};

/// Most message senders kept for `messageStatus` frames (see `Chat::remember_sender`): far more
/// than the messages in flight at any sustainable rate.
const MAX_SENDERS: usize = 100_000;

/// Least time between two warnings that status forwarding fell behind.
const LAG_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Default and largest history page.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 200;

/// What the chat domain needs from the configuration.
pub struct ChatConfig {
    pub jwt_secret: String,
    pub hash_cost: HashCost,
    pub login_max_failures: u32,
    pub data_dir: PathBuf,
    pub smtp_url: Option<String>,
    pub email_from: Option<String>,
    pub cloudinary_url: Option<String>,
    /// Where people reach Courier: the address of links in e-mails.
    pub public_url: String,
    /// Largest image canvas accepted, in pixels (`MAX_IMAGE_PIXELS`; at least 1).
    pub max_image_pixels: u64,
    /// Who may create an account.
    pub signup_mode: SignupMode,
    /// How long after sending a message its sender may edit it (`MESSAGE_EDIT_WINDOW_MINUTES`).
    pub edit_window_ms: u64,
}

/// One row of the sidebar.
#[derive(Debug, Clone)]
pub struct SidebarEntry {
    pub user: UserRecord,
    pub online: bool,
    pub unread: u64,
    /// How far this user has read the conversation with the caller.
    pub read_by_other: u64,
    pub last_message: Option<MessageRecord>,
    /// Whether the caller blocks this user.
    pub blocked: bool,
    /// Set when this user's name looks like another listed user's (or the caller's own): a
    /// short tag that tells them apart (see [`names::tag`]).
    pub name_tag: Option<String>,
    /// When this user was last seen (see [`last_seen`]); `None` when unknown or hidden.
    pub last_seen: Option<crate::queue::model::Millis>,
}

pub struct Chat {
    store: Arc<dyn ChatStore>,
    queues: QueueManager,
    accounts: Accounts,
    delivery: Arc<dyn Delivery>,
    uploads: images::Uploads,
    host: images::ImageHost,
    mailer: email::Mailer,
    links: mail_links::MailLinks,
    resend_times: verification::ResendTimes,
    /// Sender of each message job in flight, for `messageStatus` events.
    senders: Mutex<HashMap<String, String>>,
    injected_failures: AtomicU32,
    signup_mode: SignupMode,
    edit_window_ms: u64,
    clock: Clock,
    stop: CancellationToken,
    /// The status forwarder, awaited by [`Chat::stop`].
    tasks: TaskTracker,
    last_seen_memo: last_seen::LastSeenMemo,
    /// Files queued sends refer to before their messages are saved.
    staging: staging::Staging,
}

impl Chat {
    pub fn new(
        config: ChatConfig,
        store: Arc<dyn ChatStore>,
        queues: QueueManager,
        delivery: Arc<dyn Delivery>,
    ) -> Result<Arc<Chat>, ChatError> {
        let limits = images::ImageLimits::new(config.max_image_pixels)?;
        let uploads = images::Uploads::new(&config.data_dir, limits);
        let host = match &config.cloudinary_url {
            Some(url) => images::ImageHost::Cloudinary(
                images::Cloudinary::from_url(url).map_err(ChatError::Invalid)?,
            ),
            None => images::ImageHost::Local,
        };
        let mailer = email::Mailer::new(
            config.smtp_url.as_deref(),
            config.email_from.as_deref(),
            config.data_dir.join("outbox"),
        )
        .map_err(ChatError::Invalid)?;
        let links = mail_links::MailLinks::new(&config.public_url, &config.jwt_secret);
        let accounts = Accounts::new(
            store.clone(),
            &config.jwt_secret,
            config.hash_cost,
            config.login_max_failures,
            uploads.clone(),
            host.clone(),
        )?;
        Ok(Arc::new(Chat {
            store,
            queues,
            accounts,
            delivery,
            uploads,
            host,
            mailer,
            links,
            resend_times: verification::ResendTimes::default(),
            senders: Mutex::new(HashMap::new()),
            injected_failures: AtomicU32::new(0),
            signup_mode: config.signup_mode,
            edit_window_ms: config.edit_window_ms,
            clock: Clock::new(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            last_seen_memo: last_seen::LastSeenMemo::default(),
            staging: staging::Staging::default(),
        }))
    }

    /// Registers the processors of the three queues and starts forwarding job states to
    /// senders. Call before `QueueManager::start`.
    pub fn attach(self: &Arc<Self>) -> Result<(), ChatError> {
        let chat = self.clone();
        self.queues
            .queue(MESSAGE_QUEUE)?
            .process(messages::PROCESS_MESSAGE, move |job: JobContext| {
                chat.clone().process_message(job)
            });
        let chat = self.clone();
        self.queues
            .queue(NOTIFICATION_QUEUE)?
            .process(messages::SEND_NOTIFICATION, move |job: JobContext| {
                chat.clone().send_notification(job)
            });
        let chat = self.clone();
        self.queues
            .queue(EMAIL_QUEUE)?
            .process(messages::SEND_EMAIL, move |job: JobContext| {
                chat.clone().send_email(job)
            });
        let chat = self.clone();
        self.queues
            .queue(EMAIL_QUEUE)?
            .process(verification::SEND_ACCOUNT_EMAIL, move |job: JobContext| {
                chat.clone().send_account_email(job)
            });
        let chat = self.clone();
        self.tasks
            .spawn(async move { chat.forward_statuses().await });
        Ok(())
    }

    /// Notes who sent a message, for its `messageStatus` frames. The entry leaves with the job's
    /// last event; one whose last event was missed (the forwarder fell behind under overload)
    /// would stay, so past [`MAX_SENDERS`] entries the map starts afresh (a status without an
    /// entry finds its sender in the job's data, a little slower).
    fn remember_sender(&self, message_id: &str, sender_id: &str) {
        let mut senders = self.senders.lock();
        if senders.len() >= MAX_SENDERS {
            tracing::warn!(
                entries = senders.len(),
                "message senders kept for statuses piled up; starting afresh"
            );
            *senders = HashMap::new();
        }
        senders.insert(message_id.to_owned(), sender_id.to_owned());
    }

    /// Sent messages still on their way (their job has not completed, failed for good or been
    /// removed), as this process knows them: the senders kept for their `messageStatus` frames.
    pub fn messages_in_flight(&self) -> usize {
        self.senders.lock().len()
    }

    /// Stops background tasks and waits up to `grace` for them to end.
    pub async fn stop(&self, grace: std::time::Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the message status forwarder did not stop in time");
        }
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub fn uploads(&self) -> &images::Uploads {
        &self.uploads
    }

    /// Sends each message job's state changes to its sender as `messageStatus`.
    async fn forward_statuses(&self) {
        let mut events = self.queues.hub().subscribe();
        // Under overload this falls behind many times a second: one warning per interval,
        // with the total, instead of one line each time.
        let mut missed_unreported = 0u64;
        let mut last_warning: Option<std::time::Instant> = None;
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = self.stop.cancelled() => return,
            };
            let event = match event {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    missed_unreported += missed;
                    if last_warning.is_none_or(|at| at.elapsed() >= LAG_WARNING_INTERVAL) {
                        tracing::warn!(
                            missed = missed_unreported,
                            "message status forwarding fell behind; some statuses were not sent"
                        );
                        missed_unreported = 0;
                        last_warning = Some(std::time::Instant::now());
                    }
                    // The jobs whose last event was missed keep their entries; `remember_sender`
                    // bounds how many can pile up.
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if &*event.queue != MESSAGE_QUEUE {
                continue;
            }
            let Some(job_id) = event.job_id.as_deref() else {
                continue;
            };
            let (state, last) = match event.kind {
                EventKind::Waiting => ("waiting", false),
                EventKind::Active => ("active", false),
                EventKind::Delayed => ("delayed", false),
                EventKind::Completed => ("completed", true),
                EventKind::Failed => ("failed", true),
                EventKind::Removed => ("removed", true),
                _ => continue,
            };
            let known = {
                let mut senders = self.senders.lock();
                if last {
                    senders.remove(job_id)
                } else {
                    senders.get(job_id).cloned()
                }
            };
            // After a restart the map is empty: the job's own data names its sender.
            let sender = match known {
                Some(sender) => Some(sender),
                None => self.job_sender(job_id).await,
            };
            if let Some(sender) = sender {
                self.delivery.deliver(
                    &[sender.as_str()],
                    ChatEvent::MessageStatus {
                        message_id: job_id.to_owned(),
                        job_id: job_id.to_owned(),
                        state: state.to_owned(),
                    },
                );
            }
        }
    }

    async fn job_sender(&self, job_id: &str) -> Option<String> {
        let queue = self.queues.queue(MESSAGE_QUEUE).ok()?;
        let job = queue.get(job_id).await.ok()??;
        let data: messages::MessageJob = serde_json::from_str(&job.spec.data).ok()?;
        Some(data.sender_id)
    }

    /// Every other user, with presence, unread count and last message, latest activity first.
    pub async fn sidebar(&self, user: &UserRecord) -> Result<Vec<SidebarEntry>, ChatError> {
        let conversations = self.store.conversations(&user.id).await?;
        let blockers = self.store.blockers_of(&user.id).await?;
        let blocked = self.store.blocked_users(&user.id).await?;
        let mut by_user: HashMap<String, _> = conversations
            .into_iter()
            .map(|summary| (summary.other_id.clone(), summary))
            .collect();
        let mut entries: Vec<SidebarEntry> = self
            .store
            .users()
            .await?
            .into_iter()
            .filter(|other| other.id != user.id)
            .map(|other| {
                let summary = by_user.remove(&other.id);
                SidebarEntry {
                    // Someone who blocks the caller is never shown online to them.
                    online: self.delivery.is_online(&other.id)
                        && blockers.binary_search(&other.id).is_err(),
                    blocked: blocked.binary_search(&other.id).is_ok(),
                    unread: summary.as_ref().map_or(0, |summary| summary.unread),
                    read_by_other: summary.as_ref().map_or(0, |summary| summary.read_by_other),
                    last_message: summary.and_then(|summary| summary.last_message),
                    name_tag: None,
                    last_seen: None,
                    user: other,
                }
            })
            .collect();
        tag_look_alikes(user, &mut entries);
        let presence: Vec<(&str, last_seen::Presence)> = entries
            .iter()
            .map(|entry| {
                let hidden = blockers.binary_search(&entry.user.id).is_ok();
                let presence = last_seen::Presence::of(entry.online, hidden);
                (entry.user.id.as_str(), presence)
            })
            .collect();
        let times = self.last_seen(&presence, crate::time::now_millis()).await?;
        for (entry, time) in entries.iter_mut().zip(times) {
            entry.last_seen = time;
        }
        entries.sort_by(|a, b| {
            let activity = |entry: &SidebarEntry| {
                entry
                    .last_message
                    .as_ref()
                    .map_or(0, |message| message.created_at)
            };
            activity(b).cmp(&activity(a)).then_with(|| {
                a.user
                    .full_name
                    .to_lowercase()
                    .cmp(&b.user.full_name.to_lowercase())
            })
        });
        Ok(entries)
    }

    /// Messages between `user` and `other_id`, oldest first (in change order for
    /// [`HistoryPage::ChangedAfter`]), with their reply previews.
    pub async fn history(
        &self,
        user: &UserRecord,
        other_id: &str,
        page: HistoryPage,
    ) -> Result<Vec<MessageView>, ChatError> {
        if !ids::is_id(other_id) || self.store.user_by_id(other_id).await?.is_none() {
            return Err(ChatError::NotFound("User not found".to_owned()));
        }
        let messages = self.store.history(&user.id, other_id, page).await?;
        self.views(messages).await
    }

    /// The conversations of `user_id` with their last messages (the starting point of a
    /// socket's catch-up after a reconnect).
    pub async fn conversations(
        &self,
        user_id: &str,
    ) -> Result<Vec<crate::store::chat::ConversationSummary>, ChatError> {
        Ok(self.store.conversations(user_id).await?)
    }

    /// A message job, if `viewer` sent it (or `viewer` is `None`: the admin).
    pub async fn job_status(
        &self,
        viewer: Option<&str>,
        job_id: &str,
    ) -> Result<Option<Job>, ChatError> {
        let queue = self.queues.queue(MESSAGE_QUEUE)?;
        let Some(job) = queue.get(job_id).await? else {
            return Ok(None);
        };
        let Some(viewer) = viewer else {
            return Ok(Some(job));
        };
        let data: messages::MessageJob = match serde_json::from_str(&job.spec.data) {
            Ok(data) => data,
            Err(_) => return Ok(None),
        };
        Ok((data.sender_id == viewer).then_some(job))
    }

    /// Relays a typing indicator to the receiver.
    pub async fn typing(&self, sender_id: &str, receiver_id: &str, is_typing: bool) {
        if sender_id == receiver_id || !ids::is_id(receiver_id) {
            return;
        }
        // A block stops typing events both ways; a failed check sends nothing.
        if !matches!(self.block_between(sender_id, receiver_id).await, Ok(None)) {
            return;
        }
        self.delivery.deliver(
            &[receiver_id],
            ChatEvent::Typing {
                sender_id: sender_id.to_owned(),
                is_typing,
            },
        );
    }

    /// Records a read receipt and tells the other participant (and the reader's other tabs).
    pub async fn mark_read(
        &self,
        reader_id: &str,
        other_id: &str,
        seq: u64,
    ) -> Result<u64, ChatError> {
        if !ids::is_id(other_id) {
            return Err(ChatError::NotFound("User not found".to_owned()));
        }
        let up_to_seq = self.store.mark_read(reader_id, other_id, seq).await?;
        self.delivery.deliver(
            &[other_id, reader_id],
            ChatEvent::MessagesRead {
                reader_id: reader_id.to_owned(),
                up_to_seq,
            },
        );
        Ok(up_to_seq)
    }
}

/// Gives every entry whose name looks like another entry's, or like the caller's, a tag, so
/// that two "Alice Martin"s can be told apart (and nobody passes for the caller).
fn tag_look_alikes(caller: &UserRecord, entries: &mut [SidebarEntry]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    *seen.entry(names::likeness(&caller.full_name)).or_default() += 1;
    for entry in entries.iter() {
        *seen
            .entry(names::likeness(&entry.user.full_name))
            .or_default() += 1;
    }
    for entry in entries.iter_mut() {
        if seen
            .get(&names::likeness(&entry.user.full_name))
            .is_some_and(|count| *count > 1)
        {
            entry.name_tag = Some(names::tag(&entry.user.id));
        }
    }
}
