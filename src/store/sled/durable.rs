//! What sled's `flush` leaves undone: making the flushed bytes survive a power loss.
//!
//! sled 0.34 ends a flush with `sync_file_range`, which pushes the written pages to the device
//! but neither asks the device to empty its write cache nor records a grown file size. That
//! survives the process dying (`kill -9`) but not the machine losing power. [`Durable::sync`]
//! completes each flush: `fdatasync` on the log file, and, when sled wrote records too large to
//! sit in the log (its "blobs", one file each), `fsync` on every new blob file and on the blob
//! directory, so their names survive too.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::store::StoreError;

/// Syncs what a flush wrote; owned by the commit thread.
pub(super) struct Durable {
    log: File,
    blobs: PathBuf,
    /// The blob directory's modification time when it was last synced.
    blobs_seen: Option<SystemTime>,
    /// Blob files already synced (pruned to the ones still present).
    synced: HashSet<OsString>,
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Io(format!("cannot {what} {}: {err}", path.display()))
}

/// `fsync` on a directory, so the entries created in it are durable.
pub(super) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| io_error("sync the directory", path, err))
}

impl Durable {
    /// Opens the log file of the database in `dir` (sled's `db` file) for syncing, and syncs
    /// the directories so a database created by this start-up is durable itself.
    pub(super) fn open(dir: &Path) -> Result<Durable, StoreError> {
        let path = dir.join("db");
        let log = File::open(&path).map_err(|err| io_error("open", &path, err))?;
        log.sync_all().map_err(|err| io_error("sync", &path, err))?;
        sync_dir(dir)?;
        let mut durable = Durable {
            log,
            blobs: dir.join("blobs"),
            blobs_seen: None,
            synced: HashSet::new(),
        };
        durable.sync_blobs()?;
        Ok(durable)
    }

    /// Makes everything sled has flushed durable; call after each `flush`.
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        self.log
            .sync_data()
            .map_err(|err| StoreError::Io(format!("cannot sync the database log: {err}")))?;
        self.sync_blobs()
    }

    /// Syncs new blob files and the blob directory, when the directory changed since last time
    /// (one `stat` otherwise: blobs are rare, as only records over a quarter of a segment are).
    fn sync_blobs(&mut self) -> Result<(), StoreError> {
        let modified = match std::fs::metadata(&self.blobs) {
            Ok(meta) => meta.modified().ok(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(io_error("read", &self.blobs, err)),
        };
        if modified.is_some() && modified == self.blobs_seen {
            return Ok(());
        }
        let entries =
            std::fs::read_dir(&self.blobs).map_err(|err| io_error("list", &self.blobs, err))?;
        let mut present = HashSet::new();
        for entry in entries {
            let entry = entry.map_err(|err| io_error("list", &self.blobs, err))?;
            let name = entry.file_name();
            if !self.synced.contains(&name) {
                let path = entry.path();
                match File::open(&path) {
                    Ok(file) => file
                        .sync_all()
                        .map_err(|err| io_error("sync", &path, err))?,
                    // sled removed it meanwhile (a blob replaced by a newer version).
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(io_error("open", &path, err)),
                }
            }
            present.insert(name);
        }
        sync_dir(&self.blobs)?;
        self.synced = present;
        self.blobs_seen = modified;
        Ok(())
    }
}
