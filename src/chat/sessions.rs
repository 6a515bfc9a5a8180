//! Sign-in sessions: every token names a session record, checked on every request and socket.
//!
//! A token is only as good as its session: logging out deletes the record, so the token stops
//! working at once even though its signature and expiry are still valid; "sign out everywhere
//! else", a password change and a password reset delete the others; sockets opened with a
//! deleted session are closed through [`Delivery::end_sessions`](super::Delivery::end_sessions).
//!
//! Records are cached after the first check. A cached record is re-read from the store when it
//! is older than [`RECHECK`], so a session deleted by another process sharing the store stops
//! working within that time (this process's own deletions take effect at once). The time of
//! last use is written back at most every [`TOUCH_EVERY`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::accounts::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN, SESSION_TTL};
use super::error::ChatError;
use super::mail_links::MailLinks;
use super::verification::AccountEmailKind;
use super::Chat;
use crate::queue::model::Millis;
use crate::store::accounts::{SessionRecord, TokenPurpose};
use crate::store::chat::{AccountChange, ChatStore, UserChange, UserRecord};

/// How long a cached session is trusted before it is read again.
pub const RECHECK: Duration = Duration::from_secs(10);
/// Least time between two writes of a session's last use.
pub const TOUCH_EVERY: Duration = Duration::from_secs(5 * 60);
/// How long a password-reset link works.
pub const RESET_LINK_TTL: Duration = Duration::from_secs(3600);
/// Longest `User-Agent` kept with a session.
const MAX_USER_AGENT: usize = 200;
/// Most sessions cached before the cache starts again.
const CACHE_LIMIT: usize = 100_000;

/// Who is signing in: shown in the session list so a user can spot a session that is not theirs.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub user_agent: String,
    pub address: IpAddr,
}

/// One of a user's sessions, for the session list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub record: SessionRecord,
}

#[derive(Debug, Clone)]
struct Cached {
    user_id: String,
    expires_at: Millis,
    last_seen_written: Millis,
    checked: Instant,
}

/// The sessions this process has checked recently.
pub struct SessionCache {
    store: Arc<dyn ChatStore>,
    cached: Mutex<HashMap<String, Cached>>,
}

