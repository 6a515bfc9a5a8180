//! Account states, single-use tokens and blocks in the chat tree.
//!
//! | Key | Value |
//! |---|---|
//! | `a<userId>` | [`AccountState`] |
//! | `t<sha256 hex>` | [`OneTimeToken`] |
//! | `T<expires u64 BE><sha256 hex>` | empty: the expiry index, so old tokens are swept in order |
//! | `b<blocker>\0<blocked>`, `B<blocked>\0<blocker>` | empty: a block, both ways, written together |
//! | `s<sessionId>`, `S<userId>\0<sessionId>` | [`SessionRecord`](crate::store::accounts::SessionRecord), and the user's index (see `sessions.rs`) |
//!
//! Every change is read-modify-write: decided under one lock from the latest value, which is
//! the value still on its way to disk if there is one ([`AccountWrites`]), so two changes made
//! at once both land and a token is consumed once even while its deletion is being written.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{check_id, key, pair_key, wait, SledChatStore};
use crate::store::accounts::{AccountState, OneTimeToken, TokenPurpose};
use crate::store::chat::AccountChange;
use crate::store::codec::{decode, encode};
use crate::store::job::Millis;
use crate::store::sled::committer::{AfterCommit, Write};
use crate::store::StoreError;

pub(super) const ACCOUNT: u8 = b'a';
const TOKEN: u8 = b't';
const TOKEN_EXPIRY: u8 = b'T';
pub(super) const BLOCK: u8 = b'b';
pub(super) const BLOCKED_BY: u8 = b'B';
/// Most expired tokens removed along with one new token: sweeping keeps pace with creation.
const SWEEP_PER_PUT: usize = 16;

/// Values written but not yet durable, by key (`None`: a delete), each with the number of the
/// write that set it, so a settled write only clears its own value.
#[derive(Default)]
pub(super) struct AccountWrites {
    pub(super) pending: Mutex<Pending>,
}

#[derive(Default)]
pub(super) struct Pending {
    values: HashMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
    next: u64,
}

/// Which list of blocks to read.
pub(super) enum BlockSide {
    /// The users someone blocks.
    Blocked,
    /// The users who block someone.
    Blockers,
}

