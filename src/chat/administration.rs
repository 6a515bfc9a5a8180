//! What the admin does to accounts: who may sign up (`SIGNUP_MODE`, invitation links), the user
//! list, disabling an account, ending its sessions and deleting it with its messages.
//!
//! An invitation is a single-use token like a reset link (only its SHA-256 is stored); its link
//! opens the sign-up page with the secret in the fragment. Disabling ends every session and
//! refuses logins until the account is enabled again; deleting removes the user, both sides of
//! their conversations, and everything kept beside the account, in one atomic write.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::accounts::normalise_email;
use super::error::ChatError;
use super::mail_links::MailLinks;
use super::Chat;
use crate::queue::model::Millis;
use crate::store::accounts::{OneTimeToken, TokenPurpose};
use crate::store::chat::UserRecord;

/// How long an invitation works unless the admin says otherwise.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest an invitation may work.
pub const MAX_INVITE_DAYS: u64 = 90;
/// Most users one page of the admin list holds.
pub const MAX_USERS_PAGE: usize = 100;

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SignupMode {
    /// Anyone.
    #[default]
    Open,
    /// Only someone with an invitation link from the admin.
    Invite,
    /// Nobody.
    Closed,
}

/// A new invitation: the link to hand over, and until when it works.
#[derive(Debug, Clone)]
pub struct Invitation {
    pub url: String,
    pub expires_at: Millis,
    pub email: Option<String>,
}

/// One account as the admin sees it.
#[derive(Debug, Clone)]
pub struct AccountSummary {
    pub user: UserRecord,
    pub disabled_at: Option<Millis>,
    pub email_verified: bool,
    pub sessions: usize,
    pub online: bool,
}

impl Chat {
    pub fn signup_mode(&self) -> SignupMode {
        self.signup_mode
    }