/// A new session id: 128 random bits, hex.
fn new_session_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl SessionCache {
    pub fn new(store: Arc<dyn ChatStore>) -> SessionCache {
        SessionCache {
            store,
            cached: Mutex::new(HashMap::new()),
        }
    }

    /// Stores a new session for `user_id`; returns its id and when it expires (epoch seconds).
    pub async fn create(
        &self,
        user_id: &str,
        client: &ClientInfo,
        now: Millis,
    ) -> Result<(String, u64), ChatError> {
        let id = new_session_id();
        let expires_at = now + SESSION_TTL.as_millis() as u64;
        let user_agent: String = client
            .user_agent
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_USER_AGENT)
            .collect();
        let record = SessionRecord {
            user_id: user_id.to_owned(),
            created_at: now,
            expires_at,
            last_seen_at: now,
            user_agent,
            address: client.address.to_string(),
        };
        self.store.put_session(&id, record, now).await?;
        self.remember(&id, user_id, expires_at, now);
        Ok((id, expires_at / 1000))
    }

    fn remember(&self, id: &str, user_id: &str, expires_at: Millis, last_seen_written: Millis) {
        let mut cached = self.cached.lock();
        if cached.len() >= CACHE_LIMIT {
            cached.clear();
        }
        cached.insert(
            id.to_owned(),
            Cached {
                user_id: user_id.to_owned(),
                expires_at,
                last_seen_written,
                checked: Instant::now(),
            },
        );
    }

    /// Whether session `id` exists, belongs to `user_id` and has not expired at `now`.
    pub async fn is_live(&self, id: &str, user_id: &str, now: Millis) -> Result<bool, ChatError> {
        let cached = self
            .cached
            .lock()
            .get(id)
            .filter(|cached| cached.checked.elapsed() < RECHECK)
            .cloned();
        let cached = match cached {
            Some(cached) => cached,
            None => {
                let Some(record) = self.store.session(id).await? else {
                    self.cached.lock().remove(id);
                    return Ok(false);
                };
                self.remember(id, &record.user_id, record.expires_at, record.last_seen_at);
                Cached {
                    user_id: record.user_id,
                    expires_at: record.expires_at,
                    last_seen_written: record.last_seen_at,
                    checked: Instant::now(),
                }
            }
        };
        if cached.user_id != user_id || cached.expires_at <= now {
            return Ok(false);
        }
        if now.saturating_sub(cached.last_seen_written) >= TOUCH_EVERY.as_millis() as u64 {
            self.touch(id, now);
        }
        Ok(true)
    }

    /// Writes the time of last use in the background; a failure only leaves it older.
    fn touch(&self, id: &str, now: Millis) {
        if let Some(cached) = self.cached.lock().get_mut(id) {
            cached.last_seen_written = now;
        }
        let store = Arc::clone(&self.store);
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Err(err) = store.touch_session(&id, now).await {
                tracing::debug!(error = %err, "cannot record a session's last use");
            }
        });
    }

    /// Deletes those of `ids` that are `user_id`'s sessions; returns how many were.
    pub async fn remove(&self, user_id: &str, ids: &[String]) -> Result<usize, ChatError> {
        // Forgotten first: a check that starts now reads the store, which the delete below
        // settles before this returns.
        {
            let mut cached = self.cached.lock();
            for id in ids {
                cached.remove(id);
            }
        }
        let removed = self.store.delete_sessions(user_id, ids).await?;
        let mut cached = self.cached.lock();
        for id in ids {
            cached.remove(id);
        }
        Ok(removed)
    }

    /// `user_id`'s sessions that have not expired, newest first.
    pub async fn list(&self, user_id: &str, now: Millis) -> Result<Vec<SessionInfo>, ChatError> {
        let mut sessions: Vec<SessionInfo> = self
            .store
            .sessions_of(user_id)
            .await?
            .into_iter()
            .filter(|(_, record)| record.expires_at > now)
            .map(|(id, record)| SessionInfo { id, record })
            .collect();
        sessions.sort_by_key(|session| std::cmp::Reverse(session.record.created_at));
        Ok(sessions)
    }
}

impl Chat {
    /// Starts a session for `user`; returns the token that names it.
    pub async fn sign_in(
        &self,
        user: &UserRecord,
        client: &ClientInfo,
    ) -> Result<String, ChatError> {
        self.accounts.start_session(&user.id, client).await
    }

    /// Whether session `session_id` of `user_id` still exists and has not expired.
    pub async fn session_is_live(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<bool, ChatError> {
        self.accounts
            .sessions()
            .is_live(session_id, user_id, self.clock.now())
            .await
    }

    /// The sessions of `user_id`, newest first.
    pub async fn sessions(&self, user_id: &str) -> Result<Vec<SessionInfo>, ChatError> {
        self.accounts
            .sessions()
            .list(user_id, self.clock.now())
            .await
    }

    /// Ends the sessions `ids` of `user_id` and closes their sockets; returns how many ended.
    pub async fn end_sessions(&self, user_id: &str, ids: &[String]) -> Result<usize, ChatError> {
        let ended = self.accounts.sessions().remove(user_id, ids).await?;
        self.delivery.end_sessions(user_id, ids);
        Ok(ended)
    }

    /// Ends every session of `user_id` except `keep` (all of them when `keep` is `None`).
    pub async fn end_other_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<usize, ChatError> {
        let ids: Vec<String> = self
            .store
            .sessions_of(user_id)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| Some(id.as_str()) != keep)
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        self.end_sessions(user_id, &ids).await
    }

