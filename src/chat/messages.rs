//! Sending messages through the queue, and the three processors that carry them.
//!
//! `send` validates, assigns the message id and adds a `process-message` job whose `jobId` *is*
//! the message id, so a repeated add is a no-op and a job maps back to its message. The
//! processor saves the message idempotently (keyed by that id), so a retried or re-run job never
//! stores a second copy, then delivers it to both participants and notifies the receiver: at
//! once when online, through a `send-notification` job (which may e-mail) when offline.
//!
//! Send order: a message gets its `seq` when it is saved, and the message queue runs many jobs
//! side by side. Each job's group is its conversation, and the queue runs one job per group at a
//! time (`group_concurrency` 1, see `jobs.rs`) in the order they were added (FIFO at equal
//! priority), so a conversation's messages are saved, and delivered, in send order — after a
//! restart too, since the order lives in the stored jobs. Only a failed attempt (retried later)
//! lets the next message of its conversation go first.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::delivery::{ChatEvent, MessageView};
use super::email::Email;
use super::error::ChatError;
use super::images;
use super::lifecycle::{check_attachment, AttachmentInput};
use super::{ids, names, Chat};
use crate::jobs::{EMAIL_QUEUE, MESSAGE_QUEUE, NOTIFICATION_QUEUE};
use crate::queue::model::{Backoff, BackoffKind, JobOptions, JobState};
use crate::queue::{JobContext, JobFailure, JobResult};
use crate::store::chat::{
    direct_conversation_key, Attachment, MessageRecord, NewMessage, UserRecord,
};

pub const MAX_TEXT_CHARS: usize = 10_000;
pub const PROCESS_MESSAGE: &str = "process-message";
pub const SEND_NOTIFICATION: &str = "send-notification";
pub const SEND_EMAIL: &str = "send-email";
/// At most one e-mail per conversation in this window.
pub const EMAIL_WINDOW_MS: u64 = 15 * 60 * 1000;

/// An image as it arrived: a data URL (JSON) or raw bytes (multipart).
pub enum ImageInput {
    DataUrl(String),
    Bytes(Vec<u8>),
}

pub struct SendInput {
    pub text: Option<String>,
    pub image: Option<ImageInput>,
    /// The id of the message this one answers (`replyTo`): one of the same conversation.
    pub reply_to: Option<String>,
    /// `fileUrl, fileName, fileSize, fileType, mimeType`.
    pub attachment: AttachmentInput,
    /// A key the client chose for this message (`clientMessageId`): sending again with the same
    /// key (a retry after a lost response) is the same message, never a second one.
    pub client_key: Option<String>,
}

/// Longest accepted `clientMessageId`.
pub const MAX_CLIENT_KEY_LEN: usize = 64;

/// The message id of a client-keyed send: derived from the sender and the key, so only the same
/// sender's retries map onto it, and shaped like every other id.
fn keyed_message_id(sender_id: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("courier-message:{sender_id}:{key}").as_bytes());
    hex::encode(&digest[..12])
}

/// An accepted send.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: String,
    pub job_id: String,
}

/// The `process-message` job's data (stored as JSON in the job).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageJob {
    pub message_id: String,
    pub sender_id: String,
    pub receiver_id: String,
    pub text: String,
    /// Content address of the staged image, if any.
    #[serde(default)]
    pub image_hash: Option<String>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub attachment: Option<Attachment>,
    pub created_at: u64,
    /// The group of a group message (`receiver_id` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
}

/// Where a send goes.
#[derive(Debug, Clone, Copy)]
pub enum SendTarget<'a> {
    /// A direct message to this user.
    User(&'a str),
    /// A message to this group (the sender's membership already checked).
    Group(&'a str),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationJob {
    message_id: String,
    sender_id: String,
    receiver_id: String,
    preview: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmailJob {
    message_id: String,
    sender_name: String,
    receiver_id: String,
    preview: String,
}

fn preview_of(message: &MessageRecord) -> String {
    let preview = preview(&message.text, !message.image.is_empty());
    if preview.is_empty() && message.attachment.is_some() {
        return "sent you a file".to_owned();
    }
    preview
}

fn preview(text: &str, has_image: bool) -> String {
    let mut preview: String = text.chars().take(140).collect();
    if preview.len() < text.len() {
        preview.push('…');
    }
    if preview.is_empty() && has_image {
        preview = "sent you an image".to_owned();
    }
    preview
}

/// The job group of a conversation: its two users, either way round.
fn conversation_key(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}:{b}")
    } else {
        format!("{b}:{a}")
    }
}

