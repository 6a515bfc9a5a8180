//! Crash test: the queue engine runs in a child process over a real on-disk sled store and is
//! `SIGKILL`ed at random moments, generation after generation.
//!
//! The child is this test executable itself, re-run on the single test [`crash_child`] with
//! `COURIER_CRASH_CHILD_DIR` set (without it that test passes at once). It adds jobs with ids
//! `c{generation}-{n}` from several tasks at a time (single adds and bulk adds) and prints
//! `ACK <id>` only after the add returned `Ok`, while its workers process every job in the store,
//! old ones included. After each kill the parent reopens the store in-process and checks:
//! every acknowledged (and every previously seen) job is still there, each job is in exactly one
//! state, `counts` agrees with the state lists and with `get`, and stored data round-trips. After
//! the last kill an in-process engine runs until every job is `completed`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use courier::queue::model::{Backoff, BackoffKind, JobOptions, JobState, NewJob};
use courier::queue::{
    JobContext, JobFailure, JobResult, LocalHub, Queue, QueueConfig, QueueManager,
};
use courier::store::{self, JobStore, StoreConfig};
use rand::Rng;
use serde_json::json;

const CHILD_DIR_ENV: &str = "COURIER_CRASH_CHILD_DIR";
const CHILD_GENERATION_ENV: &str = "COURIER_CRASH_CHILD_GENERATION";
const CHILD_TEST_NAME: &str = "crash_child";
/// The store's knob for how full its write-ahead log gets before a checkpoint.
const CHECKPOINT_BYTES_ENV: &str = "COURIER_WAL_CHECKPOINT_BYTES";
const QUEUE: &str = "message";
const GENERATIONS: u32 = 24;
/// Adds in flight at once in the child.
const ADDERS: usize = 6;
/// The child stops on its own after this long, so a parent that died cannot leave it running.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);

fn queue_config() -> QueueConfig {
    let mut config = QueueConfig::new(QUEUE);
    config.concurrency = 8;
    // Every generation recovers the jobs the kill left active as stalled; a job may be caught
    // active by many kills in a row and must not fail for it.
    config.max_stalled_count = 1000;
    config
}

/// The number `n` of an id `c{generation}-{n}`.
fn id_number(id: &str) -> Option<u64> {
    let (generation, number) = id.strip_prefix('c')?.split_once('-')?;
    generation.parse::<u32>().ok()?;
    number.parse().ok()
}

fn job_data(id: &str) -> String {
    json!({ "id": id }).to_string()
}

fn return_value(id: &str) -> String {
    json!({ "done": id }).to_string()
}

/// A mix of options, chosen by the job's number so the parent could tell them apart: retries
/// with backoff for all, a short delay and a priority for some.
fn job_options(id: &str, n: u64) -> JobOptions {
    JobOptions {
        attempts: 3,
        backoff: Some(Backoff {
            kind: BackoffKind::Fixed,
            delay: 15,
            jitter: 0.5,
        }),
        delay_ms: if n % 10 == 3 { 25 } else { 0 },
        priority: (n % 7 == 0).then_some(1 + (n % 3) as u32),
        job_id: Some(id.to_owned()),
        ..JobOptions::default()
    }
}

/// A little work; every fourth job fails its first attempt so retries and backoff run too.
async fn process(job: JobContext) -> JobResult {
    let pause = rand::rng().random_range(0..2_000);
    tokio::time::sleep(Duration::from_micros(pause)).await;
    let n =
        id_number(&job.id).ok_or_else(|| JobFailure::msg(format!("unexpected id {}", job.id)))?;
    if n % 4 == 0 && job.attempts_made == 0 {
        return Err(JobFailure::msg("first attempt fails on purpose"));
    }
    Ok(json!({ "done": job.id }))
}

async fn start_engine(dir: &Path) -> (QueueManager, Queue) {
    let store = store::open(&StoreConfig::sled(dir))
        .map(|stores| stores.jobs)
        .expect("open the store");
    let manager = QueueManager::new(store, Arc::new(LocalHub::default()));
    let queue = manager
        .register(queue_config())
        .await
        .expect("register the queue");
    queue.process("*", process);
    manager.start();
    (manager, queue)
}

/// Writes one whole line to stdout and flushes it, so the parent sees it before a kill.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

/// The child: add and process jobs until killed. Passes at once when not run as a child.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let generation: u32 = std::env::var(CHILD_GENERATION_ENV)
        .expect("generation env var")
        .parse()
        .expect("generation is a number");
    // libtest has written "test crash_child ... " without a newline: start on a fresh line.
    say("");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the runtime");
    runtime.block_on(child_main(PathBuf::from(dir), generation));
}

