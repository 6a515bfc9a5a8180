//! The chat tree's key layouts (the table in `chat.rs`) and the reads of a key range.

use crate::store::chat::MessageRecord;
use crate::store::codec::decode_versioned;
use crate::store::StoreError;

pub(super) const USER: u8 = b'u';
pub(super) const EMAIL: u8 = b'e';
pub(super) const MESSAGE: u8 = b'c';
pub(super) const MESSAGE_ID: u8 = b'i';
pub(super) const PARTNER: u8 = b'p';
pub(super) const READ_MARK: u8 = b'r';
pub(super) const EMAIL_CLAIM: u8 = b'x';
pub(super) const CHANGE: u8 = b'k';
pub(super) const FILE_REF: u8 = b'h';
/// The message search index (see `chat/search.rs`).
pub(super) const SEARCH: u8 = b'w';
/// Present once every stored message's words are in the `w` index.
pub(super) const SEARCH_MARK: &[u8] = b"m:search";
/// Present once every stored message's file references are in the `h` index (written by the
/// one-time upgrade of data from before format 2, see `chat/changes.rs`).
pub(super) const FILE_REFS_MARK: &[u8] = b"m:file-refs";
/// Highest message count written; the committer keeps it (never decreasing) in the same batch as
/// the message that reached it.
pub(super) const COUNT_KEY: &[u8] = b"m:count";

/// Whether a user id can be part of a conversation key.
pub(super) fn key_safe(id: &str) -> bool {
    !id.contains([':', '\0'])
}

pub(super) fn check_id(id: &str) -> Result<(), StoreError> {
    if key_safe(id) {
        Ok(())
    } else {
        Err(StoreError::Codec(format!(
            "user id {id:?} cannot be stored: it contains ':' or NUL"
        )))
    }
}

pub(super) fn conversation_id(a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    format!("{first}:{second}")
}

pub(super) fn key(kind: u8, id: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + id.len());
    bytes.push(kind);
    bytes.extend_from_slice(id.as_bytes());
    bytes
}

pub(super) fn pair_key(kind: u8, first: &str, second: &str) -> Vec<u8> {
    let mut bytes = key(kind, first);
    bytes.push(0);
    bytes.extend_from_slice(second.as_bytes());
    bytes
}

pub(super) fn conversation_prefix(conversation: &str) -> Vec<u8> {
    let mut bytes = key(MESSAGE, conversation);
    bytes.push(0);
    bytes
}

pub(super) fn message_key(conversation: &str, seq: u64) -> Vec<u8> {
    let mut bytes = conversation_prefix(conversation);
    bytes.extend_from_slice(&seq.to_be_bytes());
    bytes
}

pub(super) fn change_prefix(conversation: &str) -> Vec<u8> {
    let mut bytes = key(CHANGE, conversation);
    bytes.push(0);
    bytes
}

pub(super) fn change_key(conversation: &str, change: u64) -> Vec<u8> {
    let mut bytes = change_prefix(conversation);
    bytes.extend_from_slice(&change.to_be_bytes());
    bytes
}

pub(super) fn file_ref_prefix(url: &str) -> Vec<u8> {
    let mut bytes = key(FILE_REF, url);
    bytes.push(0);
    bytes
}

pub(super) fn file_ref_key(url: &str, message_id: &str) -> Vec<u8> {
    let mut bytes = file_ref_prefix(url);
    bytes.extend_from_slice(message_id.as_bytes());
    bytes
}

/// The seq at the end of a message key.
pub(super) fn seq_of(stored_key: &[u8]) -> Result<u64, StoreError> {
    stored_key
        .len()
        .checked_sub(8)
        .and_then(|start| stored_key.get(start..))
        .and_then(|tail| tail.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Codec("bad message key".to_owned()))
}

/// Decodes the values of a key range, up to `limit` of them, from whichever end `newest_first`
/// names; the result is always oldest first.
pub(super) fn page(
    range: impl DoubleEndedIterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    limit: usize,
    newest_first: bool,
) -> Result<Vec<MessageRecord>, StoreError> {
    let mut messages = Vec::with_capacity(limit.min(256));
    let items: Box<dyn Iterator<Item = _>> = if newest_first {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    for item in items.take(limit) {
        let (_, value) = item?;
        messages.push(decode_versioned(&value)?);
    }
    if newest_first {
        messages.reverse();
    }
    Ok(messages)
}
