//! Faults below the store: the sled backend's write-ahead log fails (`EIO`, `ENOSPC`) or tears a
//! write at seeded random points while jobs are added and messages saved and edited, checkpoints
//! included.
//!
//! The workload runs in a child process (this test binary re-run on [`fault_child`]) that prints
//! `ACK <kind> <id>` after each write returned `Ok` and is `kill -9`ed right after its last one,
//! so what the parent then finds on reopening is what the log and sled had made durable, not
//! what a clean close would have flushed.
//!
//! What must hold, for every seed: a write that failed says so with a retryable error (the API
//! answers 503), never `Ok`; once the fault clears the store writes again without a restart;
//! every acknowledged write is there exactly once after the kill, and everything stored decodes;
//! a conversation never holds a `seq` twice, and its change index holds every message once. A failing seed is printed and replays exactly
//! (`FAULT_SEED=<n> cargo test --test storage_faults`).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use courier::queue::model::{JobOptions, JobState, NewJob};
use courier::store::chat::{ChangeOutcome, HistoryPage, MessageChange, NewMessage};
use courier::store::sled::faults::{self, Fault, Site};
use courier::store::{self, StoreConfig, Stores};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const QUEUE: &str = "message";
const CHILD_DIR_ENV: &str = "COURIER_FAULT_CHILD_DIR";
const CHILD_SEED_ENV: &str = "COURIER_FAULT_CHILD_SEED";
const SEEDS: u64 = 24;
const STEPS: usize = 80;
const USERS: [&str; 3] = [
    "aaaaaaaaaaaaaaaaaaaaaaaa",
    "bbbbbbbbbbbbbbbbbbbbbbbb",
    "cccccccccccccccccccccccc",
];

#[derive(Default)]
struct Acknowledged {
    jobs: Vec<String>,
    /// Message id → (conversation's other user pair, text).
    messages: HashMap<String, (usize, usize, String)>,
    /// Texts a message may have instead: edits that were tried but not acknowledged (a failed
    /// write may or may not have reached the log; one acknowledged later overrides them).
    maybe: HashMap<String, Vec<String>>,
    failures: u64,
    /// Faults that hit a write: at appends, at resets.
    hits: [u64; 2],
}

fn open(dir: &Path) -> Stores {
    store::open(&StoreConfig::sled(dir)).expect("the store opens")
}

fn random_fault(rng: &mut StdRng) -> Fault {
    match rng.random_range(0..3) {
        0 => Fault::Eio,
        1 => Fault::NoSpace,
        _ => Fault::Torn,
    }
}

/// The child's workload: writes with faults armed at random, `ACK` after each `Ok`, then the
/// totals on a `DONE` line. Checks what it can while running.
async fn run_seed(dir: &Path, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let stores = open(dir);
    let mut acked = Acknowledged::default();
    let mut armed = Vec::new();
    // Acknowledged messages with their sender, in order, for edits.
    let mut sent: Vec<(String, usize)> = Vec::new();
    for step in 0..STEPS {
        if rng.random_bool(0.15) {
            let site = if rng.random_bool(0.8) {
                Site::Append
            } else {
                Site::Reset
            };
            armed.push((
                site,
                faults::arm(
                    dir,
                    site,
                    random_fault(&mut rng),
                    rng.random_range(0..3),
                    rng.random_range(1..4),
                ),
            ));
        }
        if rng.random_bool(0.1) {
            // A fault that clears (the disk got room again).
            tally(&mut acked, &mut armed);
        }
        if !sent.is_empty() && rng.random_bool(0.2) {
            let (id, sender) = sent[rng.random_range(0..sent.len())].clone();
            let text = edit_text(step, seed);
            say(&format!("TRY edit {id} {step}"));
            let edit = MessageChange::Edit {
                by: USERS[sender].to_owned(),
                text: text.clone(),
                window_ms: u64::MAX,
            };
            match stores
                .chat
                .change_message(&id, edit, 5_000 + step as u64)
                .await
            {
                Ok(ChangeOutcome::Changed { message, .. }) => {
                    assert_eq!(message.text, text, "seed {seed}");
                    say(&format!("ACK edit {id} {step}"));
                    acked.maybe.remove(&id);
                    if let Some(entry) = acked.messages.get_mut(&id) {
                        entry.2 = text;
                    }
                }
                Ok(other) => panic!("seed {seed}: edit of {id} was {other:?}"),
                Err(err) => {
                    assert!(
                        err.is_retryable(),
                        "seed {seed}: a failed edit must be retryable: {err}"
                    );
                    acked.maybe.entry(id).or_default().push(text);
                    acked.failures += 1;
                }
            }
        } else if rng.random_bool(0.5) {
            let id = format!("job-{step}");
            let job = NewJob {
                name: "fault".to_owned(),
                data: format!("{{\"step\":{step}}}"),
                opts: JobOptions {
                    job_id: Some(id.clone()),
                    ..JobOptions::default()
                },
            };
            match stores.jobs.add(QUEUE, vec![job], 1_000 + step as u64).await {
                Ok(added) => {
                    assert_eq!(added.len(), 1, "seed {seed}: one add, one answer");
                    say(&format!("ACK job {id}"));
                    acked.jobs.push(id);
                }
                Err(err) => {
                    assert!(
                        err.is_retryable(),
                        "seed {seed}: a failed add must be retryable: {err}"
                    );
                    acked.failures += 1;
                }
            }
        } else {
            let (a, b) = match rng.random_range(0..3) {
                0 => (0, 1),
                1 => (1, 2),
                _ => (2, 0),
            };
            let (sender, receiver) = if rng.random_bool(0.5) { (a, b) } else { (b, a) };
            let id = format!("{step:024x}");
            let text = message_text(step, seed);
            let message = NewMessage {
                id: id.clone(),
                sender_id: USERS[sender].to_owned(),
                receiver_id: USERS[receiver].to_owned(),
                text: text.clone(),
                image: String::new(),
                created_at: 1_000 + step as u64,
                ..NewMessage::default()
            };
            match stores.chat.save_message(message).await {
                Ok((record, created)) => {
                    assert!(created, "seed {seed}: a new id creates a message");
                    assert_eq!(record.text, text);
                    say(&format!("ACK msg {id} {} {} {step}", a.min(b), a.max(b)));
                    acked
                        .messages
                        .insert(id.clone(), (a.min(b), a.max(b), text));
                    sent.push((id, sender));
                }
                Err(err) => {
                    assert!(
                        err.is_retryable(),
                        "seed {seed}: a failed save must be retryable: {err}"
                    );
                    acked.failures += 1;
                }
            }
        }
    }
    tally(&mut acked, &mut armed);
    // The fault is gone: the store writes again by itself.
    let after = NewJob {
        name: "fault".to_owned(),
        data: "{}".to_owned(),
        opts: JobOptions {
            job_id: Some("after-the-fault".to_owned()),
            ..JobOptions::default()
        },
    };
    stores
        .jobs
        .add(QUEUE, vec![after], 10_000)
        .await
        .unwrap_or_else(|err| panic!("seed {seed}: no write after the fault cleared: {err}"));
    say("ACK job after-the-fault");
    acked.jobs.push("after-the-fault".to_owned());
    check(seed, &stores, &acked, "while running").await;
    say(&format!(
        "DONE {} {} {}",
        acked.failures, acked.hits[0], acked.hits[1]
    ));
    // Wait for the kill: nothing is closed or flushed cleanly.
    std::future::pending::<()>().await;
}

