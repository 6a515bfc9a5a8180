//! The commit thread's side of the pipeline: gathering commits into cycles, appending each
//! cycle to the write-ahead log, applying it to sled, and checkpointing.

use super::*;

/// One tree's part of a commit cycle: its writes, and its counter before the cycle.
pub(super) struct TreeCycle {
    target: Arc<Target>,
    writes: Vec<KeyWrite>,
    /// For each write, whether it was a [`Write::PutNew`].
    fresh: Vec<bool>,
    counter_before: u64,
}

/// One key's write: a value to put, or `None` to delete.
pub(super) type KeyWrite = (Vec<u8>, Option<Vec<u8>>);

/// A tree and the writes a cycle makes to it, in order, ready to apply.
pub(super) struct TreeApply {
    target: Arc<Target>,
    writes: Vec<KeyWrite>,
    /// For each write, whether it was a [`Write::PutNew`].
    fresh: Vec<bool>,
}

/// How soon a failed checkpoint is tried again.
pub(super) const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);

/// What the commit thread hands the apply thread, in order.
pub(super) enum Stage {
    /// A logged (or failed) cycle: apply its writes, then settle its commits.
    Cycle {
        commits: Vec<Commit>,
        writes: Vec<TreeApply>,
        logged: Result<(), StoreError>,
    },
    /// Every cycle of `log` is applied (the commit thread appends to the other log now): move
    /// the overlays' slots into sled and then hand `log` to the checkpoint thread. `last`: the
    /// commit thread is stopping, and `log` is the one it appended to last.
    Checkpoint { log: Wal, last: bool },
}

/// A log whose every entry sled holds (in memory), for the checkpoint thread to make durable.
pub(super) struct Handoff {
    log: Wal,
    last: bool,
}

/// The emptied log the commit thread switches to at the next checkpoint; the checkpoint thread
/// puts it back once the previous checkpoint is done.
pub(super) type Spare = Arc<Mutex<Option<Wal>>>;