pub(super) fn retrying(attempts: u32, delay_ms: u64) -> JobOptions {
    JobOptions {
        attempts,
        backoff: Some(Backoff {
            kind: BackoffKind::Exponential,
            delay: delay_ms,
            jitter: 0.2,
        }),
        ..JobOptions::default()
    }
}

fn failure(err: ChatError) -> JobFailure {
    JobFailure::from(err)
}

impl Chat {
    /// Validates a send and queues it; returns once the job is durable.
    pub async fn send(
        &self,
        sender: &UserRecord,
        receiver_id: &str,
        input: SendInput,
    ) -> Result<Sent, ChatError> {
        if !ids::is_id(receiver_id) || self.store.user_by_id(receiver_id).await?.is_none() {
            return Err(ChatError::NotFound("Receiver not found".to_owned()));
        }
        if let Some(refusal) = self.block_between(&sender.id, receiver_id).await? {
            return Err(refusal);
        }
        self.queue_send(sender, SendTarget::User(receiver_id), input)
            .await
    }

    /// Validates a send's content and queues it to `target`; returns once the job is durable.
    pub(super) async fn queue_send(
        &self,
        sender: &UserRecord,
        target: SendTarget<'_>,
        input: SendInput,
    ) -> Result<Sent, ChatError> {
        if let Some(key) = &input.client_key {
            let valid = (1..=MAX_CLIENT_KEY_LEN).contains(&key.len())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(ChatError::Invalid(format!(
                    "clientMessageId must be 1 to {MAX_CLIENT_KEY_LEN} of A-Z, a-z, 0-9, - and _"
                )));
            }
        }
        let text = input.text.unwrap_or_default();
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(ChatError::Invalid(format!(
                "Message text must be at most {MAX_TEXT_CHARS} characters"
            )));
        }
        let image = match input.image {
            None => None,
            Some(ImageInput::DataUrl(url)) if url.is_empty() => None,
            Some(ImageInput::DataUrl(url)) => Some(images::decode_data_url(&url)?),
            Some(ImageInput::Bytes(bytes)) => {
                let kind = images::check_image(&bytes)?;
                Some((bytes, kind))
            }
        };
        let attachment = check_attachment(input.attachment)?;
        if text.trim().is_empty() && image.is_none() && attachment.is_none() {
            return Err(ChatError::Invalid(
                "Message must have text, an image or a file".to_owned(),
            ));
        }
        let reply_to = input.reply_to.filter(|id| !id.is_empty());
        if let Some(reply_to) = &reply_to {
            let conversation = match target {
                SendTarget::User(receiver) => direct_conversation_key(&sender.id, receiver),
                SendTarget::Group(group) => group.to_owned(),
            };
            self.check_reply(&sender.id, &conversation, reply_to)
                .await?;
        }
        // Stage the image before the job exists: the job then only carries its address.
        let image_hash = match image {
            Some((bytes, _kind)) => Some(self.uploads.put(bytes).await?),
            None => None,
        };
        let message_id = match &input.client_key {
            Some(key) => keyed_message_id(&sender.id, key),
            None => ids::new_id(),
        };
        let (receiver_id, group_id, job_group) = match target {
            SendTarget::User(receiver) => (
                receiver.to_owned(),
                None,
                conversation_key(&sender.id, receiver),
            ),
            // A group's messages run in send order like a conversation's: the group id is
            // their job group (it never contains ':', so it is never a direct key).
            SendTarget::Group(group) => (String::new(), Some(group.to_owned()), group.to_owned()),
        };
        let job = MessageJob {
            message_id: message_id.clone(),
            sender_id: sender.id.clone(),
            receiver_id,
            text,
            image_hash,
            reply_to,
            attachment,
            created_at: self.clock.now(),
            group_id,
        };
        let data =
            serde_json::to_value(&job).map_err(|err| ChatError::Internal(err.to_string()))?;
        let opts = JobOptions {
            priority: Some(1),
            job_id: Some(message_id.clone()),
            group: Some(job_group),
            ..retrying(3, 1_000)
        };
        self.remember_sender(&message_id, &sender.id);
        let files = super::staging::files_of(&job);
        self.staging.hold(&files);
        // A delete may have removed the bytes between their store and the hold (they are
        // content-addressed: another message may have shown them): check, now that no removal
        // can happen.
        if let Err(err) = self.check_staged(&job).await {
            self.staging.release(&files);
            return Err(err);
        }
        let queue = self.queues.queue(MESSAGE_QUEUE)?;
        let added = match queue.add(PROCESS_MESSAGE, &data, opts).await {
            Ok(added) => added,
            Err(err) => {
                self.senders.lock().remove(&message_id);
                self.staging.release(&files);
                return Err(err.into());
            }
        };
        if added.existed {
            // A repeat of a send already queued: its first copy holds the files.
            self.staging.release(&files);
        }
        if added.existed && matches!(added.state, JobState::Completed | JobState::Failed) {
            // A repeated send of a message whose job finished: no status will follow.
            self.senders.lock().remove(&message_id);
        }
        Ok(Sent {
            message_id,
            job_id: added.id,
        })
    }

    /// Whether the image a send stored is still there (checked once it is held). A `fileUrl`
    /// is not checked: the MERN client may name a file its upload answered moments ago.
    async fn check_staged(&self, job: &MessageJob) -> Result<(), ChatError> {
        if let Some(hash) = &job.image_hash {
            if !tokio::fs::try_exists(self.uploads.path_of(hash))
                .await
                .unwrap_or(false)
            {
                let gone = std::io::Error::new(std::io::ErrorKind::NotFound, "image removed");
                return Err(ChatError::Store(crate::store::StoreError::unavailable(
                    "the image was removed while it was being sent; send it again",
                    gone,
                )));
            }
        }
        Ok(())
    }

    /// Learns the senders of the messages still queued from before a restart, for their
    /// `messageStatus` frames; returns how many. Their send order needs nothing: it is in the
    /// stored jobs (see the module docs). Call before the queues start.
    pub async fn restore_backlog(&self) -> Result<usize, ChatError> {
        const PAGE: u64 = 500;
        let queue = self.queues.queue(MESSAGE_QUEUE)?;
        let mut placed = 0;
        // Active ones too: a crash leaves them active until the first lease expiry.
        for state in [JobState::Active, JobState::Waiting] {
            let total = queue.list(state, 0, 0).await?.total;
            let mut start = 0;
            while start < total {
                let page = queue.list(state, start, PAGE).await?;
                if page.jobs.is_empty() {
                    break;
                }
                start += page.jobs.len() as u64;
                for job in &page.jobs {
                    if job.spec.name != PROCESS_MESSAGE {
                        continue;
                    }
                    let Ok(data) = serde_json::from_str::<MessageJob>(&job.spec.data) else {
                        continue;
                    };
                    self.remember_sender(&data.message_id, &data.sender_id);
                    self.staging.hold(&super::staging::files_of(&data));
                    placed += 1;
                }
            }
        }
        Ok(placed)
    }

    /// Messages sent and not yet taken for processing.
    pub async fn backlog(&self) -> Result<u64, ChatError> {
        let counts = self.queues.queue(MESSAGE_QUEUE)?.counts().await?;
        Ok(counts.waiting)
    }

    pub(super) async fn process_message(self: Arc<Self>, job: JobContext) -> JobResult {
        let data: MessageJob = job.data_as()?;
        let files = super::staging::files_of(&data);
        let chat = Arc::clone(&self);
        let result = match data.group_id.clone() {
            Some(group_id) => self.process_group_message(job, data, group_id).await,
            None => self.process_direct_message(job, data).await,
        };
        // Done (saved, or not to be saved): the message, if any, now holds its files. A failed
        // attempt keeps holding them for the retry.
        if result.is_ok() {
            chat.staging.release(&files);
        }
        result
    }

    async fn process_direct_message(
        self: Arc<Self>,
        job: JobContext,
        data: MessageJob,
    ) -> JobResult {
        // Progress only around the step that can take a while (an upload to Cloudinary): each
        // report is an event every subscriber wakes for, and a text message is done in about a
        // millisecond.
        let image = match &data.image_hash {
            Some(hash) => {
                job.progress(json!(10)).await?;
                let url = self
                    .host
                    .publish(&self.uploads, hash)
                    .await
                    .map_err(failure)?;
                job.progress(json!(50)).await?;
                url
            }
            None => String::new(),
        };
        // An account deleted while its message waited: the message goes with it.
        for user in [&data.sender_id, &data.receiver_id] {
            if self
                .store
                .user_by_id(user)
                .await
                .map_err(JobFailure::from)?
                .is_none()
            {
                return Ok(json!({ "saved": false, "reason": "the account was deleted" }));
            }
        }
        let saved = self
            .store
            .save_message(NewMessage {
                id: data.message_id.clone(),
                sender_id: data.sender_id.clone(),
                receiver_id: data.receiver_id.clone(),
                text: data.text.clone(),
                image,
                created_at: data.created_at,
                reply_to: data.reply_to.clone(),
                attachment: data.attachment.clone(),
                ..NewMessage::default()
            })
            .await;
        let (message, inserted) = match saved {
            Ok(saved) => saved,
            Err(crate::store::StoreError::Deleted(_)) => {
                return Ok(json!({ "saved": false, "reason": "the account was deleted" }));
            }
            Err(err) => return Err(JobFailure::from(err)),
        };
        if !inserted {
            job.log(format!(
                "message {} was already saved (seq {}): not saving again",
                message.id, message.seq
            ))
            .await?;
        }
        if self.take_injected_failure() {
            return Err(JobFailure::msg("injected failure after saving (test hook)"));
        }
        // An online receiver is notified with the message itself; only an offline one needs the
        // durable notification job (which may e-mail). Queueing a job for every message cost a
        // quarter of the server's work per message (see BENCHMARKS.md).
        let notify_now = if self.delivery.is_online(&message.receiver_id) {
            let sender_name = self
                .sender_name(&message.sender_id)
                .await
                .map_err(failure)?;
            Some(self.notification_event(
                &sender_name,
                &message.sender_id,
                &message.id,
                preview_of(&message),
            ))
        } else {
            self.queue_notification(&message).await.map_err(failure)?;
            None
        };
        job.progress(json!(100)).await?;
        // Delivery comes last: nothing after it can fail the attempt and cause a second delivery.
        let view = match self.view(message.clone()).await {
            Ok(view) => view,
            // The preview is a nicety: the message goes out without it rather than twice.
            Err(err) => {
                tracing::warn!(message = %message.id, error = %err, "no reply preview");
                MessageView::plain(message.clone())
            }
        };
        let users = [message.sender_id.as_str(), message.receiver_id.as_str()];
        self.delivery
            .deliver(&users, ChatEvent::NewMessage(Box::new(view)));
        if let Some(event) = notify_now {
            self.delivery
                .deliver(&[message.receiver_id.as_str()], event);
        }
        Ok(json!({ "messageId": message.id, "seq": message.seq }))
    }

    /// The `notification` a receiver gets about a new message.
    fn notification_event(
        &self,
        sender_name: &str,
        sender_id: &str,
        message_id: &str,
        preview: String,
    ) -> ChatEvent {
        ChatEvent::Notification {
            kind: "newMessage".to_owned(),
            message: format!("New message from {sender_name}"),
            data: json!({ "messageId": message_id, "senderId": sender_id, "preview": preview }),
            timestamp: self.clock.now(),
        }
    }

    async fn sender_name(&self, sender_id: &str) -> Result<String, ChatError> {
        Ok(self
            .store
            .user_by_id(sender_id)
            .await?
            .map(|user| names::clean(&user.full_name))
            .unwrap_or_else(|| "Someone".to_owned()))
    }

    async fn queue_notification(&self, message: &MessageRecord) -> Result<(), ChatError> {
        let data = NotificationJob {
            message_id: message.id.clone(),
            sender_id: message.sender_id.clone(),
            receiver_id: message.receiver_id.clone(),
            preview: preview_of(message),
        };
        let data =
            serde_json::to_value(&data).map_err(|err| ChatError::Internal(err.to_string()))?;
        let opts = JobOptions {
            job_id: Some(format!("n-{}", message.id)),
            ..retrying(3, 500)
        };
        self.queues
            .queue(NOTIFICATION_QUEUE)?
            .add(SEND_NOTIFICATION, &data, opts)
            .await?;
        Ok(())
    }

    pub(super) async fn send_notification(self: Arc<Self>, job: JobContext) -> JobResult {
        let data: NotificationJob = job.data_as()?;
        let sender_name = self.sender_name(&data.sender_id).await.map_err(failure)?;
        let event = self.notification_event(
            &sender_name,
            &data.sender_id,
            &data.message_id,
            data.preview.clone(),
        );
        // The receiver was offline when the message was processed, but may be back by now.
        let online = self.delivery.is_online(&data.receiver_id);
        self.delivery.deliver(&[data.receiver_id.as_str()], event);
        if online {
            return Ok(json!({ "delivered": "socket" }));
        }
        let Some(receiver) = self
            .store
            .user_by_id(&data.receiver_id)
            .await
            .map_err(JobFailure::from)?
        else {
            return Ok(json!({ "delivered": "none", "reason": "receiver no longer exists" }));
        };
        if let Some(reason) = self.wants_email(&receiver).await.map_err(failure)? {
            return Ok(json!({ "delivered": "none", "reason": reason }));
        }
        let claimed = self
            .store
            .claim_email_slot(
                &data.receiver_id,
                &data.sender_id,
                self.clock.now(),
                EMAIL_WINDOW_MS,
            )
            .await
            .map_err(JobFailure::from)?;
        if !claimed {
            return Ok(
                json!({ "delivered": "none", "reason": "e-mail sent recently for this conversation" }),
            );
        }
        let email = EmailJob {
            message_id: data.message_id.clone(),
            sender_name,
            receiver_id: data.receiver_id.clone(),
            preview: data.preview,
        };
        let email = serde_json::to_value(&email).map_err(JobFailure::from)?;
        let opts = JobOptions {
            job_id: Some(format!("e-{}", data.message_id)),
            ..retrying(5, 2_000)
        };
        self.queues
            .queue(EMAIL_QUEUE)
            .map_err(JobFailure::from)?
            .add(SEND_EMAIL, &email, opts)
            .await
            .map_err(JobFailure::from)?;
        Ok(json!({ "delivered": "email-queued" }))
    }

    pub(super) async fn send_email(self: Arc<Self>, job: JobContext) -> JobResult {
        let data: EmailJob = job.data_as()?;
        let Some(receiver) = self
            .store
            .user_by_id(&data.receiver_id)
            .await
            .map_err(JobFailure::from)?
        else {
            return Ok(json!({ "sent": false, "reason": "receiver no longer exists" }));
        };
        // Checked again: the job may have waited while the setting changed.
        if let Some(reason) = self.wants_email(&receiver).await.map_err(failure)? {
            return Ok(json!({ "sent": false, "reason": reason }));
        }
        let sender_name = names::clean(&data.sender_name);
        // The message as it is now: one deleted (or gone with its sender) while the e-mail
        // waited is not sent, and an edited one shows its current text, never the one taken back.
        let Some(message) = self
            .store
            .message(&data.message_id)
            .await
            .map_err(JobFailure::from)?
        else {
            return Ok(json!({ "sent": false, "reason": "message no longer exists" }));
        };
        if message.is_deleted() {
            return Ok(json!({ "sent": false, "reason": "message deleted" }));
        }
        let preview = preview_of(&message);
        let reply_url = self.links.chat_url(&message.sender_id);
        let body = format!(
            "{sender_name} sent you a message on Courier:\n\n{}\n\nReply on Courier: {reply_url}\n\n\
             --\nYou get this e-mail because you were offline when the message arrived (at most \
             one per conversation every 15 minutes). To stop these e-mails, open {}\n",
            preview,
            self.links.unsubscribe_page(&receiver.id),
        );
        self.mailer
            .send(Email {
                to_name: names::clean(&receiver.full_name),
                to_address: receiver.email.clone(),
                subject: format!("New message from {sender_name}"),
                body,
                unsubscribe: Some(self.links.unsubscribe_one_click(&receiver.id)),
            })
            .await
            .map_err(failure)?;
        Ok(json!({ "sent": true, "to": receiver.email }))
    }

    /// Test hook: the next `count` `process-message` attempts fail right after saving, to prove a
    /// retried job never stores or delivers a message twice.
    pub fn inject_failures_after_save(&self, count: u32) {
        self.injected_failures.store(count, Ordering::SeqCst);
    }

    fn take_injected_failure(&self) -> bool {
        self.injected_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }
}
