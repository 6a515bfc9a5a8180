//! Proving an e-mail address, and choosing whether to get notification e-mails.
//!
//! Courier e-mails an address only once its owner has opened a link sent to it: otherwise
//! anyone could sign up with someone else's address and have Courier send that person messages
//! of their choosing. Sign-up sends the link (through the `email` queue, like every e-mail);
//! the user may ask for another one a minute later. Every notification e-mail carries an
//! unsubscribe link (and the one-click `List-Unsubscribe` headers), and the setting can be
//! changed from the profile page.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::email::Email;
use super::error::ChatError;
use super::mail_links::MailLinks;
use super::{names, Chat};
use crate::jobs::EMAIL_QUEUE;
use crate::queue::model::{JobOptions, KeepJobs};
use crate::queue::{JobContext, JobFailure, JobResult};
use crate::store::accounts::{AccountState, OneTimeToken, TokenPurpose};
use crate::store::chat::{AccountChange, UserRecord};

/// The `email` queue's job for account e-mails (address verification, password reset).
pub const SEND_ACCOUNT_EMAIL: &str = "send-account-email";
/// How long a verification link works.
pub const VERIFY_LINK_TTL: Duration = Duration::from_secs(48 * 3600);
/// Least time between two verification e-mails to one user.
pub const RESEND_INTERVAL: Duration = Duration::from_secs(60);
/// Most users whose last resend time is remembered.
const RESEND_TABLE_LIMIT: usize = 100_000;

/// Which account e-mail a job sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountEmailKind {
    VerifyEmail,
    ResetPassword,
}

/// The job's data: who, which e-mail, and the id its link's secret derives from (never the
/// secret itself: see `mail_links`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountEmailJob {
    pub kind: AccountEmailKind,
    pub user_id: String,
    pub token_id: String,
}

/// When each user last asked for a verification e-mail.
#[derive(Default)]
pub struct ResendTimes {
    last: parking_lot::Mutex<HashMap<String, Instant>>,
}

impl ResendTimes {
    /// `Err(seconds to wait)` if `user` asked less than [`RESEND_INTERVAL`] ago; otherwise
    /// records now.
    fn claim(&self, user: &str) -> Result<(), u64> {
        let mut last = self.last.lock();
        if let Some(at) = last.get(user) {
            let elapsed = at.elapsed();
            if elapsed < RESEND_INTERVAL {
                return Err(super::lockout::whole_seconds(RESEND_INTERVAL - elapsed));
            }
        }
        if last.len() >= RESEND_TABLE_LIMIT {
            last.retain(|_, at| at.elapsed() < RESEND_INTERVAL);
        }
        last.insert(user.to_owned(), Instant::now());
        Ok(())
    }

    /// [`ResendTimes::claim`] for password-reset e-mails, counted apart from verification ones.
    pub(super) fn claim_reset(&self, user: &str) -> Result<(), u64> {
        self.claim(&format!("reset\0{user}"))
    }
}

impl Chat {
    /// What `user_id` has verified and chosen.
    pub async fn account_state(&self, user_id: &str) -> Result<AccountState, ChatError> {
        Ok(self.store.account_state(user_id).await?)
    }

    /// Queues an e-mail with a link that proves `user`'s address. Called at sign-up; counts
    /// as the first of the user's requests for one.
    pub async fn send_verification(&self, user: &UserRecord) -> Result<(), ChatError> {
        // A fresh account has never asked: this only starts the interval.
        let _ = self.resend_times.claim(&user.id);
        self.queue_verification(user).await
    }

    async fn queue_verification(&self, user: &UserRecord) -> Result<(), ChatError> {
        let expires_at = self.clock.now() + VERIFY_LINK_TTL.as_millis() as u64;
        self.queue_account_email(user, AccountEmailKind::VerifyEmail, expires_at)
            .await
    }

    /// Another verification e-mail, at most one a minute; an address already verified gets
    /// none.
    pub async fn resend_verification(&self, user: &UserRecord) -> Result<(), ChatError> {
        if self
            .account_state(&user.id)
            .await?
            .has_verified(&user.email)
        {
            return Err(ChatError::Invalid(
                "This e-mail address is already verified".to_owned(),
            ));
        }
        self.resend_times
            .claim(&user.id)
            .map_err(|retry_after_secs| ChatError::TooSoon { retry_after_secs })?;
        self.queue_verification(user).await
    }

