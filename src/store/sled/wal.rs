//! Courier's write-ahead log in front of sled: how an acknowledged write survives a power loss
//! without a sled flush per commit.
//!
//! sled's flush is costly per call and not power-safe (`sync_file_range`, see `durable.rs`), so
//! the commit thread does not flush sled per cycle. It appends the cycle's writes to this log as
//! one checksummed entry, `fdatasync`s it, and only then applies them to sled; the
//! acknowledgements follow. sled is flushed and synced at a *checkpoint* (when the log has grown
//! or aged, and at shutdown), after which the log is truncated. Start-up replays whatever the log
//! holds onto sled before anything reads it.
//!
//! Why replay is correct: an entry holds absolute writes (put a value, delete a key), sled never
//! holds a write whose entry is not yet synced (applied after the sync), and sled's own recovery
//! yields a prefix of the batches applied to it. Replaying every entry in order over any such
//! prefix ends in the state after the last entry. A torn last entry (crash while appending)
//! fails its checksum and ends the replay: it was never synced, so never acknowledged.
//!
//! Entry layout (little-endian): `u32` payload length, `u32` CRC-32 of the payload, then the
//! payload: `u16` tree count and for each tree `u16` name length, name, `u32` write count and
//! for each write `u8` op (0 delete, 1 put), `u32` key length, key and, for a put, `u32` value
//! length and value. The file starts with [`MAGIC`], which names the layout's version.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// First bytes of a log file: format name and version.
pub const MAGIC: &[u8; 8] = b"CWAL\x00\x00\x00\x01";

/// One tree's writes in an entry, in order; `None` deletes the key.
pub struct TreeWrites {
    pub tree: Vec<u8>,
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// The open log, owned by the commit thread.
pub struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes in the file (the next entry's offset).
    len: u64,
    /// Set when a failed append could not be undone: later entries would sit behind garbage and
    /// be lost at replay, so every later append fails instead.
    broken: bool,
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Io(format!("cannot {what} {}: {err}", path.display()))
}

fn put_u16(out: &mut Vec<u8>, value: usize) -> Result<(), StoreError> {
    let value = u16::try_from(value)
        .map_err(|_| StoreError::Codec(format!("{value} does not fit the log's u16 field")))?;
    out.extend_from_slice(&value.to_le_bytes());
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, value: usize) -> Result<(), StoreError> {
    let value = u32::try_from(value)
        .map_err(|_| StoreError::Codec(format!("{value} does not fit the log's u32 field")))?;
    out.extend_from_slice(&value.to_le_bytes());
    Ok(())
}

/// Encodes one entry (framing included) ready to append.
pub fn encode_entry(trees: &[TreeWrites]) -> Result<Vec<u8>, StoreError> {
    let size: usize = trees
        .iter()
        .flat_map(|tree| tree.writes.iter())
        .map(|(key, value)| 13 + key.len() + value.as_ref().map_or(0, Vec::len))
        .sum();
    let mut out = Vec::with_capacity(8 + 2 + trees.len() * 64 + size);
    out.extend_from_slice(&[0; 8]);
    put_u16(&mut out, trees.len())?;
    for tree in trees {
        put_u16(&mut out, tree.tree.len())?;
        out.extend_from_slice(&tree.tree);
        put_u32(&mut out, tree.writes.len())?;
        for (key, value) in &tree.writes {
            out.push(u8::from(value.is_some()));
            put_u32(&mut out, key.len())?;
            out.extend_from_slice(key);
            if let Some(value) = value {
                put_u32(&mut out, value.len())?;
                out.extend_from_slice(value);
            }
        }
    }
    let payload_len = out.len() - 8;
    let crc = crc32fast::hash(&out[8..]);
    let len = u32::try_from(payload_len)
        .map_err(|_| StoreError::Codec("log entry over 4 GiB".to_owned()))?;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Reads the payload fields back; `None` on any inconsistency (a torn or foreign entry).
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < count {
            return None;
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<usize> {
        let bytes = self.take(2)?;
        Some(usize::from(u16::from_le_bytes([bytes[0], bytes[1]])))
    }

    fn u32(&mut self) -> Option<usize> {
        let bytes = self.take(4)?;
        let value = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        usize::try_from(value).ok()
    }
}

fn decode_payload(payload: &[u8]) -> Option<Vec<TreeWrites>> {
    let mut reader = Reader { bytes: payload };
    let tree_count = reader.u16()?;
    let mut trees = Vec::with_capacity(tree_count);
    for _ in 0..tree_count {
        let name_len = reader.u16()?;
        let tree = reader.take(name_len)?.to_vec();
        let write_count = reader.u32()?;
        let mut writes = Vec::with_capacity(write_count.min(payload.len()));
        for _ in 0..write_count {
            let op = reader.take(1)?[0];
            let key_len = reader.u32()?;
            let key = reader.take(key_len)?.to_vec();
            let value = match op {
                0 => None,
                1 => {
                    let value_len = reader.u32()?;
                    Some(reader.take(value_len)?.to_vec())
                }
                _ => return None,
            };
            writes.push((key, value));
        }
        trees.push(TreeWrites { tree, writes });
    }
    reader.bytes.is_empty().then_some(trees)
}

/// Splits a log file's bytes into its whole, intact entries; stops at the first torn one.
pub fn decode_entries(bytes: &[u8]) -> Vec<Vec<TreeWrites>> {
    let mut entries = Vec::new();
    let Some(mut rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return entries;
    };
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Ok(len) = usize::try_from(len) else { break };
        let Some(payload) = rest.get(8..8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(trees) = decode_payload(payload) else {
            break;
        };
        entries.push(trees);
        rest = &rest[8 + len..];
    }
    entries
}

impl Wal {
    /// Opens the log at `path`, which [`replay`] has emptied, for appending.
    pub fn open(path: &Path) -> Result<Wal, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|err| io_error("open", path, err))?;
        let mut wal = Wal {
            file,
            path: path.to_owned(),
            len: 0,
            broken: false,
        };
        wal.reset()?;
        Ok(wal)
    }

