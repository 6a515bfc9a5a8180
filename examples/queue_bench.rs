//! Queue throughput and latency benchmark over the sled job store, with durable adds.
//!
//! ```text
//! cargo run --release --example queue_bench                      # single/bulk x concurrency 1/50
//! cargo run --release --example queue_bench -- --rate 1000       # open loop: p99 at 1,000 jobs/s
//! cargo run --release --example queue_bench -- --mode bulk --concurrency 50
//! ```
//!
//! Each run prints one JSON line. A run: a fresh temp dir and store, one queue with a no-op
//! processor, `n` jobs of ~`data_bytes` bytes with `removeOnComplete` (`KeepJobs::NONE`). Jobs are
//! added one at a time by `in_flight` concurrent adders (`single`) or in `add_bulk` batches of
//! `batch` jobs sent one after another (`bulk`); `--rate R` instead offers R jobs/s open loop (a
//! pacer starts each add, or each batch, on schedule without waiting for earlier ones).
//!
//! Every add returns only after its write is flushed (the store's `add` is durable; there is no
//! other mode), so the figures are durable ones: `"durable": true`. Latency runs from the instant
//! before `add` is called to the instant the processor is handed the job.
//!
//! `add_rate` is jobs over (first add call .. last add acknowledged); `processing_rate` is jobs
//! over (first add call .. last job handed to a processor). `commit_batches` is the number of
//! group commits (one sled batch + one flush each) from just before the first add to the end of
//! the run, including the commits of the completions and the final shutdown flush.
//!
//! With more than one run, each run executes in a child process (this binary, re-executed) so
//! `rss_mb` / `rss_hwm_mb` describe that run alone; `--in-process` turns this off. It uses the
//! server's allocator (`courier::alloc`).
//!
//! `--redis-url URL` (a build with `--features redis`) runs on the Redis job store at that server
//! instead, under a key prefix of its own; `durability` then says what the server's `appendfsync`
//! makes of an acknowledged add, and `commit_batches` is 0 (Redis has no group commit to count).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use courier::queue::model::{JobOptions, KeepJobs, NewJob};
use courier::queue::{JobContext, JobResult, LocalHub, Queue, QueueConfig, QueueManager};
use courier::store::sled::{open_db, SledJobStore};
use courier::store::{JobStore, StorageStats};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::Notify;

// The allocator the server ships with, so the figures are the product's.
courier::install_allocator!();

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `Queue::add`, one job per call, `--in-flight` calls outstanding.
    Single,
    /// `Queue::add_bulk` with `--batch` jobs per call, one call outstanding.
    Bulk,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Bulk => "bulk",
        }
    }
}

#[derive(Debug, Clone, Parser)]
#[command(about = "Durable job queue benchmark: one JSON line per run")]
struct Args {
    /// Add mode; without it both run (only `single` when `--rate` is given).
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Worker concurrency of the queue; comma-separated for several runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 50])]
    concurrency: Vec<usize>,
    /// Jobs per run.
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// Adds outstanding at once in `single` mode (closed loop).
    #[arg(long, default_value_t = 50)]
    in_flight: usize,
    /// Jobs per `add_bulk` call in `bulk` mode.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Approximate size of each job's data (JSON text), in bytes.
    #[arg(long, default_value_t = 200)]
    data_bytes: usize,
    /// Offer jobs at this many per second, open loop (latency at a given load).
    #[arg(long)]
    rate: Option<f64>,
    /// Directory in which each run's temp dir is made (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Run every variant in this process instead of one child process per run.
    #[arg(long)]
    in_process: bool,
    /// Write every job's add instant and add→processor latency (µs) as CSV to
    /// `<this path>.<mode>-<concurrency>`.
    #[arg(long)]
    dump_latencies: Option<PathBuf>,
    /// Also measure host scheduling noise (always on with `--rate`): a plain thread sleeps 1 ms
    /// in a loop and records how late it wakes, reported as `host_stall_ms`.
    #[arg(long)]
    probe: bool,
    /// Run on the Redis job store at this URL instead of sled.
    #[cfg(feature = "redis")]
    #[arg(long)]
    redis_url: Option<String>,
}