fn expiry_key(expires_at: Millis, hash: &str) -> Vec<u8> {
    let mut bytes = vec![TOKEN_EXPIRY];
    bytes.extend_from_slice(&expires_at.to_be_bytes());
    bytes.extend_from_slice(hash.as_bytes());
    bytes
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

impl SledChatStore {
    /// The latest value of `key`: pending, else stored.
    pub(super) fn latest(
        &self,
        pending: &Pending,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((_, value)) = pending.values.get(key) {
            return Ok(value.clone());
        }
        Ok(self.tree.get(key)?.map(|value| value.to_vec()))
    }

    /// Queues `writes` under the lock already held (`pending`), remembering their values until
    /// they are durable; wait for the result outside the lock.
    pub(super) fn queue_account_writes(
        &self,
        pending: &mut Pending,
        writes: Vec<Write>,
    ) -> tokio::sync::oneshot::Receiver<Result<(), StoreError>> {
        self.queue_account_writes_counted(pending, writes, 0)
    }

    /// [`Self::queue_account_writes`] of writes that include messages: `counter` is the message
    /// count they reach (0: none).
    pub(super) fn queue_account_writes_counted(
        &self,
        pending: &mut Pending,
        writes: Vec<Write>,
        counter: u64,
    ) -> tokio::sync::oneshot::Receiver<Result<(), StoreError>> {
        pending.next += 1;
        let number = pending.next;
        let mut keys = Vec::with_capacity(writes.len());
        for write in &writes {
            let (key, value) = match write {
                Write::Put(key, value) | Write::PutNew(key, value) => (key, Some(value.clone())),
                Write::Delete(key) => (key, None),
            };
            pending.values.insert(key.clone(), (number, value));
            keys.push(key.clone());
        }
        let writes_in_flight = Arc::clone(&self.account_writes);
        let after: AfterCommit = Box::new(move |_result| {
            // Written or failed, the tree now has the truth for these keys.
            let mut pending = writes_in_flight.pending.lock();
            for key in keys {
                if pending.values.get(&key).is_some_and(|(n, _)| *n == number) {
                    pending.values.remove(&key);
                }
            }
        });
        self.committer.submit_durable(writes, counter, Some(after))
    }

    pub(super) async fn read_account_state(&self, user: &str) -> Result<AccountState, StoreError> {
        check_id(user)?;
        let pending = self.account_writes.pending.lock();
        match self.latest(&pending, &key(ACCOUNT, user))? {
            Some(bytes) => decode(&bytes),
            None => Ok(AccountState::default()),
        }
    }

    pub(super) async fn change_account_state(
        &self,
        user: &str,
        change: AccountChange,
    ) -> Result<AccountState, StoreError> {
        check_id(user)?;
        let account_key = key(ACCOUNT, user);
        let (durable, state) = {
            let mut pending = self.account_writes.pending.lock();
            let mut state = match self.latest(&pending, &account_key)? {
                Some(bytes) => decode(&bytes)?,
                None => AccountState::default(),
            };
            change.apply(&mut state);
            let writes = vec![Write::Put(account_key, encode(&state)?)];
            (self.queue_account_writes(&mut pending, writes), state)
        };
        wait(durable).await?;
        Ok(state)
    }

    pub(super) async fn store_token(
        &self,
        hash: &str,
        token: OneTimeToken,
        now: Millis,
    ) -> Result<(), StoreError> {
        check_hash(hash)?;
        check_id(&token.user_id)?;
        let durable = {
            let mut pending = self.account_writes.pending.lock();
            let mut writes = vec![
                Write::Put(key(TOKEN, hash), encode(&token)?),
                Write::Put(expiry_key(token.expires_at, hash), Vec::new()),
            ];
            writes.extend(self.expired_tokens(&pending, now, SWEEP_PER_PUT)?);
            self.queue_account_writes(&mut pending, writes)
        };
        wait(durable).await
    }

    /// Deletes for up to `limit` tokens that expired at or before `before` (both keys).
    fn expired_tokens(
        &self,
        pending: &Pending,
        before: Millis,
        limit: usize,
    ) -> Result<Vec<Write>, StoreError> {
        let mut deletes = Vec::new();
        let end = expiry_key(before.saturating_add(1), "");
        for item in self.tree.range(vec![TOKEN_EXPIRY]..end).take(limit) {
            let (index_key, _) = item?;
            if pending
                .values
                .get(index_key.as_ref())
                .is_some_and(|(_, value)| value.is_none())
            {
                continue;
            }
            let hash = index_key.get(9..).unwrap_or_default();
            let mut token_key = vec![TOKEN];
            token_key.extend_from_slice(hash);
            deletes.push(Write::Delete(index_key.to_vec()));
            deletes.push(Write::Delete(token_key));
        }
        Ok(deletes)
    }

    pub(super) async fn consume_token(
        &self,
        hash: &str,
        purpose: TokenPurpose,
        now: Millis,
    ) -> Result<Option<OneTimeToken>, StoreError> {
        check_hash(hash)?;
        let token_key = key(TOKEN, hash);
        let (durable, token) = {
            let mut pending = self.account_writes.pending.lock();
            let Some(bytes) = self.latest(&pending, &token_key)? else {
                return Ok(None);
            };
            let token: OneTimeToken = decode(&bytes)?;
            if token.purpose != purpose {
                return Ok(None);
            }
            let writes = vec![
                Write::Delete(token_key),
                Write::Delete(expiry_key(token.expires_at, hash)),
            ];
            let durable = self.queue_account_writes(&mut pending, writes);
            (durable, (token.expires_at > now).then_some(token))
        };
        wait(durable).await?;
        Ok(token)
    }

    pub(super) async fn write_block(
        &self,
        blocker: &str,
        blocked: &str,
        is_blocked: bool,
    ) -> Result<bool, StoreError> {
        check_id(blocker)?;
        check_id(blocked)?;
        let forward = pair_key(BLOCK, blocker, blocked);
        let backward = pair_key(BLOCKED_BY, blocked, blocker);
        let durable = {
            let mut pending = self.account_writes.pending.lock();
            if self.latest(&pending, &forward)?.is_some() == is_blocked {
                return Ok(false);
            }
            let writes = if is_blocked {
                vec![
                    Write::Put(forward, Vec::new()),
                    Write::Put(backward, Vec::new()),
                ]
            } else {
                vec![Write::Delete(forward), Write::Delete(backward)]
            };
            self.queue_account_writes(&mut pending, writes)
        };
        wait(durable).await?;
        Ok(true)
    }

    pub(super) fn read_block(&self, blocker: &str, blocked: &str) -> Result<bool, StoreError> {
        check_id(blocker)?;
        check_id(blocked)?;
        let pending = self.account_writes.pending.lock();
        Ok(self
            .latest(&pending, &pair_key(BLOCK, blocker, blocked))?
            .is_some())
    }

    /// The other ends of `user`'s blocks on `side`: the stored ones, then the pending writes.
    pub(super) fn block_list(
        &self,
        side: BlockSide,
        user: &str,
    ) -> Result<Vec<String>, StoreError> {
        check_id(user)?;
        let kind = match side {
            BlockSide::Blocked => BLOCK,
            BlockSide::Blockers => BLOCKED_BY,
        };
        let mut prefix = key(kind, user);
        prefix.push(0);
        let other_of = |stored_key: &[u8]| {
            String::from_utf8_lossy(stored_key.get(prefix.len()..).unwrap_or_default()).into_owned()
        };
        let pending = self.account_writes.pending.lock();
        Ok(self
            .latest_under(&pending, &prefix)?
            .into_keys()
            .map(|stored_key| other_of(&stored_key))
            .collect())
    }

    /// The latest keys and values under `prefix`: the stored ones with the pending writes
    /// applied, in key order.
    pub(super) fn latest_under(
        &self,
        pending: &Pending,
        prefix: &[u8],
    ) -> Result<std::collections::BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let mut found = std::collections::BTreeMap::new();
        for item in self.tree.scan_prefix(prefix) {
            let (stored_key, value) = item?;
            found.insert(stored_key.to_vec(), value.to_vec());
        }
        for (pending_key, (_, value)) in pending.values.iter() {
            if pending_key.starts_with(prefix) {
                match value {
                    Some(value) => found.insert(pending_key.clone(), value.clone()),
                    None => found.remove(pending_key),
                };
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Golden bytes of the token key layouts: never edit the hex (see `store::codec`).
    #[test]
    fn token_key_layouts_are_frozen() {
        let hash = "ab".repeat(32);
        assert_eq!(hex(&key(TOKEN, &hash)), "7461626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162");
        assert_eq!(hex(&expiry_key(1_700_086_400_000, &hash)), "540000018bd50bc40061626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162");
    }
}