    /// Stores a single-use token for `user` and queues the e-mail that carries its link.
    pub(super) async fn queue_account_email(
        &self,
        user: &UserRecord,
        kind: AccountEmailKind,
        expires_at: u64,
    ) -> Result<(), ChatError> {
        let token_id = MailLinks::new_token_id();
        let purpose = match kind {
            AccountEmailKind::VerifyEmail => TokenPurpose::VerifyEmail,
            AccountEmailKind::ResetPassword => TokenPurpose::ResetPassword,
        };
        let token = OneTimeToken {
            purpose,
            user_id: user.id.clone(),
            email: user.email.clone(),
            expires_at,
        };
        let hash = MailLinks::hash(&self.links.secret(&token_id));
        self.store.put_token(&hash, token, self.clock.now()).await?;
        let data = AccountEmailJob {
            kind,
            user_id: user.id.clone(),
            token_id: token_id.clone(),
        };
        let data =
            serde_json::to_value(&data).map_err(|err| ChatError::Internal(err.to_string()))?;
        let opts = JobOptions {
            job_id: Some(format!("a-{token_id}")),
            remove_on_complete: Some(KeepJobs::NONE),
            ..super::messages::retrying(5, 2_000)
        };
        self.queues
            .queue(EMAIL_QUEUE)?
            .add(SEND_ACCOUNT_EMAIL, &data, opts)
            .await?;
        Ok(())
    }

    /// Confirms the address a verification link was sent to; returns the user. The link works
    /// once, before it expires, and only while the account still has that address.
    pub async fn verify_email(&self, secret: &str) -> Result<UserRecord, ChatError> {
        let invalid = || ChatError::Invalid("This link is invalid or has expired".to_owned());
        let secret = secret.trim();
        if secret.is_empty() || secret.len() > 128 {
            return Err(invalid());
        }
        let now = self.clock.now();
        let token = self
            .store
            .take_token(&MailLinks::hash(secret), TokenPurpose::VerifyEmail, now)
            .await?
            .ok_or_else(invalid)?;
        let user = self
            .store
            .user_by_id(&token.user_id)
            .await?
            .filter(|user| user.email == token.email)
            .ok_or_else(invalid)?;
        self.store
            .update_account_state(
                &user.id,
                AccountChange::EmailVerified(user.email.clone(), now),
            )
            .await?;
        tracing::info!(user = %user.id, "e-mail address verified");
        Ok(user)
    }

    /// Turns notification e-mails on or off for `user_id`.
    pub async fn set_email_notifications(
        &self,
        user_id: &str,
        wanted: bool,
    ) -> Result<AccountState, ChatError> {
        Ok(self
            .store
            .update_account_state(user_id, AccountChange::EmailNotifications(wanted))
            .await?)
    }

    /// Turns notification e-mails off for the user an unsubscribe link was made for.
    pub async fn unsubscribe(&self, token: &str) -> Result<(), ChatError> {
        let user_id = self
            .links
            .check_unsubscribe(token)
            .ok_or_else(|| ChatError::Invalid("This unsubscribe link is invalid".to_owned()))?;
        if self.store.user_by_id(&user_id).await?.is_none() {
            return Err(ChatError::Invalid(
                "This unsubscribe link is invalid".to_owned(),
            ));
        }
        self.set_email_notifications(&user_id, false).await?;
        tracing::info!(user = %user_id, "notification e-mails turned off by an unsubscribe link");
        Ok(())
    }

    /// Whether `user` gets notification e-mails now: a verified address, and not turned off.
    pub(super) async fn wants_email(
        &self,
        user: &UserRecord,
    ) -> Result<Option<&'static str>, ChatError> {
        let state = self.account_state(&user.id).await?;
        if !state.has_verified(&user.email) {
            return Ok(Some("e-mail address not verified"));
        }
        if !state.email_notifications {
            return Ok(Some("notification e-mails turned off"));
        }
        Ok(None)
    }

    /// The `send-account-email` job: writes the e-mail with its link.
    pub(super) async fn send_account_email(self: Arc<Self>, job: JobContext) -> JobResult {
        let data: AccountEmailJob = job.data_as()?;
        let Some(user) = self
            .store
            .user_by_id(&data.user_id)
            .await
            .map_err(JobFailure::from)?
        else {
            return Ok(json!({ "sent": false, "reason": "the account no longer exists" }));
        };
        let name = names::clean(&user.full_name);
        let (subject, body) = match data.kind {
            AccountEmailKind::VerifyEmail => (
                "Confirm your e-mail address for Courier".to_owned(),
                format!(
                    "Hello {name},\n\nplease confirm that this is your e-mail address by opening \
                     this link within 48 hours:\n\n{}\n\nUntil you do, Courier sends you no \
                     e-mail about new messages. If you did not sign up for Courier, ignore this \
                     e-mail: nothing will be sent to you again.\n",
                    self.links.verify_email_url(&data.token_id)
                ),
            ),
            AccountEmailKind::ResetPassword => (
                "Reset your Courier password".to_owned(),
                format!(
                    "Hello {name},\n\nsomeone (hopefully you) asked to reset the password of \
                     your Courier account. To choose a new one, open this link within an \
                     hour:\n\n{}\n\nIf you did not ask for this, ignore this e-mail: your \
                     password stays as it is.\n",
                    self.links.reset_password_url(&data.token_id)
                ),
            ),
        };
        self.mailer
            .send(Email {
                to_name: name,
                to_address: user.email.clone(),
                subject,
                body,
                unsubscribe: None,
            })
            .await
            .map_err(JobFailure::from)?;
        Ok(json!({ "sent": true }))
    }
}