impl Args {
    fn modes(&self) -> Vec<Mode> {
        match (self.mode, self.rate) {
            (Some(mode), _) => vec![mode],
            (None, Some(_)) => vec![Mode::Single],
            (None, None) => vec![Mode::Single, Mode::Bulk],
        }
    }

    /// Arguments that make a child process run exactly one variant.
    fn child_args(&self, mode: Mode, concurrency: usize) -> Vec<String> {
        let mut args = vec![
            "--mode".to_owned(),
            mode.as_str().to_owned(),
            "--concurrency".to_owned(),
            concurrency.to_string(),
            "--n".to_owned(),
            self.n.to_string(),
            "--in-flight".to_owned(),
            self.in_flight.to_string(),
            "--batch".to_owned(),
            self.batch.to_string(),
            "--data-bytes".to_owned(),
            self.data_bytes.to_string(),
            "--timeout-secs".to_owned(),
            self.timeout_secs.to_string(),
        ];
        if let Some(rate) = self.rate {
            args.extend(["--rate".to_owned(), rate.to_string()]);
        }
        if let Some(dir) = &self.dir {
            args.extend(["--dir".to_owned(), dir.display().to_string()]);
        }
        if let Some(threads) = self.worker_threads {
            args.extend(["--worker-threads".to_owned(), threads.to_string()]);
        }
        if self.probe {
            args.push("--probe".to_owned());
        }
        if let Some(path) = &self.dump_latencies {
            args.extend(["--dump-latencies".to_owned(), path.display().to_string()]);
        }
        #[cfg(feature = "redis")]
        if let Some(url) = &self.redis_url {
            args.extend(["--redis-url".to_owned(), url.clone()]);
        }
        args
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.n > 0, "--n must be positive");
    anyhow::ensure!(
        args.in_flight > 0 && args.batch > 0,
        "--in-flight and --batch must be positive"
    );
    anyhow::ensure!(!args.concurrency.is_empty(), "--concurrency needs a value");
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be positive");
    }
    let variants: Vec<(Mode, usize)> = args
        .modes()
        .into_iter()
        .flat_map(|mode| args.concurrency.iter().map(move |&c| (mode, c)))
        .collect();

    if variants.len() > 1 && !args.in_process {
        let exe = std::env::current_exe()?;
        let mut failed = 0;
        for (mode, concurrency) in variants {
            let status = Command::new(&exe)
                .args(args.child_args(mode, concurrency))
                .status()?;
            if !status.success() {
                eprintln!(
                    "queue_bench: run {} / concurrency {concurrency} failed: {status}",
                    mode.as_str()
                );
                failed += 1;
            }
        }
        anyhow::ensure!(failed == 0, "{failed} run(s) failed");
        return Ok(());
    }

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.worker_threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.build()?;
    for (mode, concurrency) in variants {
        let report = runtime.block_on(run(&args, mode, concurrency))?;
        println!("{report}");
    }
    Ok(())
}

/// Per-job timestamps, in nanoseconds since `base`.
struct Recorder {
    base: Instant,
    sent: Vec<AtomicU64>,
    seen: Vec<AtomicU64>,
    done: AtomicUsize,
    all_done: Notify,
}

