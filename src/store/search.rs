//! Full-text search of messages: the words a message is found by, the index entries both chat
//! backends keep of them, and the evaluation of a query over those entries.
//!
//! The index is an ordered map with one entry per (conversation, word, message):
//!
//! | Key | Value |
//! |---|---|
//! | conversation tag (8 bytes) · word · NUL · seq (u64 BE) | [`Posting`]: created at, kind, sender tag |
//!
//! A query word matches every indexed word it starts ("caf" finds "café" and "cafeteria"), so a
//! word is one range read of one conversation's entries, and a query is, per conversation the
//! caller may read, the intersection of its words' ranges: never a scan of messages. Filters on
//! sender, kind and time read the posting, not the message; only the page returned is read from
//! the store. The conversation tag is a hash of the conversation key (8 bytes, not the 49 of a
//! direct conversation's key); the store checks each hit's conversation when it reads the record,
//! so a collision can never show a message of another conversation.
//!
//! The sled backend writes a message's entries in the same write-ahead log entry as the message
//! (and an edit's or a delete's changes with the change), so the index is never behind the data.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use sha2::{Digest, Sha256};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use crate::store::chat::MessageRecord;
use crate::store::job::Millis;
use crate::store::StoreError;

/// Longest word kept, in bytes; longer words are cut (at a character boundary), in messages and
/// queries alike, so a long query word still finds the message.
pub const MAX_WORD_BYTES: usize = 32;

/// Most words a query may have.
pub const MAX_QUERY_WORDS: usize = 8;

/// Most hits one page returns.
pub const MAX_PAGE: usize = 50;

/// Text as searches compare it: decomposed (compatibility forms too: "ﬁ" is "fi"), combining
/// marks dropped, lowercased. People and message search both fold through this.
pub fn fold(text: &str) -> String {
    text.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The words of `text`: folded runs of letters and digits, each cut to [`MAX_WORD_BYTES`].
pub fn words(text: &str) -> BTreeSet<String> {
    fold(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| cut(word).to_owned())
        .collect()
}

fn cut(word: &str) -> &str {
    if word.len() <= MAX_WORD_BYTES {
        return word;
    }
    let mut end = MAX_WORD_BYTES;
    while !word.is_char_boundary(end) {
        end -= 1;
    }
    &word[..end]
}

/// What a message is, for the `messageType` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Image,
    File,
}

impl MessageKind {
    pub fn of(record: &MessageRecord) -> MessageKind {
        if record.attachment.is_some() {
            MessageKind::File
        } else if !record.image.is_empty() {
            MessageKind::Image
        } else {
            MessageKind::Text
        }
    }

    fn code(self) -> u8 {
        match self {
            MessageKind::Text => 0,
            MessageKind::Image => 1,
            MessageKind::File => 2,
        }
    }
}

/// The words a stored message is found by: its text's and its attachment's file name's. A
/// deleted message and a system message have none.
pub fn message_words(record: &MessageRecord) -> BTreeSet<String> {
    if record.is_deleted() || record.system {
        return BTreeSet::new();
    }
    let mut found = words(&record.text);
    if let Some(attachment) = &record.attachment {
        found.extend(words(&attachment.name));
    }
    found
}

/// The 8-byte hash that stands for a conversation (or a user) in index entries.
pub fn tag(id: &str) -> [u8; 8] {
    let digest = Sha256::digest(id.as_bytes());
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&digest[..8]);
    tag
}

/// The index key of `word` in message `seq` of `conversation`.
pub fn entry_key(conversation: &str, word: &str, seq: u64) -> Vec<u8> {
    let mut key = word_prefix(conversation, word);
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The start of the keys of every word of `conversation` that starts with `word`.
pub fn word_prefix(conversation: &str, word: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + word.len() + 9);
    key.extend_from_slice(&tag(conversation));
    key.extend_from_slice(word.as_bytes());
    key
}

/// The start of every index key of `conversation`.
pub fn conversation_prefix(conversation: &str) -> Vec<u8> {
    tag(conversation).to_vec()
}

/// What an index entry holds about its message, so filters need not read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub created_at: Millis,
    pub kind: MessageKind,
    pub sender: [u8; 8],
}