pub(super) fn spawn(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> Option<thread::JoinHandle<()>> {
    match thread::Builder::new().name(name.to_owned()).spawn(body) {
        Ok(handle) => Some(handle),
        Err(err) => {
            tracing::error!(error = %err, thread = name, "cannot start a storage thread; nothing will commit");
            None
        }
    }
}

/// Starts the thread that keeps zeros written ahead of both logs' ends (`prefill.rs`); without
/// it (it could not start) appends grow the files themselves, only slower.
pub(super) fn start_prefiller(wal: &mut Wal, spare: &mut Wal) -> Option<Prefiller> {
    let started = wal
        .fill_target()
        .and_then(|first| Ok(vec![Arc::new(first), Arc::new(spare.fill_target()?)]))
        .and_then(|targets| {
            Prefiller::start(targets)
                .map_err(|err| StoreError::Io(format!("cannot start the log filler thread: {err}")))
        });
    match started {
        Ok((prefiller, aheads)) => {
            let mut aheads = aheads.into_iter();
            if let (Some(first), Some(second)) = (aheads.next(), aheads.next()) {
                wal.attach(first);
                spare.attach(second);
            }
            Some(prefiller)
        }
        Err(err) => {
            tracing::warn!(error = %err, "the write-ahead logs grow as they go");
            None
        }
    }
}

/// What the commit thread starts with.
pub(super) struct Logs {
    /// The log to append to.
    pub(super) wal: Wal,
    /// The emptied log for the first switch.
    pub(super) spare: Wal,
    pub(super) durable: Durable,
}

pub(super) fn run(
    db: sled::Db,
    logs: Logs,
    policy: CheckpointPolicy,
    receiver: mpsc::Receiver<Commit>,
    counters: Arc<Counters>,
) {
    let Logs {
        mut wal,
        spare,
        durable,
    } = logs;
    // Three stages. This thread logs and syncs each cycle; the apply thread applies the
    // previous one to sled meanwhile (the device's latency overlaps sled's CPU work) and
    // settles it; the checkpoint thread flushes and syncs sled while both go on.
    let spare: Spare = Arc::new(Mutex::new(Some(spare)));
    let (to_checkpoint, handoffs) = mpsc::channel::<Handoff>();
    let (to_apply, applying) = mpsc::channel::<Stage>();
    let checkpoint_thread = {
        let (db, spare, counters) = (db.clone(), spare.clone(), counters.clone());
        spawn("courier-checkpoint", move || {
            checkpoint_loop(db, durable, handoffs, spare, &counters);
        })
    };
    let apply_thread = {
        let counters = counters.clone();
        spawn("courier-apply", move || {
            apply_loop(applying, to_checkpoint, &counters.errors, &counters.failed);
        })
    };
    let (Some(apply_thread), Some(checkpoint_thread)) = (apply_thread, checkpoint_thread) else {
        return;
    };
    let mut commits = Vec::new();
    // When the log last went from empty to holding an entry.
    let mut oldest_entry: Option<Instant> = None;
    loop {
        let first = match receiver.recv_timeout(policy.age) {
            Ok(first) => first,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !wal.is_empty() && switch_logs(&to_apply, &mut wal, &spare) {
                    oldest_entry = None;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        commits.push(first);
        gather(&receiver, &mut commits, Instant::now() + UNAWAITED_WAIT);
        let (writes, logged) = log_cycle(&mut wal, &mut commits, &counters);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        let stage = Stage::Cycle {
            commits: std::mem::take(&mut commits),
            writes,
            logged,
        };
        if to_apply.send(stage).is_err() {
            tracing::error!("the apply thread stopped; nothing more will commit");
            break;
        }
        if wal.is_empty() {
            continue;
        }
        let since = *oldest_entry.get_or_insert_with(Instant::now);
        let due = wal.len() >= policy.bytes || since.elapsed() >= policy.age;
        if due && switch_logs(&to_apply, &mut wal, &spare) {
            oldest_entry = None;
        }
    }
    // The last checkpoint: sled ends up holding everything, and both logs end up empty.
    let _ = to_apply.send(Stage::Checkpoint {
        log: wal,
        last: true,
    });
    drop(to_apply);
    let _ = apply_thread.join();
    let _ = checkpoint_thread.join();
}

/// How long a cycle of writes nobody waits for (takes, completions, log lines) waits for one
/// that somebody does, to share its sync: at a steady trickle of adds this halves the syncs.
/// A crash in between costs nothing acknowledged: such writes are replayed or recovered as
/// stalled jobs either way (ARCHITECTURE.md, durability rule 5).
pub(super) const UNAWAITED_WAIT: Duration = Duration::from_millis(5);

/// Adds whatever else is queued to `commits`; while none of them is awaited, waits until
/// `deadline` for one that is.
pub(super) fn gather(
    receiver: &mpsc::Receiver<Commit>,
    commits: &mut Vec<Commit>,
    deadline: Instant,
) {
    let awaited = |commit: &Commit| commit.ack.is_some() || commit.after.is_some();
    let mut any_awaited = commits.iter().any(awaited);
    while commits.len() < MAX_COMMITS_PER_BATCH {
        let next = match receiver.try_recv() {
            Ok(next) => next,
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) if any_awaited => break,
            Err(mpsc::TryRecvError::Empty) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match receiver.recv_timeout(left) {
                    Ok(next) => next,
                    Err(_) => break,
                }
            }
        };
        any_awaited |= awaited(&next);
        commits.push(next);
    }
}

/// Starts a checkpoint: moves the commit thread to the spare log and sends the old one down the
/// pipeline. `false` (and nothing changes) while the previous checkpoint is still running.
pub(super) fn switch_logs(to_apply: &mpsc::Sender<Stage>, wal: &mut Wal, spare: &Spare) -> bool {
    let Some(next) = spare.lock().take() else {
        return false;
    };
    let log = std::mem::replace(wal, next);
    if to_apply
        .send(Stage::Checkpoint { log, last: false })
        .is_err()
    {
        tracing::error!("the apply thread stopped; nothing more will commit");
    }
    true
}

/// The trees' writes of one cycle, ready to apply, with whether logging them worked.
/// A tree of a cycle, with which of its writes were [`Write::PutNew`].
pub(super) type TargetFresh = (Arc<Target>, Vec<bool>);

pub(super) type Logged = (Vec<TreeApply>, Result<(), StoreError>);

/// Gathers one cycle's writes by tree and logs them as one synced entry.
pub(super) fn log_cycle(wal: &mut Wal, commits: &mut [Commit], counters: &Counters) -> Logged {
    // A database has a handful of trees: a linear search finds a commit's.
    let mut trees: Vec<TreeCycle> = Vec::new();
    for commit in commits.iter_mut() {
        let index = match trees
            .iter()
            .position(|tree| Arc::ptr_eq(&tree.target, &commit.target))
        {
            Some(index) => index,
            None => {
                let counter_before = *commit.target.counter_written.lock();
                trees.push(TreeCycle {
                    target: commit.target.clone(),
                    writes: Vec::new(),
                    fresh: Vec::new(),
                    counter_before,
                });
                trees.len() - 1
            }
        };
        let tree = &mut trees[index];
        let mut written = tree.target.counter_written.lock();
        if commit.counter > *written {
            *written = commit.counter;
            tree.writes.push((
                tree.target.counter_key.clone(),
                Some(commit.counter.to_be_bytes().to_vec()),
            ));
            tree.fresh.push(false);
        }
        drop(written);
        for write in commit.writes.drain(..) {
            let (write, fresh) = match write {
                Write::Put(key, value) => ((key, Some(value)), false),
                Write::PutNew(key, value) => ((key, Some(value)), true),
                Write::Delete(key) => ((key, None), false),
            };
            tree.writes.push(write);
            tree.fresh.push(fresh);
        }
    }
    // Trees without writes in this cycle (an empty durable commit) are left out of both.
    let (targets, logged): (Vec<TargetFresh>, Vec<TreeWrites>) = trees
        .iter_mut()
        .filter(|tree| !tree.writes.is_empty())
        .map(|tree| {
            let logged = TreeWrites {
                tree: tree.target.tree.name().to_vec(),
                writes: std::mem::take(&mut tree.writes),
            };
            (
                (tree.target.clone(), std::mem::take(&mut tree.fresh)),
                logged,
            )
        })
        .unzip();
    let result = if logged.is_empty() {
        Ok(())
    } else {
        let started = Instant::now();
        let appended = encode_entry(&logged, wal.epoch()).and_then(|entry| wal.append(&entry));
        if appended.is_ok() {
            let took = started.elapsed();
            counters.record_commit_time(took);
            metrics::histogram!(telemetry::STORAGE_COMMIT_DURATION).record(took.as_secs_f64());
        }
        appended
    };
    if let Err(err) = &result {
        for tree in &trees {
            *tree.target.counter_written.lock() = tree.counter_before;
        }
        counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %err, "storage commit failed");
    }
    let writes = targets
        .into_iter()
        .zip(logged)
        .map(|((target, fresh), logged)| TreeApply {
            target,
            writes: logged.writes,
            fresh,
        })
        .collect();
    (writes, result)
}