async fn child_main(dir: PathBuf, generation: u32) {
    let (_manager, queue) = start_engine(&dir).await;
    say("READY");
    let next = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let mut adders = tokio::task::JoinSet::new();
    for _ in 0..ADDERS {
        let queue = queue.clone();
        let (next, calls) = (next.clone(), calls.clone());
        adders.spawn(async move {
            loop {
                // One add in eight is a bulk add of five jobs. The numbers are taken in one step:
                // taking one and then four more let another adder take a number in between.
                let bulk = calls.fetch_add(1, Ordering::Relaxed) % 8 == 5;
                let count = if bulk { 5 } else { 1 };
                let first = next.fetch_add(count, Ordering::Relaxed);
                let jobs: Vec<(String, u64)> = (first..first + count)
                    .map(|n| (format!("c{generation}-{n}"), n))
                    .collect();
                let result = if bulk {
                    let new_jobs = jobs
                        .iter()
                        .map(|(id, n)| NewJob {
                            name: "bulk".to_owned(),
                            data: job_data(id),
                            opts: job_options(id, *n),
                        })
                        .collect();
                    queue.add_bulk(new_jobs).await
                } else {
                    let (id, n) = &jobs[0];
                    let data: serde_json::Value =
                        serde_json::from_str(&job_data(id)).expect("json");
                    queue
                        .add("single", &data, job_options(id, *n))
                        .await
                        .map(|added| vec![added])
                };
                match result {
                    Ok(added) => {
                        for (job, (id, _)) in added.iter().zip(&jobs) {
                            if job.existed || job.id != *id {
                                say(&format!("ERR add of {id} answered {job:?}"));
                            } else {
                                say(&format!("ACK {id}"));
                            }
                        }
                    }
                    Err(err) => say(&format!("ERR add failed: {err}")),
                }
                // Pace the adds so the store stays small enough to verify quickly after every
                // kill, while adds still overlap each other and the workers.
                let pause = rand::rng().random_range(2..8);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        });
    }
    tokio::time::sleep(CHILD_LIFETIME).await;
    say("ERR the child was never killed");
    std::process::exit(3);
}

/// Kills (SIGKILL) and reaps the child if the test panics before doing so.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one child generation printed.
struct ChildRun {
    acked: Vec<String>,
    errors: Vec<String>,
    ready: bool,
    stderr: String,
}

/// Runs one child generation and SIGKILLs it at a random moment.
fn run_child(dir: &Path, generation: u32, rng: &mut impl Rng) -> ChildRun {
    let exe = std::env::current_exe().expect("current exe");
    let stderr_path = dir.join(format!("child-{generation}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            CHILD_TEST_NAME,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.join("data"))
        .env(CHILD_GENERATION_ENV, generation.to_string())
        // Checkpoints every few cycles, so kills land in every phase of one too (logs switched,
        // sled flushing, a log being emptied).
        .env(CHECKPOINT_BYTES_ENV, "32768")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn the child");
    let spawned = Instant::now();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut guard = ChildGuard(Some(child));

    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut short by the kill has no newline: it was never acknowledged.
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {
                    let text = line.trim_end_matches('\n').to_owned();
                    if text == "READY" {
                        let _ = ready_tx.send(());
                    }
                    lines.push(text);
                }
            }
        }
        lines
    });

    // Most kills land while jobs are being added and processed; one in four is timed from the
    // spawn, which can land in start-up (store open, stalled-job recovery).
    if rng.random_range(0..4) == 0 {
        std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
    } else {
        let _ = ready_rx.recv_timeout(Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(rng.random_range(20..300)));
    }
    let mut child = guard.0.take().expect("child still owned");
    let still_running = child.try_wait().expect("poll the child").is_none();
    child.kill().expect("kill the child");
    let status = child.wait().expect("reap the child");
    let lines = reader.join().expect("stdout reader");
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        still_running,
        "generation {generation}: the child exited on its own ({status}) after {:?}\nstdout:\n{}\nstderr:\n{stderr}",
        spawned.elapsed(),
        lines.join("\n"),
    );

    let mut run = ChildRun {
        acked: Vec::new(),
        errors: Vec::new(),
        ready: false,
        stderr,
    };
    for line in lines {
        if let Some(id) = line.strip_prefix("ACK ") {
            run.acked.push(id.to_owned());
        } else if line.starts_with("ERR") {
            run.errors.push(line);
        } else if line == "READY" {
            run.ready = true;
        }
    }
    run
}

