//! The embedded sled backend (the default): everything lives in `DATA_DIR/db`, and the
//! write-ahead logs beside it (`DATA_DIR/db-0.wal`, `DATA_DIR/db-1.wal`).

mod chat;
mod committer;
mod durable;
mod jobs;
mod prefill;
mod wal;

use std::path::Path;

pub use chat::SledChatStore;
pub use durable::Database;
pub use jobs::SledJobStore;

use super::StoreError;

/// Opens (or creates) the sled database under `data_dir`.
pub fn open_db(data_dir: &Path) -> Result<Database, StoreError> {
    let dir = data_dir.join("db");
    let db = sled::Config::new()
        .path(&dir)
        // The job indexes live in memory already; sled's page cache only needs the hot records.
        .cache_capacity(64 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|err| {
            StoreError::Io(format!(
                "cannot open the database in {}: {err}",
                data_dir.display()
            ))
        })?;
    Database::open(db, &dir, data_dir)
}