/// The apply thread: applies each logged cycle to sled (or a tree's overlay), then settles it:
/// runs its after-commit callbacks and sends its acknowledgements. At a checkpoint it moves the
/// overlays' slots that arrived before it into sled, a chunk after each cycle (or after a short
/// idle wait), and then passes the old log on: cycles keep being applied and acknowledged
/// meanwhile.
pub(super) fn apply_loop(
    stages: mpsc::Receiver<Stage>,
    to_checkpoint: mpsc::Sender<Handoff>,
    errors: &AtomicU64,
    failed: &Failure,
) {
    // Trees whose overlay took writes since the last checkpoint.
    let mut overlaid: Vec<Arc<Target>> = Vec::new();
    // Checkpoints whose logs wait for their slots to reach sled, oldest first.
    let mut folding: VecDeque<Folding> = VecDeque::new();
    // After a failed step of a fold: when to try again (not after every cycle, which would log
    // an error thousands of times a second).
    let mut retry_at: Option<Instant> = None;
    let step = |folding: &mut VecDeque<Folding>, retry_at: &mut Option<Instant>| {
        if folding.is_empty() || retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let moved = advance(folding, &to_checkpoint, errors);
        *retry_at = (!moved).then(|| Instant::now() + CHECKPOINT_RETRY);
    };
    loop {
        let received = if folding.is_empty() {
            stages
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            let wait = retry_at.map_or(FOLD_IDLE, |at| {
                at.saturating_duration_since(Instant::now()).max(FOLD_IDLE)
            });
            stages.recv_timeout(wait)
        };
        let stage = match received {
            Ok(stage) => stage,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                step(&mut folding, &mut retry_at);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match stage {
            Stage::Cycle {
                commits,
                writes,
                logged,
            } => {
                for tree in &writes {
                    if tree.target.overlay.is_some()
                        && !overlaid.iter().any(|seen| Arc::ptr_eq(seen, &tree.target))
                    {
                        overlaid.push(tree.target.clone());
                    }
                }
                let result = logged.and_then(|()| {
                    apply(writes).inspect_err(|err| {
                        // Logged but not applied: the replay at the next start applies it.
                        errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %err, "storage apply failed");
                        failed.set(err.to_string());
                    })
                });
                for commit in commits {
                    if let Some(after) = commit.after {
                        after(&result);
                    }
                    if let Some(ack) = commit.ack {
                        let _ = ack.send(result.clone());
                    }
                }
                for target in &overlaid {
                    if let Some(overlay) = &target.overlay {
                        if let Err(err) = overlay.age_out(&target.tree) {
                            // The slots stay in the overlay; the checkpoint moves them.
                            tracing::error!(error = %err, "storage apply failed");
                            failed.set(err.to_string());
                        }
                    }
                }
                step(&mut folding, &mut retry_at);
            }
            Stage::Checkpoint { log, last: false } => {
                let trees = overlaid
                    .drain(..)
                    .filter_map(|target| {
                        let boundary = target.overlay.as_ref()?.boundary();
                        Some((target, boundary))
                    })
                    .collect();
                folding.push_back(Folding {
                    trees,
                    handoff: Handoff { log, last: false },
                });
                step(&mut folding, &mut retry_at);
            }
            Stage::Checkpoint { log, last: true } => {
                finish(&mut folding, &mut overlaid, log, &to_checkpoint, errors);
            }
        }
    }
}