/// Checks the store after a crash; returns every job id found, with its state.
async fn check_store(
    store: &Arc<dyn JobStore>,
    must_exist: &HashSet<String>,
    context: &str,
) -> HashMap<String, JobState> {
    let counts = store.counts(QUEUE).await.expect("counts");
    let mut found: HashMap<String, JobState> = HashMap::new();
    for state in JobState::ALL {
        let page = store.list(QUEUE, state, 0, u64::MAX).await.expect("list");
        assert_eq!(
            page.total,
            counts.get(state),
            "{context}: list total of {state} vs counts {counts:?}"
        );
        assert_eq!(
            page.jobs.len() as u64,
            page.total,
            "{context}: {state} lists fewer jobs than its total"
        );
        for job in page.jobs {
            assert_eq!(
                job.status.state, state,
                "{context}: job {} listed under {state}",
                job.id
            );
            if let Some(other) = found.insert(job.id.clone(), state) {
                panic!("{context}: job {} is both {other} and {state}", job.id);
            }
        }
    }
    assert_eq!(
        counts.total(),
        found.len() as u64,
        "{context}: counts {counts:?} disagree with the distinct jobs listed"
    );
    assert_eq!(
        counts.failed, 0,
        "{context}: no job should ever fail: {counts:?}"
    );
    for (id, state) in &found {
        let job = store
            .get(QUEUE, id)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{context}: listed job {id} is missing from get"));
        assert_eq!(
            job.status.state, *state,
            "{context}: get and list disagree on {id}"
        );
        assert_eq!(job.spec.data, job_data(id), "{context}: data of {id}");
        let n = id_number(id).unwrap_or_else(|| panic!("{context}: unexpected job id {id}"));
        assert_eq!(
            job.spec.opts,
            job_options(id, n),
            "{context}: options of {id}"
        );
        if *state == JobState::Completed {
            assert_eq!(
                job.status.return_value,
                Some(return_value(id)),
                "{context}: result of {id}"
            );
            assert!(
                job.status.finished_at.is_some(),
                "{context}: {id} completed without finished_at"
            );
        }
    }
    let mut lost: Vec<&String> = must_exist
        .iter()
        .filter(|id| !found.contains_key(*id))
        .collect();
    lost.sort();
    assert!(
        lost.is_empty(),
        "{context}: {} acknowledged or previously stored jobs are lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    found
}

#[test]
fn acknowledged_jobs_survive_sigkill_and_all_complete() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the runtime");
    let mut rng = rand::rng();
    // Every job acknowledged to a client or seen in the store: none may ever disappear.
    let mut must_exist: HashSet<String> = HashSet::new();
    let mut acked_total = 0usize;
    let mut ready_generations = 0;
    // Jobs a kill left active, to be recovered as stalled by the next generation.
    let mut caught_active = 0usize;

    for generation in 0..GENERATIONS {
        let run = run_child(dir.path(), generation, &mut rng);
        assert!(
            run.errors.is_empty(),
            "generation {generation}: the child reported {:?}\nstderr:\n{}",
            run.errors,
            run.stderr
        );
        let prefix = format!("c{generation}-");
        for id in &run.acked {
            assert!(
                id.starts_with(&prefix),
                "generation {generation}: acknowledged foreign id {id:?}"
            );
            assert!(
                id_number(id).is_some(),
                "generation {generation}: malformed acknowledged id {id:?}"
            );
            assert!(
                must_exist.insert(id.clone()),
                "generation {generation}: {id} acknowledged twice"
            );
        }
        acked_total += run.acked.len();
        ready_generations += usize::from(run.ready);

        let context = format!("after kill {generation}");
        let found = runtime.block_on(async {
            let store = store::open(&StoreConfig::sled(&data_dir))
                .map(|stores| stores.jobs)
                .expect("reopen the store");
            check_store(&store, &must_exist, &context).await
        });
        caught_active += found
            .values()
            .filter(|state| **state == JobState::Active)
            .count();
        // Unacknowledged adds that made it to disk must stay too, like every other job.
        must_exist.extend(found.into_keys());
    }
    assert!(
        ready_generations >= (GENERATIONS as usize) / 2,
        "too few kills landed after start-up"
    );
    assert!(
        acked_total >= 200,
        "too few jobs were acknowledged ({acked_total}) to mean anything"
    );

    // The last restart: run to completion without a kill.
    let (total, max_stalled, completion_time) = runtime.block_on(async {
        let (manager, queue) = start_engine(&data_dir).await;
        let finishing = Instant::now();
        let deadline = finishing + Duration::from_secs(60);
        loop {
            let counts = queue.counts().await.expect("counts");
            if counts.waiting + counts.delayed + counts.active == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "jobs did not all finish in 60 s: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let completion_time = finishing.elapsed();
        manager
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
        drop(queue);
        drop(manager);
        // Reopen after the clean shutdown: completions must have been made durable by it.
        let store = store::open(&StoreConfig::sled(&data_dir))
            .map(|stores| stores.jobs)
            .expect("reopen the store");
        let found = check_store(&store, &must_exist, "after the final run").await;
        let counts = store.counts(QUEUE).await.expect("counts");
        assert_eq!(
            (counts.waiting, counts.delayed, counts.active, counts.failed),
            (0, 0, 0, 0),
            "after the final run: {counts:?}"
        );
        let unfinished: Vec<_> = found
            .iter()
            .filter(|(_, state)| **state != JobState::Completed)
            .collect();
        assert!(unfinished.is_empty(), "jobs not completed: {unfinished:?}");
        let mut max_stalled = 0;
        for id in found.keys() {
            let job = store
                .get(QUEUE, id)
                .await
                .expect("get")
                .expect("job listed a moment ago");
            max_stalled = max_stalled.max(job.status.stalled_count);
        }
        (found.len(), max_stalled, completion_time)
    });
    eprintln!(
        "crash test: {GENERATIONS} kills ({ready_generations} after start-up), {acked_total} \
         acknowledged adds, {total} jobs stored, {caught_active} found active after a kill, \
         highest stall count {max_stalled}, final run took {completion_time:?}, whole test {:?}",
        started.elapsed()
    );
}