impl Posting {
    pub fn of(record: &MessageRecord) -> Posting {
        Posting {
            created_at: record.created_at,
            kind: MessageKind::of(record),
            sender: tag(&record.sender_id),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(17);
        bytes.extend_from_slice(&self.created_at.to_be_bytes());
        bytes.push(self.kind.code());
        bytes.extend_from_slice(&self.sender);
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Posting, StoreError> {
        let bad = || StoreError::Codec("bad search index entry".to_owned());
        let created_at = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(bad)?;
        let kind = match bytes.get(8) {
            Some(0) => MessageKind::Text,
            Some(1) => MessageKind::Image,
            Some(2) => MessageKind::File,
            _ => return Err(bad()),
        };
        let sender = bytes
            .get(9..17)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        Ok(Posting {
            created_at,
            kind,
            sender,
        })
    }
}

/// The seq at the end of an index key.
pub fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    key.len()
        .checked_sub(8)
        .and_then(|start| key.get(start..))
        .and_then(|tail| tail.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Codec("bad search index key".to_owned()))
}

/// An index write: an entry to put (key, value) or a key to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexWrite {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// The entries of a newly stored message.
pub fn entries_of(record: &MessageRecord) -> Vec<IndexWrite> {
    changes_between(None, record)
}

/// The index writes that take the entries of `before` (none: a new message) to those of
/// `after`: only the words that came or went (a reaction changes nothing).
pub fn changes_between(before: Option<&MessageRecord>, after: &MessageRecord) -> Vec<IndexWrite> {
    let conversation = after.conversation_key();
    let old = before.map(message_words).unwrap_or_default();
    let new = message_words(after);
    let value = Posting::of(after).encode();
    let mut writes = Vec::new();
    for word in old.difference(&new) {
        writes.push(IndexWrite::Delete(entry_key(
            &conversation,
            word,
            after.seq,
        )));
    }
    for word in new.difference(&old) {
        writes.push(IndexWrite::Put(
            entry_key(&conversation, word, after.seq),
            value.clone(),
        ));
    }
    writes
}

/// The keys of every entry of a message being removed.
pub fn removals_of(record: &MessageRecord) -> Vec<Vec<u8>> {
    let conversation = record.conversation_key();
    message_words(record)
        .iter()
        .map(|word| entry_key(&conversation, word, record.seq))
        .collect()
}

/// A message search, over the conversations the caller may read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// Folded words, each a prefix (see [`query_words`]).
    pub words: Vec<String>,
    /// Conversation keys (group ids, or the two user ids joined with `:`).
    pub conversations: Vec<String>,
    pub sender: Option<String>,
    pub kind: Option<MessageKind>,
    /// Created at or after.
    pub since: Option<Millis>,
    /// Created before.
    pub until: Option<Millis>,
    pub offset: usize,
    pub limit: usize,
}

/// The words of a query, at most [`MAX_QUERY_WORDS`], longest first (the longest word is
/// usually the rarest, and the first one read bounds the work of the others).
pub fn query_words(text: &str) -> Vec<String> {
    let mut found: Vec<String> = words(text).into_iter().collect();
    found.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    found.truncate(MAX_QUERY_WORDS);
    found
}

/// One message found: its conversation and seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub conversation: String,
    pub seq: u64,
    pub created_at: Millis,
}

/// A page of hits, newest first, and how many there are in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hits {
    pub total: usize,
    pub page: Vec<Hit>,
}

/// A page of messages found, newest first, and how many there are in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPage {
    pub total: usize,
    pub messages: Vec<MessageRecord>,
}

/// Candidates at most which the remaining words of a query are checked on the messages
/// themselves rather than by reading those words' entries: reading a few hundred messages costs
/// less than one common word's entries in a long conversation.
pub const VERIFY_AT_MOST: usize = 256;

/// Whether `words` (query words, each a prefix) all match a word of `record`.
pub fn matches_all(record: &MessageRecord, words: &[String]) -> bool {
    let found = message_words(record);
    words.iter().all(|query| {
        found
            .range::<str, _>((Bound::Included(query.as_str()), Bound::Unbounded))
            .next()
            .is_some_and(|word| word.starts_with(query.as_str()))
    })
}