/// A checkpoint whose log waits for the overlays to move the slots that arrived before it.
pub(super) struct Folding {
    /// The trees with slots to move, each with the arrival number its slots are below.
    trees: Vec<(Arc<Target>, u64)>,
    handoff: Handoff,
}

/// Moves the next chunk of the oldest pending checkpoint's slots into sled, and hands every log
/// whose slots are all in sled to the checkpoint thread. `false` if sled refused a write (the
/// slots stay in the overlay, the log is kept, and a later call tries again).
pub(super) fn advance(
    folding: &mut VecDeque<Folding>,
    to_checkpoint: &mpsc::Sender<Handoff>,
    errors: &AtomicU64,
) -> bool {
    while let Some(front) = folding.front_mut() {
        while let Some((target, boundary)) = front.trees.last() {
            let step = match &target.overlay {
                Some(overlay) => overlay.fold_step(&target.tree, *boundary, FOLD_CHUNK),
                None => Ok(true),
            };
            match step {
                Ok(true) => {
                    front.trees.pop();
                }
                Ok(false) => return true,
                Err(err) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %err, "storage checkpoint failed");
                    return false;
                }
            }
        }
        if let Some(done) = folding.pop_front() {
            if to_checkpoint.send(done.handoff).is_err() {
                tracing::error!("the checkpoint thread stopped; the logs keep growing");
            }
        }
    }
    true
}

