//! An open sled database: sled itself, its write-ahead logs (replayed at open) and the one
//! commit thread every store of the database shares.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::committer::{Committer, LogFiles};
use super::durable::Durable;
use super::wal::open_logs;
use crate::store::StoreError;

/// An open sled database, with its write-ahead log (`wal.rs`) for the one commit thread.
#[derive(Clone)]
pub struct Database {
    pub(super) db: sled::Db,
    /// The logs (the one to append to, the spare) and the syncer, until the commit thread
    /// takes them.
    log: Arc<Mutex<Option<LogFiles>>>,
    /// A handle on the commit thread once one store started it: the next store shares it, so
    /// every store of the database commits through one log, whichever opens first.
    pipeline: Arc<Mutex<Option<Committer>>>,
}

impl Database {
    /// Opens sled in `dir` and replays the write-ahead logs in `log_dir` onto it.
    pub(super) fn open(db: sled::Db, dir: &Path, log_dir: &Path) -> Result<Database, StoreError> {
        let mut durable = Durable::open(dir)?;
        let opened = open_logs(log_dir, &db, || durable.sync())?;
        if opened.replayed > 0 {
            tracing::info!(entries = opened.replayed, "replayed the write-ahead log");
        }
        Ok(Database {
            db,
            log: Arc::new(Mutex::new(Some((opened.log, opened.spare, durable)))),
            pipeline: Arc::new(Mutex::new(None)),
        })
    }

    /// A commit handle for `tree` (see [`Committer::start`] for the other arguments): the first
    /// call starts the database's commit thread, later ones share it. A store opens with this
    /// alone, so the job store and the chat store open independently of each other.
    pub(super) fn committer(
        &self,
        tree: sled::Tree,
        counter_key: Vec<u8>,
        counter_start: u64,
        overlay: bool,
    ) -> Result<Committer, StoreError> {
        let mut pipeline = self.pipeline.lock();
        if let Some(running) = pipeline.as_ref() {
            return Ok(running.share(tree, counter_key, counter_start, overlay));
        }
        let started = Committer::start(
            &self.db,
            self.take_log()?,
            tree,
            counter_key,
            counter_start,
            overlay,
        )?;
        *pipeline = Some(started.handle());
        Ok(started)
    }

    /// The sled handle.
    pub fn sled(&self) -> &sled::Db {
        &self.db
    }

    /// The log for the commit thread; one per database, as two writers would interleave.
    pub(super) fn take_log(&self) -> Result<LogFiles, StoreError> {
        self.log
            .lock()
            .take()
            .ok_or_else(|| StoreError::Io("this database already has a commit thread".to_owned()))
    }
}