impl Recorder {
    fn new(n: usize) -> Recorder {
        Recorder {
            base: Instant::now(),
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            seen: (0..n).map(|_| AtomicU64::new(0)).collect(),
            done: AtomicUsize::new(0),
            all_done: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn mark_sent(&self, range: std::ops::Range<usize>) {
        let now = self.now();
        for i in range {
            self.sent[i].store(now, Ordering::Relaxed);
        }
    }

    /// Called by the processor with the job's data.
    fn mark_seen(&self, data: &str) {
        let now = self.now();
        let Some(i) = job_index(data).filter(|&i| i < self.seen.len()) else {
            eprintln!("queue_bench: job data without an index: {data:.40}");
            return;
        };
        // A job handed out twice (it never should be here) counts once, at its first time.
        if self.seen[i]
            .compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && self.done.fetch_add(1, Ordering::AcqRel) + 1 == self.seen.len()
        {
            self.all_done.notify_one();
        }
    }
}

/// The job index at the start of the data (`{"i":123,...}`), without parsing the whole JSON.
fn job_index(data: &str) -> Option<usize> {
    let digits = data.strip_prefix("{\"i\":")?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// `{"i":<index>,"pad":"xxx…"}` of about `bytes` bytes (serde_json sorts keys, so `i` is first).
fn job_data(index: usize, bytes: usize) -> Value {
    let skeleton = format!("{{\"i\":{index},\"pad\":\"\"}}").len();
    json!({ "i": index, "pad": "x".repeat(bytes.saturating_sub(skeleton)) })
}

fn job_options() -> JobOptions {
    JobOptions {
        remove_on_complete: Some(KeepJobs::NONE),
        ..JobOptions::default()
    }
}

/// The store of one run: sled in `dir` (kept apart to read its commit counters), or Redis. The
/// last value is what an acknowledged add survives (`always`: fsynced).
type Opened = (Option<Arc<SledJobStore>>, Arc<dyn JobStore>, &'static str);

fn open_store(args: &Args, dir: &Path) -> anyhow::Result<Opened> {
    #[cfg(feature = "redis")]
    if let Some(url) = &args.redis_url {
        let prefix = format!("bench-{}-{}", std::process::id(), dir.display());
        let store = courier::store::redis::RedisJobStore::open(url, &prefix)?;
        let durability = store.durability().as_str();
        return Ok((None, Arc::new(store), durability));
    }
    let _ = args;
    let sled_store = Arc::new(SledJobStore::open(&open_db(dir)?)?);
    Ok((Some(sled_store.clone()), sled_store, "always"))
}

async fn run(args: &Args, mode: Mode, concurrency: usize) -> anyhow::Result<Value> {
    let n = args.n;
    let dir = match &args.dir {
        Some(parent) => tempfile::Builder::new()
            .prefix("queue_bench")
            .tempdir_in(parent)?,
        None => tempfile::Builder::new().prefix("queue_bench").tempdir()?,
    };
    let fs = fs_type(dir.path()).unwrap_or_else(|| "unknown".to_owned());
    if matches!(fs.as_str(), "tmpfs" | "ramfs") {
        eprintln!(
            "queue_bench: {} is on {fs}: flushes cost nothing there, use --dir on a disk",
            dir.path().display()
        );
    }

    // Opened by hand (rather than `open_job_store`) to read the group-commit batch count.
    let (sled_store, store, durability) = open_store(args, dir.path())?;
    let manager = QueueManager::new(store.clone(), Arc::new(LocalHub::default()));
    let mut config = QueueConfig::new("bench");
    config.concurrency = concurrency;
    let queue = manager.register(config).await?;

    let recorder = Arc::new(Recorder::new(n));
    let seen_by = recorder.clone();
    queue.process("*", move |job: JobContext| {
        seen_by.mark_seen(&job.data);
        std::future::ready::<JobResult>(Ok(Value::Null))
    });
    manager.start();

    // Job payloads are built before the clock starts; turning them into text is the add's job.
    let datas: Vec<Value> = (0..n).map(|i| job_data(i, args.data_bytes)).collect();
    let probe = (args.probe || args.rate.is_some()).then(StallProbe::start);
    let batches_before = sled_store.as_ref().map_or(0, |store| store.batch_count());
    let cpu_before = cpu_ticks();
    let first_add = recorder.now();
    let adds = match (mode, args.rate) {
        (Mode::Single, None) => add_single_closed(&queue, &recorder, datas, args.in_flight).await?,
        (Mode::Single, Some(rate)) => add_single_open(&queue, &recorder, datas, rate).await?,
        (Mode::Bulk, rate) => add_bulk(&queue, &recorder, datas, args.batch, rate).await?,
    };
    let last_add = recorder.now();

    let finished = tokio::time::timeout(
        Duration::from_secs(args.timeout_secs),
        recorder.all_done.notified(),
    )
    .await;
    anyhow::ensure!(
        finished.is_ok() || recorder.done.load(Ordering::Acquire) == n,
        "only {} of {n} jobs were processed within {} s",
        recorder.done.load(Ordering::Acquire),
        args.timeout_secs
    );
    let host_stalls = probe.map(StallProbe::finish);
    manager.shutdown(Duration::from_secs(5)).await?;
    let batches = sled_store.as_ref().map_or(0, |store| store.batch_count()) - batches_before;
    let left = queue.counts().await?.total();

    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut last_seen = 0;
    for (sent, seen) in recorder.sent.iter().zip(&recorder.seen) {
        let (sent, seen) = (sent.load(Ordering::Relaxed), seen.load(Ordering::Relaxed));
        last_seen = last_seen.max(seen);
        latency.saturating_record((seen.saturating_sub(sent) / 1_000).max(1));
    }
    if let Some(path) = &args.dump_latencies {
        let mut csv = String::from("sent_us,latency_us\n");
        for (sent, seen) in recorder.sent.iter().zip(&recorder.seen) {
            let (sent, seen) = (sent.load(Ordering::Relaxed), seen.load(Ordering::Relaxed));
            csv.push_str(&format!(
                "{},{}\n",
                sent / 1_000,
                seen.saturating_sub(sent) / 1_000
            ));
        }
        std::fs::write(
            format!("{}.{}-{concurrency}", path.display(), mode.as_str()),
            csv,
        )?;
    }
    let add_secs = secs(last_add - first_add);
    let processing_secs = secs(last_seen.saturating_sub(first_add));
    let ms = |quantile: f64| round3(latency.value_at_quantile(quantile) as f64 / 1_000.0);
    let (rss_mb, rss_hwm_mb) = rss_mb();
    let cpu = cpu_ms_since(&cpu_before);

    let mut report = json!({
        "mode": mode.as_str(),
        "concurrency": concurrency,
        "n": n,
        "add_rate": (n as f64 / add_secs).round(),
        "processing_rate": (n as f64 / processing_secs).round(),
        "latency_ms": {
            "p50": ms(0.50),
            "p99": ms(0.99),
            "p999": ms(0.999),
            "max": round3(latency.max() as f64 / 1_000.0),
        },
        "durable": durability == "always",
        "durability": durability,
        "offered_rate": args.rate,
        "add_secs": round3(add_secs),
        "processing_secs": round3(processing_secs),
        "commit_batches": batches,
        "data_bytes": datas_len(args.data_bytes),
        "rss_mb": rss_mb,
        "rss_hwm_mb": rss_hwm_mb,
        "cpu_ms": cpu,
        "fs": fs,
        "worker_threads": args.worker_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    });
    let fields = report.as_object_mut().expect("an object");
    match mode {
        Mode::Single if args.rate.is_none() => {
            fields.insert("in_flight".to_owned(), json!(args.in_flight));
        }
        Mode::Bulk => {
            fields.insert("batch".to_owned(), json!(args.batch));
        }
        Mode::Single => {}
    }
    if let Some(lag) = adds.pacer_lag_max_ns {
        fields.insert(
            "pacer_lag_max_ms".to_owned(),
            json!(round3(lag as f64 / 1e6)),
        );
    }
    if let Some(stalls) = host_stalls {
        fields.insert(
            "host_stall_ms".to_owned(),
            json!({
                "p99": round3(stalls.value_at_quantile(0.99) as f64 / 1_000.0),
                "p999": round3(stalls.value_at_quantile(0.999) as f64 / 1_000.0),
                "max": round3(stalls.max() as f64 / 1_000.0),
            }),
        );
    }
    if let Some(times) = sled_store
        .as_ref()
        .and_then(|store| StorageStats::activity(store.as_ref()).commit_times)
    {
        // The disk's share: every add waits for one of these.
        fields.insert(
            "commit_ms".to_owned(),
            json!({
                "p50": round3(times.p50_ms),
                "p99": round3(times.p99_ms),
                "max": round3(times.max_ms),
            }),
        );
    }
    if left != 0 {
        fields.insert("jobs_left".to_owned(), json!(left));
    }

    drop(queue);
    drop(manager);
    drop(store);
    drop(sled_store);
    drop(dir);
    Ok(report)
}

/// A plain OS thread that sleeps 1 ms at a time and records how late it wakes (µs): scheduling
/// noise of the host, which no code in this process can cause or avoid.
struct StallProbe {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Histogram<u64>>,
}

impl StallProbe {
    fn start() -> StallProbe {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut late =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let tick = Duration::from_millis(1);
            while !stopped.load(Ordering::Relaxed) {
                let before = Instant::now();
                std::thread::sleep(tick);
                let over = before.elapsed().saturating_sub(tick).as_micros() as u64;
                late.saturating_record(over.max(1));
            }
            late
        });
        StallProbe { stop, thread }
    }

    fn finish(self) -> Histogram<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the probe thread does not panic")
    }
}

/// What the adding phase observed beyond the recorder.
struct AddStats {
    /// Open loop: how late the pacer started an add, at worst.
    pacer_lag_max_ns: Option<u64>,
}

async fn add_single_closed(
    queue: &Queue,
    recorder: &Arc<Recorder>,
    datas: Vec<Value>,
    in_flight: usize,
) -> anyhow::Result<AddStats> {
    let datas = Arc::new(datas);
    let next = Arc::new(AtomicUsize::new(0));
    let adders: Vec<_> = (0..in_flight.min(datas.len()))
        .map(|_| {
            let (queue, recorder, datas, next) =
                (queue.clone(), recorder.clone(), datas.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= datas.len() {
                        return Ok::<_, anyhow::Error>(());
                    }
                    recorder.mark_sent(i..i + 1);
                    queue.add("bench", &datas[i], job_options()).await?;
                }
            })
        })
        .collect();
    for adder in adders {
        adder.await??;
    }
    Ok(AddStats {
        pacer_lag_max_ns: None,
    })
}