    /// Bytes in the log, header included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len <= MAGIC.len() as u64
    }

    /// Appends one encoded entry and syncs it: once this returns `Ok`, the entry survives a
    /// crash or a power loss.
    pub fn append(&mut self, entry: &[u8]) -> Result<(), StoreError> {
        if self.broken {
            return Err(StoreError::Io(format!(
                "the write-ahead log {} failed earlier and could not be repaired",
                self.path.display()
            )));
        }
        let written = self
            .file
            .write_all(entry)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += entry.len() as u64;
                Ok(())
            }
            Err(err) => {
                // Cut the partial entry off, so the next entry follows the last good one.
                let repaired = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(|_| ()));
                if repaired.is_err() {
                    self.broken = true;
                }
                Err(io_error("append to", &self.path, err))
            }
        }
    }

    /// Empties the log (after a checkpoint made its entries durable in sled), durably.
    pub fn reset(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let result = (|| {
            self.file.set_len(0)?;
            self.file.seek(SeekFrom::Start(0))?;
            self.file.write_all(MAGIC)?;
            self.file.sync_all()
        })();
        match result {
            Ok(()) => {
                self.len = MAGIC.len() as u64;
                self.broken = false;
                Ok(())
            }
            Err(err) => {
                self.broken = true;
                Err(io_error("reset", &path, err))
            }
        }
    }
}

/// Applies every intact entry of the log at `path` to `db`, in order, and makes the result
/// durable (flush + sync). Returns the number of entries replayed; a missing log is empty.
pub fn replay(
    path: &Path,
    db: &sled::Db,
    sync: impl FnOnce() -> Result<(), StoreError>,
) -> Result<usize, StoreError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes)
                .map_err(|err| io_error("read", path, err))?;
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(io_error("open", path, err)),
    }
    let entries = decode_entries(&bytes);
    if entries.is_empty() {
        return Ok(0);
    }
    for trees in &entries {
        for tree in trees {
            let mut batch = sled::Batch::default();
            for (key, value) in &tree.writes {
                match value {
                    Some(value) => batch.insert(key.as_slice(), value.as_slice()),
                    None => batch.remove(key.as_slice()),
                }
            }
            db.open_tree(&tree.tree)?.apply_batch(batch)?;
        }
    }
    db.flush()?;
    sync()?;
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<TreeWrites> {
        vec![
            TreeWrites {
                tree: b"jobs".to_vec(),
                writes: vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)],
            },
            TreeWrites {
                tree: b"chat".to_vec(),
                writes: vec![(b"m".to_vec(), Some(vec![0; 300]))],
            },
        ]
    }

    fn log_of(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for entry in entries {
            bytes.extend_from_slice(entry);
        }
        bytes
    }

    #[test]
    fn entries_round_trip() {
        let entry = encode_entry(&sample()).unwrap();
        let decoded = decode_entries(&log_of(&[entry.clone(), entry]));
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0][0].tree, b"jobs");
        assert_eq!(decoded[0][0].writes[1], (b"b".to_vec(), None));
        assert_eq!(decoded[1][1].writes[0].1.as_deref(), Some(&[0u8; 300][..]));
    }

    #[test]
    fn a_torn_or_corrupt_entry_ends_the_log() {
        let entry = encode_entry(&sample()).unwrap();
        for cut in 1..entry.len() {
            let bytes = log_of(&[entry.clone(), entry[..cut].to_vec()]);
            assert_eq!(decode_entries(&bytes).len(), 1, "cut at {cut}");
        }
        let mut flipped = entry.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(decode_entries(&log_of(&[flipped, entry])).len(), 0);
        assert!(decode_entries(b"not a log").is_empty());
    }

    #[test]
    fn replay_applies_intact_entries_in_order_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.wal");
        let first = encode_entry(&[TreeWrites {
            tree: b"jobs".to_vec(),
            writes: vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), Some(b"1".to_vec())),
            ],
        }])
        .unwrap();
        let second = encode_entry(&[TreeWrites {
            tree: b"jobs".to_vec(),
            writes: vec![(b"a".to_vec(), Some(b"2".to_vec())), (b"b".to_vec(), None)],
        }])
        .unwrap();
        let torn = encode_entry(&[TreeWrites {
            tree: b"jobs".to_vec(),
            writes: vec![(b"a".to_vec(), Some(b"3".to_vec()))],
        }])
        .unwrap();
        let mut bytes = log_of(&[first, second]);
        bytes.extend_from_slice(&torn[..torn.len() - 1]);
        std::fs::write(&path, bytes).unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        // Sled already holding the first entry (a crash after part of the apply) changes nothing.
        db.open_tree("jobs").unwrap().insert("a", "1").unwrap();
        let mut synced = false;

        let replayed = replay(&path, &db, || {
            synced = true;
            Ok(())
        })
        .unwrap();

        assert_eq!(replayed, 2);
        assert!(synced, "replay must make its result durable");
        let jobs = db.open_tree("jobs").unwrap();
        assert_eq!(jobs.get("a").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(jobs.get("b").unwrap(), None);
        // Opening the log for appending starts it afresh.
        let wal = Wal::open(&path).unwrap();
        assert!(wal.is_empty());
        assert_eq!(replay(&path, &db, || Ok(())).unwrap(), 0);
    }
}
