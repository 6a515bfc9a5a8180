//! Account states, single-use tokens, blocks, sessions and disabled marks in memory, and
//! deleting a user with everything that is theirs. The rules are the sled store's
//! (`store/sled/chat/accounts.rs`, `sessions.rs`, `deletion.rs`).

use std::collections::{BTreeSet, HashMap};

use super::{check_id, key_safe, State};
use crate::store::accounts::{AccountState, OneTimeToken, SessionRecord, TokenPurpose};
use crate::store::chat::AccountChange;
use crate::store::job::Millis;
use crate::store::StoreError;

/// Most expired tokens removed along with one new token (as on sled).
const SWEEP_PER_PUT: usize = 16;

#[derive(Default)]
pub(super) struct Accounts {
    states: HashMap<String, AccountState>,
    /// Tokens by the SHA-256 of their secret.
    tokens: HashMap<String, OneTimeToken>,
    /// (expires at, hash) of every token: expired ones are swept oldest first.
    token_expiry: BTreeSet<(Millis, String)>,
    /// (blocker, blocked).
    blocks: BTreeSet<(String, String)>,
    /// (blocked, blocker): the same blocks, the other way round.
    blocked_by: BTreeSet<(String, String)>,
    sessions: HashMap<String, SessionRecord>,
    /// (user, session id) of every session.
    user_sessions: BTreeSet<(String, String)>,
    disabled: HashMap<String, Millis>,
}

fn check_hash(hash: &str) -> Result<(), StoreError> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(StoreError::Codec(
            "a token hash is 64 hex digits".to_owned(),
        ))
    }
}

/// The second halves of the pairs in `set` whose first half is `first`, in order.
fn seconds_of(set: &BTreeSet<(String, String)>, first: &str) -> Vec<String> {
    set.range((first.to_owned(), String::new())..)
        .take_while(|(one, _)| one == first)
        .map(|(_, second)| second.clone())
        .collect()
}

impl Accounts {
    fn remove_token(&mut self, hash: &str) -> Option<OneTimeToken> {
        let token = self.tokens.remove(hash)?;
        self.token_expiry
            .remove(&(token.expires_at, hash.to_owned()));
        Some(token)
    }

    fn remove_session(&mut self, id: &str) -> Option<SessionRecord> {
        let session = self.sessions.remove(id)?;
        self.user_sessions
            .remove(&(session.user_id.clone(), id.to_owned()));
        Some(session)
    }
}

impl State {
    pub(super) fn account_state(&self, user: &str) -> Result<AccountState, StoreError> {
        check_id(user)?;
        Ok(self.accounts.states.get(user).cloned().unwrap_or_default())
    }

    pub(super) fn update_account_state(
        &mut self,
        user: &str,
        change: AccountChange,
    ) -> Result<AccountState, StoreError> {
        check_id(user)?;
        let state = self.accounts.states.entry(user.to_owned()).or_default();
        change.apply(state);
        Ok(state.clone())
    }

    pub(super) fn put_token(
        &mut self,
        hash: &str,
        token: OneTimeToken,
        now: Millis,
    ) -> Result<(), StoreError> {
        check_hash(hash)?;
        check_id(&token.user_id)?;
        let accounts = &mut self.accounts;
        let expired: Vec<String> = accounts
            .token_expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(SWEEP_PER_PUT)
            .map(|(_, hash)| hash.clone())
            .collect();
        for old in expired {
            accounts.remove_token(&old);
        }
        accounts.remove_token(hash);
        accounts
            .token_expiry
            .insert((token.expires_at, hash.to_owned()));
        accounts.tokens.insert(hash.to_owned(), token);
        Ok(())
    }

    pub(super) fn take_token(
        &mut self,
        hash: &str,
        purpose: TokenPurpose,
        now: Millis,
    ) -> Result<Option<OneTimeToken>, StoreError> {
        check_hash(hash)?;
        let accounts = &mut self.accounts;
        if accounts
            .tokens
            .get(hash)
            .is_none_or(|token| token.purpose != purpose)
        {
            return Ok(None);
        }
        // Valid or expired, it is used up.
        Ok(accounts
            .remove_token(hash)
            .filter(|token| token.expires_at > now))
    }

    pub(super) fn set_blocked(
        &mut self,
        blocker: &str,
        blocked: &str,
        is_blocked: bool,
    ) -> Result<bool, StoreError> {
        check_id(blocker)?;
        check_id(blocked)?;
        let forward = (blocker.to_owned(), blocked.to_owned());
        let backward = (blocked.to_owned(), blocker.to_owned());
        let accounts = &mut self.accounts;
        if is_blocked {
            accounts.blocked_by.insert(backward);
            Ok(accounts.blocks.insert(forward))
        } else {
            accounts.blocked_by.remove(&backward);
            Ok(accounts.blocks.remove(&forward))
        }
    }

    pub(super) fn is_blocked(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        check_id(blocker)?;
        check_id(blocked)?;
        Ok(self
            .accounts
            .blocks
            .contains(&(blocker.to_owned(), blocked.to_owned())))
    }

    pub(super) fn blocked_users(&self, blocker: &str) -> Result<Vec<String>, StoreError> {
        check_id(blocker)?;
        Ok(seconds_of(&self.accounts.blocks, blocker))
    }