/// Writes one whole line to stdout and flushes it, so the parent sees it before a kill.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

fn message_text(step: usize, seed: u64) -> String {
    format!("message {step} of seed {seed}")
}

fn edit_text(step: usize, seed: u64) -> String {
    format!("edited at step {step} of seed {seed}")
}

/// The child. Passes at once when not run as one.
#[test]
fn fault_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .expect("seed env var")
        .parse()
        .expect("the seed is a number");
    // libtest wrote "test fault_child ... " without a newline: start on a fresh line.
    say("");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the runtime")
        .block_on(run_seed(&PathBuf::from(dir), seed));
}

/// Runs one seed's child, kills it after its last write (or, for odd seeds, after a random
/// number of acknowledgements), and checks what a reopen finds. Returns the child's totals.
async fn parent_seed(seed: u64) -> (u64, [u64; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fault_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .env(CHILD_SEED_ENV, seed.to_string())
        // Checkpoints every few entries, so resets (and faults at them) happen in a short run.
        .env("COURIER_WAL_CHECKPOINT_BYTES", "16384")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let kill_after = (seed % 2 == 1).then(|| StdRng::seed_from_u64(!seed).random_range(5..60));
    let mut acked = Acknowledged::default();
    let mut totals = None;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ACK", "job", id] => acked.jobs.push((*id).to_owned()),
            ["ACK", "msg", id, a, b, step] => {
                let step: usize = step.parse().unwrap();
                acked.messages.insert(
                    (*id).to_owned(),
                    (
                        a.parse().unwrap(),
                        b.parse().unwrap(),
                        message_text(step, seed),
                    ),
                );
            }
            ["TRY", "edit", id, step] => {
                let text = edit_text(step.parse().unwrap(), seed);
                acked.maybe.entry((*id).to_owned()).or_default().push(text);
            }
            ["ACK", "edit", id, step] => {
                acked.maybe.remove(*id);
                if let Some(entry) = acked.messages.get_mut(*id) {
                    entry.2 = edit_text(step.parse().unwrap(), seed);
                }
                continue;
            }
            ["DONE", failures, appends, resets] => {
                totals = Some((
                    failures.parse().unwrap(),
                    [appends.parse().unwrap(), resets.parse().unwrap()],
                ));
                break;
            }
            _ => continue,
        }
        if kill_after.is_some_and(|after| acked.jobs.len() + acked.messages.len() >= after) {
            break;
        }
    }
    let _ = child.kill();
    // The child ran on while the last lines were read: an edit it tried (or even acknowledged)
    // before the kill may be on disk although this loop stopped before its line.
    for line in lines {
        let Ok(line) = line else { break };
        if let ["TRY" | "ACK", "edit", id, step] = line.split_whitespace().collect::<Vec<_>>()[..] {
            let text = edit_text(step.parse().unwrap(), seed);
            acked.maybe.entry(id.to_owned()).or_default().push(text);
        }
    }
    let status = child.wait().unwrap();
    if totals.is_none() && kill_after.is_none() {
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
        panic!("seed {seed}: the child ended ({status}) before its last write:\n{stderr}");
    }
    let reopened = open(dir.path());
    check(seed, &reopened, &acked, "after the kill").await;
    totals.unwrap_or((0, [0, 0]))
}

