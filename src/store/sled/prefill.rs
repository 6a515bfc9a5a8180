//! Zeros written ahead of each write-ahead log's end, so that appends overwrite blocks the file
//! already holds.
//!
//! A synchronous write that grows a file also has to make the new size and the newly allocated
//! blocks durable (a file-system journal commit); one into blocks the file already holds needs
//! only the data on the device. Measured on the 2-core benchmark machine (ext4 on virtio),
//! 8 KiB `O_DIRECT | O_DSYNC` writes one after another: 4,071–5,810 writes/s at p50 0.17–0.24 ms
//! when each grows the file, 7,957–8,622 at p50 0.10–0.11 ms into blocks written before.
//! (`fallocate` does not help: its blocks are "unwritten" and the first write to each still
//! commits the journal; 3,652–4,115 writes/s.) A log keeps the size it once grew to (`wal.rs`),
//! so only its first pass through the file paid this, but that is a new server's whole first
//! 32 MiB of commits, and every benchmark.
//!
//! One thread serves both logs of a database. It keeps [`AHEAD`] bytes of zeros written
//! beyond each log's end, [`CHUNK`] at a time, and never closer to the end than [`GAP`]; the
//! commit thread wakes it when a log's margin falls under half of that. The commit thread
//! never waits for it, except to not write into a chunk that is being written this instant
//! (only possible if appends outrun it by [`AHEAD`]). The zeros are never read as entries: a
//! zero length ends a replay, and nothing acknowledged lies beyond a log's end. It leaves
//! [`MIN_FREE`] of the file system free.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::block::{padded_buffer, BLOCK};

/// Bytes of zeros kept written beyond a log's end.
pub const AHEAD: u64 = 4 * 1024 * 1024;
/// Bytes written per filler write.
pub const CHUNK: u64 = 256 * 1024;
/// The filler starts no closer than this to a log's end: the commit thread's next few entries
/// go there, and must not wait for a chunk.
pub const GAP: u64 = 64 * 1024;
/// How soon a failed fill (a full disk) is tried again, at the latest.
const RETRY: Duration = Duration::from_secs(5);
/// The filler leaves the file system at least this much room: on a nearly full disk the last
/// megabytes go to what the server is asked to store, and appends grow the file themselves.
const MIN_FREE: u64 = 256 * 1024 * 1024;

/// A log file as the filler sees it.
pub struct FillTarget {
    file: Arc<File>,
    direct: bool,
    path: PathBuf,
    state: Mutex<FillState>,
    /// Signalled when a chunk is done.
    chunk_done: Condvar,
}

#[derive(Default)]
struct FillState {
    /// The log's end as the commit thread last reported it.
    end: u64,
    /// Where the zeros (or older data) the filler can count on end: the file's size at
    /// start, then the end of its last chunk.
    ahead: u64,
    /// The chunk being written now.
    busy: Option<(u64, u64)>,
    /// A wake-up is on its way to the filler.
    woken: bool,
}

/// What a log holds when a filler serves it.
pub struct Ahead {
    target: Arc<FillTarget>,
    wake: mpsc::Sender<Wake>,
}

enum Wake {
    Work,
    Stop,
}

impl Ahead {
    /// Called before the log writes `[offset, end)`: waits while a chunk being written overlaps
    /// it, records `end` as the log's end (so a reset's header write makes it the header's end
    /// again), and wakes the filler when the margin runs low.
    pub fn before_write(&self, offset: u64, end: u64) {
        let mut state = self.target.state.lock();
        while state
            .busy
            .is_some_and(|(start, stop)| offset < stop && start < end)
        {
            self.target.chunk_done.wait(&mut state);
        }
        state.end = end;
        if state.ahead < end + AHEAD / 2 && !state.woken {
            state.woken = true;
            let _ = self.wake.send(Wake::Work);
        }
    }
}