    /// Sets a new password after checking the current one; every other session of the user ends.
    /// A wrong current password counts as a failed login from `address`.
    pub async fn change_password(
        &self,
        user: &UserRecord,
        current: Option<String>,
        new: Option<String>,
        session_id: &str,
        address: IpAddr,
    ) -> Result<usize, ChatError> {
        let (Some(current), Some(new)) = (current, new) else {
            return Err(ChatError::Invalid(
                "Current and new password are required".to_owned(),
            ));
        };
        check_new_password(&new)?;
        if !self.accounts.check_password(user, current, address).await? {
            return Err(ChatError::Invalid(
                "The current password is not correct".to_owned(),
            ));
        }
        self.set_password(&user.id, new).await?;
        let ended = self.end_other_sessions(&user.id, Some(session_id)).await?;
        tracing::info!(user = %user.id, sessions_ended = ended, "password changed");
        Ok(ended)
    }

    async fn set_password(&self, user_id: &str, password: String) -> Result<(), ChatError> {
        let hash = self.accounts.hash_password(password).await?;
        self.store
            .update_user(user_id, UserChange::PasswordHash(hash), self.clock.now())
            .await?
            .ok_or(ChatError::Unauthorized)?;
        Ok(())
    }

    /// Queues a password-reset link to `email` if an account has that address. Says nothing
    /// either way (the caller answers the same), and sends at most one a minute per account.
    pub async fn request_password_reset(&self, email: Option<String>) -> Result<(), ChatError> {
        let Some(email) = email.as_deref().and_then(super::accounts::normalise_email) else {
            return Err(ChatError::Invalid(
                "Enter a valid e-mail address".to_owned(),
            ));
        };
        let Some(user) = self.store.user_by_email(&email).await? else {
            tracing::info!(account = %email, "password reset asked for an unknown address");
            return Ok(());
        };
        if self.resend_times.claim_reset(&user.id).is_err() {
            tracing::info!(user = %user.id, "password reset asked again too soon: not sent");
            return Ok(());
        }
        let expires_at = self.clock.now() + RESET_LINK_TTL.as_millis() as u64;
        self.queue_account_email(&user, AccountEmailKind::ResetPassword, expires_at)
            .await?;
        tracing::info!(user = %user.id, "password reset link queued");
        Ok(())
    }

    /// Sets a new password with a reset link's secret; every session of the account ends. The
    /// link works once, within an hour, and only while the account has the address it went to,
    /// which opening it proves (so the address counts as verified).
    pub async fn reset_password(
        &self,
        secret: Option<String>,
        new: Option<String>,
    ) -> Result<UserRecord, ChatError> {
        let invalid = || ChatError::Invalid("This link is invalid or has expired".to_owned());
        let secret = secret.unwrap_or_default();
        let secret = secret.trim();
        if secret.is_empty() || secret.len() > 128 {
            return Err(invalid());
        }
        let Some(new) = new else {
            return Err(ChatError::Invalid("A new password is required".to_owned()));
        };
        // Checked before the token is used up, so a too-short password can be corrected.
        check_new_password(&new)?;
        let now = self.clock.now();
        let token = self
            .store
            .take_token(&MailLinks::hash(secret), TokenPurpose::ResetPassword, now)
            .await?
            .ok_or_else(invalid)?;
        let user = self
            .store
            .user_by_id(&token.user_id)
            .await?
            .filter(|user| user.email == token.email)
            .ok_or_else(invalid)?;
        self.set_password(&user.id, new).await?;
        self.store
            .update_account_state(
                &user.id,
                AccountChange::EmailVerified(user.email.clone(), now),
            )
            .await?;
        let ended = self.end_other_sessions(&user.id, None).await?;
        tracing::info!(user = %user.id, sessions_ended = ended, "password reset by e-mail link");
        Ok(user)
    }
}

/// The rules a new password must follow.
pub fn check_new_password(password: &str) -> Result<(), ChatError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ChatError::Invalid(format!(
            "Password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(ChatError::Invalid(format!(
            "Password must be at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}
