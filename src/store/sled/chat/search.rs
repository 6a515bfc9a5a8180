//! The message search index in the chat tree: `w` followed by a `store::search` entry key.
//!
//! Entries are written in the same batch (one write-ahead log entry) as the message they index,
//! or as the change that edits or deletes it, so a crash never leaves the index behind the data.
//! Data from before the index has none: the first open indexes every stored message once
//! ([`index_messages`]) and marks the tree, as the file references are indexed.

use super::keys::{message_key, MESSAGE, SEARCH, SEARCH_MARK};
use super::SledChatStore;
use crate::store::chat::MessageRecord;
use crate::store::codec::decode_versioned;
use crate::store::search::{self, IndexSource, IndexWrite, SearchPage, SearchQuery};
use crate::store::sled::committer::Write;
use crate::store::StoreError;

/// An index key in the chat tree.
fn tree_key(entry: Vec<u8>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + entry.len());
    bytes.push(SEARCH);
    bytes.extend_from_slice(&entry);
    bytes
}

/// The chat-tree writes of `writes`.
pub(super) fn tree_writes(writes: Vec<IndexWrite>) -> impl Iterator<Item = Write> {
    writes.into_iter().map(|write| match write {
        IndexWrite::Put(key, value) => Write::Put(tree_key(key), value),
        IndexWrite::Delete(key) => Write::Delete(tree_key(key)),
    })
}

/// The chat-tree deletes of a removed message's entries.
pub(super) fn tree_removals(record: &MessageRecord) -> impl Iterator<Item = Write> {
    search::removals_of(record)
        .into_iter()
        .map(|key| Write::Delete(tree_key(key)))
}

impl IndexSource for SledChatStore {
    fn range(&self, prefix: &[u8], each: &mut search::EachEntry<'_>) -> Result<(), StoreError> {
        for item in self.tree.scan_prefix(tree_key(prefix.to_vec())) {
            let (key, value) = item?;
            each(key.get(1..).unwrap_or_default(), &value)?;
        }
        Ok(())
    }

    /// A key left by a change racing a user's deletion names a message that is gone; a tag
    /// shared by two conversations (a hash collision) shows nothing of the other.
    fn message(&self, conversation: &str, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        let Some(bytes) = self.tree.get(message_key(conversation, seq))? else {
            return Ok(None);
        };
        let record: MessageRecord = decode_versioned(&bytes)?;
        Ok((record.conversation_key() == conversation).then_some(record))
    }
}

impl SledChatStore {
    pub(super) fn read_search(&self, query: &SearchQuery) -> Result<SearchPage, StoreError> {
        if !self.search_index {
            return Err(StoreError::Unsupported(
                "message search is turned off on this server (SEARCH_INDEX=off)".to_owned(),
            ));
        }
        let hits = search::evaluate(query, self)?;
        let mut messages = Vec::with_capacity(hits.page.len());
        for hit in &hits.page {
            let record = self.message(&hit.conversation, hit.seq)?;
            messages.extend(record.filter(|record| search::matches_all(record, &query.words)));
        }
        Ok(SearchPage {
            total: hits.total,
            messages,
        })
    }
}

/// Writes per sled batch while the index is built or cleared.
const INDEX_BATCH: usize = 10_000;

/// Indexes the words of every stored message, once: data written before the index has none,
/// nor do messages written or changed while it was off (whatever it still holds from before is
/// cleared first). Runs at open, before any write is decided; writes straight to the tree and
/// flushes, and marks the tree only after that, so a crash half-way runs it again.
pub(super) fn index_messages(tree: &sled::Tree) -> Result<(), StoreError> {
    if tree.contains_key(SEARCH_MARK)? {
        return Ok(());
    }
    if tree.scan_prefix([MESSAGE]).next().is_some() {
        tracing::info!("building the message search index; the server is ready when it is done");
    }
    // In batches of a bounded size: one sled batch holds all of its writes in memory.
    let mut stale = sled::Batch::default();
    let mut cleared = 0u64;
    for item in tree.scan_prefix([SEARCH]) {
        stale.remove(item?.0);
        cleared += 1;
        if cleared % INDEX_BATCH as u64 == 0 {
            tree.apply_batch(std::mem::take(&mut stale))?;
        }
    }
    tree.apply_batch(stale)?;
    if cleared > 0 {
        tracing::info!(
            entries = cleared,
            "cleared an out-of-date message search index"
        );
    }
    let mut indexed = 0u64;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    for item in tree.scan_prefix([MESSAGE]) {
        let (_, value) = item?;
        let record: MessageRecord = decode_versioned(&value)?;
        for write in search::entries_of(&record) {
            if let IndexWrite::Put(key, value) = write {
                batch.insert(tree_key(key), value);
                in_batch += 1;
            }
        }
        indexed += 1;
        if in_batch >= INDEX_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    tree.apply_batch(batch)?;
    tree.flush()?;
    tree.insert(SEARCH_MARK, Vec::<u8>::new())?;
    tree.flush()?;
    if indexed > 0 {
        tracing::info!(
            messages = indexed,
            "indexed the words of stored messages for search"
        );
    }
    Ok(())
}

/// With the index off, the next open with it on must rebuild it: messages written meanwhile
/// have no entries.
pub(super) fn forget_index(tree: &sled::Tree) -> Result<(), StoreError> {
    if tree.remove(SEARCH_MARK)?.is_some() {
        tree.flush()?;
        tracing::info!("message search is off: the index will be rebuilt when it is turned on");
    }
    Ok(())
}