async fn add_single_open(
    queue: &Queue,
    recorder: &Arc<Recorder>,
    datas: Vec<Value>,
    rate: f64,
) -> anyhow::Result<AddStats> {
    let datas = Arc::new(datas);
    let start = recorder.now();
    let mut lag_max = 0;
    let mut adds = Vec::with_capacity(datas.len());
    for i in 0..datas.len() {
        let due = start + (i as f64 * 1e9 / rate) as u64;
        let now = recorder.now();
        if due > now {
            tokio::time::sleep(Duration::from_nanos(due - now)).await;
        }
        lag_max = lag_max.max(recorder.now().saturating_sub(due));
        recorder.mark_sent(i..i + 1);
        let (queue, datas) = (queue.clone(), datas.clone());
        adds.push(tokio::spawn(async move {
            queue.add("bench", &datas[i], job_options()).await
        }));
    }
    for add in adds {
        add.await??;
    }
    Ok(AddStats {
        pacer_lag_max_ns: Some(lag_max),
    })
}

async fn add_bulk(
    queue: &Queue,
    recorder: &Arc<Recorder>,
    datas: Vec<Value>,
    batch: usize,
    rate: Option<f64>,
) -> anyhow::Result<AddStats> {
    let n = datas.len();
    let batches: Vec<Vec<NewJob>> = datas
        .chunks(batch)
        .map(|chunk| {
            chunk
                .iter()
                .map(|data| NewJob {
                    name: "bench".to_owned(),
                    data: data.to_string(),
                    opts: job_options(),
                })
                .collect()
        })
        .collect();
    drop(datas);
    let start = recorder.now();
    let mut lag_max = 0;
    let mut open_loop = Vec::new();
    for (k, jobs) in batches.into_iter().enumerate() {
        let first = k * batch;
        let range = first..(first + jobs.len()).min(n);
        match rate {
            None => {
                recorder.mark_sent(range);
                queue.add_bulk(jobs).await?;
            }
            Some(rate) => {
                let due = start + (first as f64 * 1e9 / rate) as u64;
                let now = recorder.now();
                if due > now {
                    tokio::time::sleep(Duration::from_nanos(due - now)).await;
                }
                lag_max = lag_max.max(recorder.now().saturating_sub(due));
                recorder.mark_sent(range);
                let queue = queue.clone();
                open_loop.push(tokio::spawn(async move { queue.add_bulk(jobs).await }));
            }
        }
    }
    for add in open_loop {
        add.await??;
    }
    Ok(AddStats {
        pacer_lag_max_ns: rate.map(|_| lag_max),
    })
}