    pub(super) fn blockers_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        check_id(user)?;
        Ok(seconds_of(&self.accounts.blocked_by, user))
    }

    pub(super) fn put_session(
        &mut self,
        id: &str,
        session: SessionRecord,
        now: Millis,
    ) -> Result<(), StoreError> {
        check_id(id)?;
        check_id(&session.user_id)?;
        let accounts = &mut self.accounts;
        for other in seconds_of(&accounts.user_sessions, &session.user_id) {
            if other != id
                && accounts
                    .sessions
                    .get(&other)
                    .is_some_and(|record| record.expires_at <= now)
            {
                accounts.remove_session(&other);
            }
        }
        accounts.remove_session(id);
        accounts
            .user_sessions
            .insert((session.user_id.clone(), id.to_owned()));
        accounts.sessions.insert(id.to_owned(), session);
        Ok(())
    }

    pub(super) fn touch_session(
        &mut self,
        id: &str,
        last_seen_at: Millis,
    ) -> Result<bool, StoreError> {
        check_id(id)?;
        match self.accounts.sessions.get_mut(id) {
            Some(session) => {
                session.last_seen_at = session.last_seen_at.max(last_seen_at);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    pub(super) fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        check_id(id)?;
        Ok(self.accounts.sessions.get(id).cloned())
    }

    pub(super) fn sessions_of(
        &self,
        user: &str,
    ) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        check_id(user)?;
        let accounts = &self.accounts;
        Ok(seconds_of(&accounts.user_sessions, user)
            .into_iter()
            .filter_map(|id| {
                let session = accounts.sessions.get(&id)?.clone();
                Some((id, session))
            })
            .collect())
    }

    pub(super) fn delete_sessions(
        &mut self,
        user: &str,
        ids: &[String],
    ) -> Result<usize, StoreError> {
        check_id(user)?;
        let accounts = &mut self.accounts;
        let mut removed = 0;
        for id in ids {
            if key_safe(id)
                && accounts
                    .sessions
                    .get(id)
                    .is_some_and(|session| session.user_id == user)
            {
                accounts.remove_session(id);
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub(super) fn set_disabled(
        &mut self,
        user: &str,
        at: Option<Millis>,
    ) -> Result<(), StoreError> {
        check_id(user)?;
        match at {
            Some(at) => self.accounts.disabled.insert(user.to_owned(), at),
            None => self.accounts.disabled.remove(user),
        };
        Ok(())
    }

    pub(super) fn disabled_at(&self, user: &str) -> Result<Option<Millis>, StoreError> {
        check_id(user)?;
        Ok(self.accounts.disabled.get(user).copied())
    }

    /// Deletes `id` with its conversations (both sides' messages, read marks, e-mail claims),
    /// account state, sessions, blocks either way and disabled mark; later messages naming the
    /// user are refused. Returns how many messages were deleted.
    pub(super) fn delete_user(&mut self, id: &str) -> Result<Option<u64>, StoreError> {
        check_id(id)?;
        let Some(user) = self.users.remove(id) else {
            return Ok(None);
        };
        if self
            .emails
            .get(&user.email)
            .is_some_and(|owner| owner == id)
        {
            self.emails.remove(&user.email);
        }

        let mut deleted = 0u64;
        for other in self.partners.remove(id).unwrap_or_default() {
            if let Some(partners) = self.partners.get_mut(&other) {
                partners.remove(id);
                if partners.is_empty() {
                    self.partners.remove(&other);
                }
            }
            let conversation = super::conversation_key(id, &other);
            for message in self.conversations.remove(&conversation).unwrap_or_default() {
                self.message_ids.remove(&message.id);
                for url in message.file_refs() {
                    if let Some(ids) = self.file_refs.get_mut(&url) {
                        ids.remove(&message.id);
                        if ids.is_empty() {
                            self.file_refs.remove(&url);
                        }
                    }
                }
                deleted += 1;
            }
            self.changes.remove(&conversation);
            self.last_change.remove(&conversation);
            self.search.remove_conversation(&conversation);
        }
        let theirs = |conversation: &String| conversation.split(':').any(|part| part == id);
        self.read_marks
            .retain(|(conversation, _), _| !theirs(conversation));
        self.email_claims
            .retain(|(conversation, _), _| !theirs(conversation));
        self.deleted_users.insert(id.to_owned());
        self.leave_groups_on_delete(id);

        let accounts = &mut self.accounts;
        accounts.states.remove(id);
        accounts.disabled.remove(id);
        for session in seconds_of(&accounts.user_sessions, id) {
            accounts.remove_session(&session);
        }
        for blocked in seconds_of(&accounts.blocks, id) {
            accounts.blocks.remove(&(id.to_owned(), blocked.clone()));
            accounts.blocked_by.remove(&(blocked, id.to_owned()));
        }
        for blocker in seconds_of(&accounts.blocked_by, id) {
            accounts
                .blocked_by
                .remove(&(id.to_owned(), blocker.clone()));
            accounts.blocks.remove(&(blocker, id.to_owned()));
        }
        Ok(Some(deleted))
    }
}