    /// An invitation link, for anyone or only for `email`, working for `days` (default 7).
    pub async fn create_invitation(
        &self,
        email: Option<String>,
        days: Option<u64>,
    ) -> Result<Invitation, ChatError> {
        if self.signup_mode == SignupMode::Closed {
            return Err(ChatError::Invalid(
                "Sign-up is closed (SIGNUP_MODE=closed): an invitation could not be used"
                    .to_owned(),
            ));
        }
        let email = match email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            Some(email) => Some(
                normalise_email(email)
                    .ok_or_else(|| ChatError::Invalid("Invalid email address".to_owned()))?,
            ),
            None => None,
        };
        let ttl = match days {
            Some(days) if (1..=MAX_INVITE_DAYS).contains(&days) => {
                Duration::from_secs(days * 24 * 3600)
            }
            Some(_) => {
                return Err(ChatError::Invalid(format!(
                    "days must be between 1 and {MAX_INVITE_DAYS}"
                )))
            }
            None => DEFAULT_INVITE_TTL,
        };
        let now = self.clock.now();
        let expires_at = now + ttl.as_millis() as u64;
        let token_id = MailLinks::new_token_id();
        let secret = self.links.secret(&token_id);
        let token = OneTimeToken {
            purpose: TokenPurpose::Invite,
            user_id: String::new(),
            email: email.clone().unwrap_or_default(),
            expires_at,
        };
        self.store
            .put_token(&MailLinks::hash(&secret), token, now)
            .await?;
        tracing::info!(for_email = email.is_some(), "invitation created");
        Ok(Invitation {
            url: format!("{}/signup#invite={secret}", self.links.public_url()),
            expires_at,
            email,
        })
    }

    /// Creates an account, if `SIGNUP_MODE` lets this caller: `invite` is the secret of an
    /// invitation link (needed unless sign-up is open, and used up by the sign-up).
    pub async fn signup(
        &self,
        input: super::Signup,
        invite: Option<String>,
    ) -> Result<UserRecord, ChatError> {
        let invite = invite
            .map(|secret| secret.trim().to_owned())
            .filter(|secret| !secret.is_empty() && secret.len() <= 128);
        if self.signup_mode == SignupMode::Closed {
            return Err(ChatError::Refused(
                "Sign-up is closed on this server".to_owned(),
            ));
        }
        if self.signup_mode == SignupMode::Open && invite.is_none() {
            return self.accounts.signup(input, None).await;
        }
        let Some(secret) = invite else {
            return Err(ChatError::Refused(
                "Sign-up on this server needs an invitation".to_owned(),
            ));
        };
        let hash = MailLinks::hash(&secret);
        self.accounts
            .signup(input, Some((&hash, self.clock.now())))
            .await
    }

    /// Every account (filtered by `query` on name or e-mail, case-insensitive), newest first:
    /// one page of them and how many matched.
    pub async fn list_accounts(
        &self,
        query: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<AccountSummary>, usize), ChatError> {
        let query = query.trim().to_lowercase();
        let mut users: Vec<UserRecord> = self
            .store
            .users()
            .await?
            .into_iter()
            .filter(|user| {
                query.is_empty()
                    || user.full_name.to_lowercase().contains(&query)
                    || user.email.contains(&query)
                    || user.id == query
            })
            .collect();
        users.sort_by_key(|user| std::cmp::Reverse((user.created_at, user.id.clone())));
        let total = users.len();
        let mut page = Vec::new();
        for user in users
            .into_iter()
            .skip(offset)
            .take(limit.clamp(1, MAX_USERS_PAGE))
        {
            let now = self.clock.now();
            let sessions = self
                .store
                .sessions_of(&user.id)
                .await?
                .iter()
                .filter(|(_, session)| session.expires_at > now)
                .count();
            let state = self.store.account_state(&user.id).await?;
            page.push(AccountSummary {
                disabled_at: self.store.disabled_at(&user.id).await?,
                email_verified: state.has_verified(&user.email),
                online: self.delivery.is_online(&user.id),
                sessions,
                user,
            });
        }
        Ok((page, total))
    }

    async fn existing_user(&self, id: &str) -> Result<UserRecord, ChatError> {
        if !super::ids::is_id(id) {
            return Err(ChatError::NotFound("User not found".to_owned()));
        }
        self.store
            .user_by_id(id)
            .await?
            .ok_or_else(|| ChatError::NotFound("User not found".to_owned()))
    }

    /// Disables (or enables again) an account; disabling ends every session at once.
    pub async fn set_account_disabled(&self, id: &str, disabled: bool) -> Result<(), ChatError> {
        let user = self.existing_user(id).await?;
        let at = disabled.then(|| self.clock.now());
        self.store.set_disabled(&user.id, at).await?;
        if disabled {
            let ended = self.end_other_sessions(&user.id, None).await?;
            tracing::warn!(user = %user.id, sessions_ended = ended, "account disabled by the admin");
        } else {
            tracing::warn!(user = %user.id, "account enabled again by the admin");
        }
        Ok(())
    }

    /// Whether an account is disabled.
    pub async fn is_disabled(&self, id: &str) -> Result<bool, ChatError> {
        Ok(self.store.disabled_at(id).await?.is_some())
    }

    /// Ends every session of an account (the admin's "sign out everywhere").
    pub async fn end_account_sessions(&self, id: &str) -> Result<usize, ChatError> {
        let user = self.existing_user(id).await?;
        let ended = self.end_other_sessions(&user.id, None).await?;
        tracing::warn!(user = %user.id, sessions_ended = ended, "sessions ended by the admin");
        Ok(ended)
    }

    /// Deletes an account with its conversations; returns how many messages went with it.
    pub async fn delete_account(&self, id: &str) -> Result<u64, ChatError> {
        let user = self.existing_user(id).await?;
        // The sessions first, so the user's sockets close and nothing new is sent meanwhile.
        self.end_other_sessions(&user.id, None).await?;
        let messages = self
            .store
            .delete_user(&user.id)
            .await?
            .ok_or_else(|| ChatError::NotFound("User not found".to_owned()))?;
        tracing::warn!(user = %user.id, messages, "account deleted by the admin");
        Ok(messages)
    }
}