/// The data size actually produced for a mid-range index (the reported `data_bytes`).
fn datas_len(bytes: usize) -> usize {
    job_data(10_000, bytes).to_string().len()
}

fn secs(nanos: u64) -> f64 {
    (nanos as f64 / 1e9).max(1e-9)
}

fn round3(value: f64) -> f64 {
    (value * 1_000.0).round() / 1_000.0
}

/// (VmRSS, VmHWM) of this process in MiB, from /proc/self/status (zeros elsewhere).
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kb| round3(kb / 1024.0))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU ticks (user + system, 10 ms each) this process used so far: in total (`process`), and by
/// the threads alive now grouped by name (the commit thread, tokio's workers, sled's threads, the
/// rest). Exited threads count only in the total. Linux only (empty elsewhere).
fn cpu_ticks() -> BTreeMap<&'static str, u64> {
    fn ticks(stat: &str) -> Option<(&str, u64)> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        // After the name: field 3 (state) onwards; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((&stat[open + 1..close], utime + stime))
    }
    let mut groups = BTreeMap::new();
    if let Some((_, total)) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(ticks)
    {
        groups.insert("process", total);
    }
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, used)) = ticks(&stat) else {
            continue;
        };
        let group = if name.starts_with("courier-commit") {
            "commit_thread"
        } else if name.starts_with("tokio-rt-worker") {
            "tokio_workers"
        } else if name.starts_with("sled") || name == "log flusher" {
            "sled_threads"
        } else {
            "other_threads"
        };
        *groups.entry(group).or_default() += used;
    }
    groups
}

/// CPU milliseconds used between two [`cpu_ticks`] readings, by group.
fn cpu_ms_since(before: &BTreeMap<&'static str, u64>) -> Value {
    // USER_HZ is 100 on every Linux this runs on.
    let after = cpu_ticks();
    let groups: serde_json::Map<String, Value> = after
        .iter()
        .map(|(group, &used)| {
            let earlier = before.get(group).copied().unwrap_or(0);
            (
                (*group).to_owned(),
                json!(used.saturating_sub(earlier) * 10),
            )
        })
        .collect();
    Value::Object(groups)
}

/// The file system type of the mount holding `path`, from /proc/self/mounts.
fn fs_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount, kind) = (fields.next()?, fields.next()?, fields.next()?);
            let mount = mount.replace("\\040", " ");
            path.starts_with(&mount)
                .then(|| (mount.len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}