/// The last checkpoint, at close: every overlay moves into sled at once, then every log still
/// held goes to the checkpoint thread, `log` last. On failure the logs stay for the replay.
pub(super) fn finish(
    folding: &mut VecDeque<Folding>,
    overlaid: &mut Vec<Arc<Target>>,
    log: Wal,
    to_checkpoint: &mpsc::Sender<Handoff>,
    errors: &AtomicU64,
) {
    let mut targets: Vec<Arc<Target>> = std::mem::take(overlaid);
    for (target, _) in folding.iter().flat_map(|pending| &pending.trees) {
        if !targets.iter().any(|seen| Arc::ptr_eq(seen, target)) {
            targets.push(target.clone());
        }
    }
    let folded = targets.iter().try_for_each(|target| match &target.overlay {
        Some(overlay) => overlay.fold_into(&target.tree),
        None => Ok(()),
    });
    if let Err(err) = folded {
        errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %err, "storage checkpoint failed");
        return;
    }
    // sled holds every slot now; reads find the same values there.
    for target in &targets {
        if let Some(overlay) = &target.overlay {
            overlay.clear();
        }
    }
    let handoffs = folding
        .drain(..)
        .map(|pending| pending.handoff)
        .chain([Handoff { log, last: true }]);
    for handoff in handoffs {
        if to_checkpoint.send(handoff).is_err() {
            tracing::error!("the checkpoint thread stopped; the logs keep growing");
        }
    }
}

/// The checkpoint thread: flushes sled and syncs its files, then empties the logs handed over
/// (oldest first) and offers the emptied log as the next spare. On failure it keeps the logs
/// (start-up would replay them) and tries again a little later.
pub(super) fn checkpoint_loop(
    db: sled::Db,
    mut durable: Durable,
    handoffs: mpsc::Receiver<Handoff>,
    spare: Spare,
    counters: &Counters,
) {
    // Logs whose entries sled holds but not yet durably, oldest first.
    let mut pending: Vec<Wal> = Vec::new();
    let mut stopping = false;
    loop {
        let handoff = if pending.is_empty() {
            match handoffs.recv() {
                Ok(handoff) => Some(handoff),
                Err(_) => break,
            }
        } else {
            match handoffs.recv_timeout(CHECKPOINT_RETRY) {
                Ok(handoff) => Some(handoff),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        };
        if let Some(Handoff { log, last }) = handoff {
            pending.push(log);
            stopping |= last;
        }
        let synced = db
            .flush()
            .map_err(StoreError::from)
            .and_then(|_| durable.sync());
        if let Err(err) = synced {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %err, "storage checkpoint failed; the log is kept");
            if stopping {
                break;
            }
            continue;
        }
        while !pending.is_empty() {
            let log = &mut pending[0];
            // The other log holds epoch + 1 (or is the spare, empty, with it): + 2 is newer than
            // anything either file holds.
            let epoch = log.epoch() + 2;
            if let Err(err) = log.reset(epoch) {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %err, "cannot empty the write-ahead log; trying again");
                break;
            }
            let log = pending.remove(0);
            counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            if !stopping {
                *spare.lock() = Some(log);
            }
        }
        if stopping && pending.is_empty() {
            break;
        }
    }
}

/// Applies one cycle's writes, key by key. The cycle is already durable in the log, which is
/// what makes it atomic: a crash part-way leaves sled with some of its keys, and the replay at
/// start-up writes them all. Not `apply_batch`: each sled batch seals sled's log buffer and hands
/// its write to sled's I/O pool, waking every thread of the pool (measured: ~190 µs of CPU per
/// batch on this machine), while single-key writes wait in the buffer for the next checkpoint.
pub(super) fn apply(writes: Vec<TreeApply>) -> Result<(), StoreError> {
    for TreeApply {
        target,
        writes,
        fresh,
    } in writes
    {
        if let Some(overlay) = &target.overlay {
            overlay.apply(writes, fresh);
            continue;
        }
        // Only the last write of a key in the cycle matters (a take and a delete of the same job).
        let last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = writes.into_iter().collect();
        for (key, value) in last {
            match value {
                Some(value) => {
                    target.tree.insert(key, value)?;
                }
                None => {
                    target.tree.remove(key)?;
                }
            }
        }
    }
    Ok(())
}