/// What an [`IndexSource`] calls with each entry (key, value) of a range.
pub type EachEntry<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// Where [`evaluate`] reads: the index entries under a key prefix, and single messages.
pub trait IndexSource {
    /// Calls `each` with every entry (key, value) whose key starts with `prefix`, in key order.
    fn range(&self, prefix: &[u8], each: &mut EachEntry<'_>) -> Result<(), StoreError>;

    /// Message `seq` of `conversation`, if stored.
    fn message(&self, conversation: &str, seq: u64) -> Result<Option<MessageRecord>, StoreError>;
}

/// Evaluates `query` over an index: per conversation, the entries of the first (longest) word,
/// filtered by the posting; then each further word narrows them, by its entries or, once few
/// candidates are left, by the messages' own words.
pub fn evaluate(query: &SearchQuery, source: &dyn IndexSource) -> Result<Hits, StoreError> {
    let mut found = Vec::new();
    let Some((first, rest)) = query.words.split_first() else {
        return Ok(Hits::default());
    };
    if query.limit == 0 {
        return Ok(Hits::default());
    }
    let sender = query.sender.as_deref().map(tag);
    let wanted = |posting: &Posting| {
        sender.is_none_or(|sender| posting.sender == sender)
            && query.kind.is_none_or(|kind| posting.kind == kind)
            && query.since.is_none_or(|since| posting.created_at >= since)
            && query.until.is_none_or(|until| posting.created_at < until)
    };
    for conversation in &query.conversations {
        // (seq, created at); a prefix may match several words of one message.
        let mut candidates: Vec<(u64, Millis)> = Vec::new();
        source.range(&word_prefix(conversation, first), &mut |key, value| {
            let posting = Posting::decode(value)?;
            if wanted(&posting) {
                candidates.push((seq_of(key)?, posting.created_at));
            }
            Ok(())
        })?;
        candidates.sort_unstable();
        candidates.dedup_by_key(|(seq, _)| *seq);
        for (n, word) in rest.iter().enumerate() {
            if candidates.is_empty() {
                break;
            }
            if candidates.len() <= VERIFY_AT_MOST {
                let remaining = &rest[n..];
                let mut kept = Vec::with_capacity(candidates.len());
                for (seq, created_at) in candidates {
                    if let Some(record) = source.message(conversation, seq)? {
                        if matches_all(&record, remaining) {
                            kept.push((seq, created_at));
                        }
                    }
                }
                candidates = kept;
                break;
            }
            let mut present = std::collections::HashSet::with_capacity(candidates.len());
            source.range(&word_prefix(conversation, word), &mut |key, _| {
                present.insert(seq_of(key)?);
                Ok(())
            })?;
            candidates.retain(|(seq, _)| present.contains(seq));
        }
        found.extend(candidates.into_iter().map(|(seq, created_at)| Hit {
            conversation: conversation.clone(),
            seq,
            created_at,
        }));
    }
    found.sort_unstable_by(|a, b| {
        (b.created_at, b.seq, &b.conversation).cmp(&(a.created_at, a.seq, &a.conversation))
    });
    let total = found.len();
    let page = found
        .into_iter()
        .skip(query.offset)
        .take(query.limit.min(MAX_PAGE))
        .collect();
    Ok(Hits { total, page })
}

/// An index in memory (the memory backend's).
#[derive(Debug, Default)]
pub struct MemoryIndex {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryIndex {
    pub fn apply(&mut self, writes: Vec<IndexWrite>) {
        for write in writes {
            match write {
                IndexWrite::Put(key, value) => {
                    self.entries.insert(key, value);
                }
                IndexWrite::Delete(key) => {
                    self.entries.remove(&key);
                }
            }
        }
    }

    /// Removes every entry of `conversation`.
    pub fn remove_conversation(&mut self, conversation: &str) {
        let prefix = conversation_prefix(conversation);
        let keys: Vec<Vec<u8>> = self
            .entries
            .range::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            self.entries.remove(&key);
        }
    }

    /// The entries under `prefix`, for an [`IndexSource`].
    pub fn range(&self, prefix: &[u8], each: &mut EachEntry<'_>) -> Result<(), StoreError> {
        for (key, value) in self
            .entries
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
        {
            each(key, value)?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_folded_split_and_cut() {
        let found = words("Crème BRÛLÉE, l'été! ﬁne x2 ");
        let expected: BTreeSet<String> = ["creme", "brulee", "l", "ete", "fine", "x2"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(found, expected);
        let long = "é".repeat(40);
        let cut_word = words(&long).into_iter().next().unwrap();
        assert_eq!(cut_word, "e".repeat(32));
        let wide = "日本語".repeat(10);
        let cut_wide = words(&wide).into_iter().next().unwrap();
        assert!(cut_wide.len() <= MAX_WORD_BYTES && wide.starts_with(&cut_wide));
    }

    #[test]
    fn query_words_put_the_longest_first() {
        assert_eq!(query_words("a bbb cc bbb"), ["bbb", "cc", "a"]);
    }

    #[test]
    fn postings_round_trip() {
        let posting = Posting {
            created_at: 1_700_000_000_123,
            kind: MessageKind::File,
            sender: tag("u1"),
        };
        assert_eq!(Posting::decode(&posting.encode()).unwrap(), posting);
        assert!(Posting::decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn a_word_prefix_never_reaches_another_conversation() {
        let key = entry_key("a:b", "hello", 7);
        assert!(key.starts_with(&word_prefix("a:b", "hel")));
        assert!(!key.starts_with(&word_prefix("a:c", "hel")));
        assert_eq!(seq_of(&key).unwrap(), 7);
    }
}