/// The filler thread of one database's logs. Dropping it stops the thread once its current
/// chunk is written; after that no filler write can land in the logs, so they may be opened
/// again.
pub struct Prefiller {
    wake: mpsc::Sender<Wake>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FillTarget {
    /// A log file to fill: `size` bytes of it are written already; its end is at `end`.
    pub fn new(file: Arc<File>, direct: bool, path: PathBuf, size: u64, end: u64) -> FillTarget {
        FillTarget {
            file,
            direct,
            path,
            state: Mutex::new(FillState {
                end,
                ahead: size - size % BLOCK as u64,
                busy: None,
                woken: false,
            }),
            chunk_done: Condvar::new(),
        }
    }
}

impl Prefiller {
    /// Starts the thread for these logs and returns it with each log's [`Ahead`] handle.
    pub fn start(targets: Vec<Arc<FillTarget>>) -> std::io::Result<(Prefiller, Vec<Ahead>)> {
        let (wake, woken) = mpsc::channel();
        let handles = targets
            .iter()
            .map(|target| Ahead {
                target: target.clone(),
                wake: wake.clone(),
            })
            .collect();
        let thread = thread::Builder::new()
            .name("courier-log-fill".to_owned())
            .spawn(move || fill_loop(&targets, &woken))?;
        // Fill both logs from the start.
        let _ = wake.send(Wake::Work);
        Ok((
            Prefiller {
                wake,
                thread: Some(thread),
            },
            handles,
        ))
    }
}

impl Drop for Prefiller {
    fn drop(&mut self) {
        let _ = self.wake.send(Wake::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn fill_loop(targets: &[Arc<FillTarget>], woken: &mpsc::Receiver<Wake>) {
    let mut buffer = Vec::new();
    let mut retry_later = false;
    loop {
        let wake = if retry_later {
            woken.recv_timeout(RETRY).unwrap_or(Wake::Work)
        } else {
            match woken.recv() {
                Ok(wake) => wake,
                Err(_) => Wake::Stop,
            }
        };
        if let Wake::Stop = wake {
            return;
        }
        retry_later = false;
        for target in targets {
            if let Err(err) = fill(target, &mut buffer, woken) {
                match err {
                    Stopped::Asked => return,
                    Stopped::Failed(err) => {
                        // Appends grow the file themselves meanwhile, as without a filler.
                        tracing::debug!(path = %target.path.display(), error = %err, "cannot write ahead of the write-ahead log");
                        retry_later = true;
                    }
                }
            }
        }
    }
}

enum Stopped {
    Asked,
    Failed(std::io::Error),
}

/// Writes chunks until `target` has [`AHEAD`] bytes written beyond its end.
fn fill(
    target: &FillTarget,
    buffer: &mut Vec<u8>,
    woken: &mpsc::Receiver<Wake>,
) -> Result<(), Stopped> {
    loop {
        if let Ok(Wake::Stop) = woken.try_recv() {
            return Err(Stopped::Asked);
        }
        let dir = match target.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let free = fs4::available_space(dir).map_err(Stopped::Failed)?;
        if free < MIN_FREE + CHUNK {
            return Err(Stopped::Failed(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("{free} bytes free, the filler leaves {MIN_FREE}"),
            )));
        }
        let (start, stop) = {
            let mut state = target.state.lock();
            state.woken = false;
            if state.ahead >= state.end + AHEAD {
                return Ok(());
            }
            let start = state.ahead.max(state.end + GAP);
            let start = start.next_multiple_of(BLOCK as u64);
            state.busy = Some((start, start + CHUNK));
            (start, start + CHUNK)
        };
        let written = write_zeros(target, buffer, start, stop);
        let mut state = target.state.lock();
        state.busy = None;
        if written.is_ok() {
            state.ahead = stop;
        }
        drop(state);
        target.chunk_done.notify_all();
        written.map_err(Stopped::Failed)?;
    }
}

fn write_zeros(
    target: &FillTarget,
    buffer: &mut Vec<u8>,
    start: u64,
    stop: u64,
) -> std::io::Result<()> {
    let len = usize::try_from(stop - start).unwrap_or(usize::MAX);
    let zeros = padded_buffer(buffer, len);
    target.file.write_all_at(zeros, start)?;
    if !target.direct {
        target.file.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    /// Appends that outrun the filler and appends it runs ahead of: not one block of theirs is
    /// ever overwritten by its zeros, and it ends up at least half of [`AHEAD`] beyond the end
    /// (it is woken below that, and then fills to [`AHEAD`]).
    #[test]
    fn the_filler_never_writes_over_an_append_and_keeps_ahead() {
        let dir = tempfile::tempdir().unwrap();
        if fs4::available_space(dir.path()).unwrap() < MIN_FREE + 2 * AHEAD {
            eprintln!("skipped: the filler would not write with this little room free");
            return;
        }
        let path = dir.path().join("log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let file = Arc::new(file);
        let block = BLOCK as u64;
        let target = Arc::new(FillTarget::new(file.clone(), false, path, 0, block));
        let (filler, mut aheads) = Prefiller::start(vec![target.clone()]).unwrap();
        let ahead = aheads.remove(0);
        let blocks = 3_000u64;
        for index in 0..blocks {
            let offset = block + index * block;
            ahead.before_write(offset, offset + block);
            let pattern = vec![(index % 251 + 1) as u8; BLOCK];
            file.write_all_at(&pattern, offset).unwrap();
            if index % 500 == 0 {
                // Let the filler catch up now and then, so both orders happen.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let end = block + blocks * block;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while target.state.lock().ahead < end + AHEAD / 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the filler fell behind for good"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(filler);
        let size = file.metadata().unwrap().len();
        assert!(size >= end + AHEAD / 2, "{size} bytes, end at {end}");
        let mut read = vec![0; BLOCK];
        for index in 0..blocks {
            file.read_exact_at(&mut read, block + index * block)
                .unwrap();
            let expected = (index % 251 + 1) as u8;
            assert!(
                read.iter().all(|byte| *byte == expected),
                "block {index} was overwritten"
            );
        }
    }
}
