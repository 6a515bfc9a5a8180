//! Sessions in the chat tree: `s<sessionId>` holds the [`SessionRecord`], `S<userId>\0<sessionId>`
//! (empty) lists a user's sessions. Both keys of a session are written and deleted together, in
//! one log entry, through the same pending overlay as the other account records.

use super::accounts::Pending;
use super::{check_id, key, pair_key, wait, SledChatStore};
use crate::store::accounts::SessionRecord;
use crate::store::codec::{decode, encode};
use crate::store::job::Millis;
use crate::store::sled::committer::Write;
use crate::store::StoreError;

pub(super) const SESSION: u8 = b's';
pub(super) const USER_SESSION: u8 = b'S';

impl SledChatStore {
    pub(super) async fn write_session(
        &self,
        id: &str,
        session: SessionRecord,
        now: Millis,
    ) -> Result<(), StoreError> {
        check_id(id)?;
        check_id(&session.user_id)?;
        let durable = {
            let mut pending = self.account_writes.pending.lock();
            let mut writes = vec![
                Write::Put(key(SESSION, id), encode(&session)?),
                Write::Put(pair_key(USER_SESSION, &session.user_id, id), Vec::new()),
            ];
            for (other, record) in self.user_sessions(&pending, &session.user_id)? {
                if other != id && record.expires_at <= now {
                    writes.push(Write::Delete(key(SESSION, &other)));
                    writes.push(Write::Delete(pair_key(
                        USER_SESSION,
                        &record.user_id,
                        &other,
                    )));
                }
            }
            self.queue_account_writes(&mut pending, writes)
        };
        wait(durable).await
    }

    pub(super) async fn write_last_seen(
        &self,
        id: &str,
        last_seen_at: Millis,
    ) -> Result<bool, StoreError> {
        check_id(id)?;
        let session_key = key(SESSION, id);
        let durable = {
            let mut pending = self.account_writes.pending.lock();
            let Some(bytes) = self.latest(&pending, &session_key)? else {
                return Ok(false);
            };
            let mut session: SessionRecord = decode(&bytes)?;
            session.last_seen_at = session.last_seen_at.max(last_seen_at);
            let writes = vec![Write::Put(session_key, encode(&session)?)];
            self.queue_account_writes(&mut pending, writes)
        };
        wait(durable).await?;
        Ok(true)
    }

    pub(super) fn read_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        check_id(id)?;
        let pending = self.account_writes.pending.lock();
        self.latest(&pending, &key(SESSION, id))?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    pub(super) fn read_sessions_of(
        &self,
        user: &str,
    ) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        check_id(user)?;
        let pending = self.account_writes.pending.lock();
        self.user_sessions(&pending, user)
    }

    pub(super) async fn remove_sessions(
        &self,
        user: &str,
        ids: &[String],
    ) -> Result<usize, StoreError> {
        check_id(user)?;
        let (durable, removed) = {
            let mut pending = self.account_writes.pending.lock();
            let mut writes = Vec::new();
            for id in ids {
                if !super::key_safe(id) {
                    continue;
                }
                let Some(bytes) = self.latest(&pending, &key(SESSION, id))? else {
                    continue;
                };
                let record: SessionRecord = decode(&bytes)?;
                if record.user_id == user {
                    writes.push(Write::Delete(key(SESSION, id)));
                    writes.push(Write::Delete(pair_key(USER_SESSION, user, id)));
                }
            }
            if writes.is_empty() {
                return Ok(0);
            }
            let removed = writes.len() / 2;
            (self.queue_account_writes(&mut pending, writes), removed)
        };
        wait(durable).await?;
        Ok(removed)
    }

    /// `user`'s sessions as the overlay has them, in id order. An index entry whose record is
    /// missing (it cannot happen, since both are written together) is skipped.
    fn user_sessions(
        &self,
        pending: &Pending,
        user: &str,
    ) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        let mut prefix = key(USER_SESSION, user);
        prefix.push(0);
        let mut sessions = Vec::new();
        for index_key in self.latest_under(pending, &prefix)?.into_keys() {
            let id = String::from_utf8_lossy(index_key.get(prefix.len()..).unwrap_or_default())
                .into_owned();
            if let Some(bytes) = self.latest(pending, &key(SESSION, &id))? {
                sessions.push((id, decode(&bytes)?));
            }
        }
        Ok(sessions)
    }
}