/// Disarms every fault, counting the writes each one hit.
fn tally(acked: &mut Acknowledged, armed: &mut Vec<(Site, faults::Armed)>) {
    for (site, fault) in armed.drain(..) {
        acked.hits[usize::from(site == Site::Reset)] += fault.hits();
    }
}

async fn check(seed: u64, stores: &Stores, acked: &Acknowledged, when: &str) {
    for id in &acked.jobs {
        let job = stores.jobs.get(QUEUE, id).await.unwrap();
        assert!(
            job.is_some(),
            "seed {seed}, {when}: acknowledged job {id} is gone"
        );
    }
    let waiting = stores.jobs.list(QUEUE, JobState::Waiting, 0, 10_000).await;
    let listed = match waiting {
        Ok(page) => page.jobs,
        Err(err) => panic!("seed {seed}, {when}: the queue does not list: {err}"),
    };
    let mut ids = HashSet::new();
    for job in &listed {
        assert!(
            ids.insert(job.id.clone()),
            "seed {seed}, {when}: job {} listed twice",
            job.id
        );
    }
    for id in &acked.jobs {
        assert!(
            ids.contains(id),
            "seed {seed}, {when}: acknowledged job {id} is not waiting"
        );
    }
    let counts = stores.jobs.counts(QUEUE).await.unwrap();
    assert_eq!(
        counts.waiting,
        listed.len() as u64,
        "seed {seed}, {when}: counts agree with the list"
    );

    for (id, (_, _, text)) in &acked.messages {
        let stored = stores.chat.message(id).await.unwrap();
        let stored = stored
            .unwrap_or_else(|| panic!("seed {seed}, {when}: acknowledged message {id} is gone"));
        let may_be = acked.maybe.get(id).map(Vec::as_slice).unwrap_or_default();
        assert!(
            stored.text == *text || may_be.contains(&stored.text),
            "seed {seed}, {when}: message {id} says {:?}, not {text:?} or one of {may_be:?}",
            stored.text
        );
    }
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        let history = stores
            .chat
            .history(
                USERS[a],
                USERS[b],
                HistoryPage::After {
                    seq: 0,
                    limit: 1_000,
                },
            )
            .await
            .unwrap();
        let mut seqs = HashSet::new();
        let mut ids = HashSet::new();
        for message in &history {
            assert!(
                seqs.insert(message.seq),
                "seed {seed}, {when}: seq {} twice",
                message.seq
            );
            assert!(
                ids.insert(message.id.clone()),
                "seed {seed}, {when}: {} twice",
                message.id
            );
        }
        // The change index holds every message once, under its latest (and unique) stamp.
        let changed = stores
            .chat
            .history(
                USERS[a],
                USERS[b],
                HistoryPage::ChangedAfter {
                    change: 0,
                    limit: 1_000,
                },
            )
            .await
            .unwrap();
        let mut indexed = HashSet::new();
        let mut stamps = HashSet::new();
        for message in &changed {
            assert!(
                indexed.insert(message.id.clone()),
                "seed {seed}, {when}: {} indexed twice",
                message.id
            );
            assert!(
                stamps.insert(message.change),
                "seed {seed}, {when}: change stamp {} twice",
                message.change
            );
        }
        assert!(
            changed.windows(2).all(|w| w[0].change < w[1].change),
            "seed {seed}, {when}: changes out of order"
        );
        for (id, (x, y, _)) in &acked.messages {
            if (*x, *y) == (a.min(b), a.max(b)) {
                assert!(
                    ids.contains(id),
                    "seed {seed}, {when}: {id} missing from its conversation"
                );
                assert!(
                    indexed.contains(id),
                    "seed {seed}, {when}: {id} missing from the change index"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_log_faults_and_failed_ones_say_so() {
    let seeds: Vec<u64> = match std::env::var("FAULT_SEED") {
        Ok(seed) => vec![seed.parse().expect("FAULT_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    let (mut failures, mut hits) = (0, [0, 0]);
    for seed in seeds {
        eprintln!("seed {seed}");
        let (failed, hit) = parent_seed(seed).await;
        failures += failed;
        hits[0] += hit[0];
        hits[1] += hit[1];
    }
    eprintln!(
        "{failures} writes refused; faults hit {} appends and {} resets",
        hits[0], hits[1]
    );
    // Otherwise this test proved nothing.
    assert!(failures > 0 && hits[0] > 0, "no fault ever hit a write");
}
