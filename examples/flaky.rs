//! Delivery under a flaky network: many clients whose sockets drop every few seconds while
//! messages flow, then a server restart with thousands of sockets to win back. Prints one JSON
//! line; exits 1 if any client missed a message meant for it.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example flaky -- --clients 1000 --restart-sockets 10000
//! ```
//!
//! Each client is a user with one socket and four partners (its neighbours on a ring). It keeps
//! its socket for a random 2–5 s, drops it, waits 100–500 ms and reconnects, then catches up
//! each of its conversations with `GET /api/messages/:partner?after=<seq>` from the last `seq`
//! it had before the drop, as the web client does. Meanwhile senders post messages between
//! partners at `--rate`. A message counts as delivered *live* when its first copy came on a
//! socket, *replayed* when it came from a catch-up; latencies run from the send's 202.
//!
//! The restart phase opens `--restart-sockets` sockets, kills the server (`kill -9`), starts it
//! again on the same data and port, and times how long until 99 % of the sockets are back
//! (each retries after 100 ms, then doubling up to 2 s, with jitter).

#[allow(dead_code)]
#[path = "loadgen/lib.rs"]
mod loadgen;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::StreamExt;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(
    about = "deliver messages to clients whose sockets keep dropping, then win sockets back after a restart"
)]
struct Args {
    /// The server binary (started on a temp data dir and a free loopback port).
    #[arg(long, default_value = "target/release/courier")]
    bin: PathBuf,
    /// Clients (users), one socket each, in the flaky phase.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Messages per second offered in the flaky phase.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Length of the flaky phase.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Sockets reconnecting after the restart (0 skips that phase).
    #[arg(long, default_value_t = 10_000)]
    restart_sockets: usize,
    /// Seed of every random choice (random if not given; printed either way).
    #[arg(long)]
    seed: Option<u64>,
}

const PARTNER_OFFSETS: [usize; 2] = [1, 2];

/// Everyone's partners: neighbours one and two steps away on a ring, both ways.
fn partners(index: usize, count: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for offset in PARTNER_OFFSETS {
        if offset < count {
            out.push((index + offset) % count);
            out.push((index + count - offset) % count);
        }
    }
    out.sort_unstable();
    out.dedup();
    out.retain(|&other| other != index);
    out
}

fn start_server(bin: &Path, data_dir: &Path, port: u16, log: &Path) -> anyhow::Result<Child> {
    loadgen::spawn_server(Command::new(bin), data_dir, port, log)
}

async fn wait_ready(client: &reqwest::Client, target: &loadgen::Target) -> anyhow::Result<()> {
    loadgen::wait_ready(client, target, Duration::from_secs(60)).await
}

/// What one client received, first copies only.
#[derive(Default)]
struct Inbox {
    /// Message id → how it first arrived and when.
    first: HashMap<String, (bool, Instant)>,
    /// Highest `seq` seen per partner's conversation.
    last_seq: HashMap<String, u64>,
    /// Copies that arrived a second time (a catch-up overlapping the live socket): harmless,
    /// a client drops them by id; counted to show the overlap.
    repeats: u64,
    /// Messages that were not for this client.
    strays: u64,
}

impl Inbox {
    fn receive(&mut self, me: &str, message: &Value, live: bool) {
        let (Some(id), Some(sender), Some(receiver)) = (
            message["_id"].as_str(),
            message["senderId"].as_str(),
            message["receiverId"].as_str(),
        ) else {
            return;
        };
        if sender == me {
            // The echo of this user's own send (or its own side of a catch-up).
            return;
        }
        if receiver != me {
            self.strays += 1;
            return;
        }
        if let Some(seq) = message["seq"].as_u64() {
            let last = self.last_seq.entry(sender.to_owned()).or_default();
            *last = (*last).max(seq);
        }
        if self.first.contains_key(id) {
            self.repeats += 1;
        } else {
            self.first.insert(id.to_owned(), (live, Instant::now()));
        }
    }
}

struct Client {
    account: loadgen::Account,
    partners: Vec<loadgen::Account>,
    inbox: Mutex<Inbox>,
    reconnects: AtomicU64,
}

/// Fetches every message of each partner's conversation after the `seq` this client had.
async fn catch_up(
    http: &reqwest::Client,
    target: &loadgen::Target,
    client: &Client,
    from: &HashMap<String, u64>,
) -> anyhow::Result<()> {
    for partner in &client.partners {
        let mut after = from.get(&partner.id).copied().unwrap_or(0);
        loop {
            let page: Vec<Value> = http
                .get(target.http(&format!(
                    "/api/messages/{}?after={after}&limit=200",
                    partner.id
                )))
                .bearer_auth(&client.account.token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let Some(last) = page.last() else { break };
            after = last["seq"].as_u64().context("a message without seq")?;
            let mut inbox = client.inbox.lock();
            for message in &page {
                inbox.receive(&client.account.id, message, false);
            }
        }
    }
    Ok(())
}

/// One client's life: hold the socket for a while, drop it, reconnect and catch up, until
/// `stop`; then one last reconnect and catch-up.
async fn run_client(
    http: reqwest::Client,
    target: loadgen::Target,
    client: Arc<Client>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut first = true;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // The seqs had before the drop: the catch-up starts there, so nothing stored while the
        // socket was down (or while it reconnected) is missed.
        let before = client.inbox.lock().last_seq.clone();
        let mut socket = loop {
            match loadgen::connect_socket(&target, &client.account.token).await {
                Ok(socket) => break socket,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        if !first {
            client.reconnects.fetch_add(1, Ordering::Relaxed);
            catch_up(&http, &target, &client, &before).await?;
        }
        first = false;
        if stopping {
            return Ok(());
        }
        let hold = Duration::from_millis(rng.random_range(2_000..=5_000));
        let until = tokio::time::Instant::now() + hold;
        loop {
            tokio::select! {
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
                        if frame["type"] == "newMessage" {
                            client.inbox.lock().receive(&client.account.id, &frame["data"], true);
                        }
                    }
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => break,
                },
                _ = tokio::time::sleep_until(until) => break,
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        // The drop: the connection goes without a close handshake.
        drop(socket);
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..=500))).await;
    }
}

struct SentMessage {
    id: String,
    receiver: usize,
    acked_at: Instant,
}

async fn run_flaky(
    args: &Args,
    http: &reqwest::Client,
    target: &loadgen::Target,
    seed: u64,
) -> anyhow::Result<(Value, bool)> {
    let accounts = loadgen::signup_all(http, target, "flaky", args.clients, 32).await?;
    let clients: Vec<Arc<Client>> = (0..accounts.len())
        .map(|index| {
            Arc::new(Client {
                account: accounts[index].clone(),
                partners: partners(index, accounts.len())
                    .into_iter()
                    .map(|other| accounts[other].clone())
                    .collect(),
                inbox: Mutex::new(Inbox::default()),
                reconnects: AtomicU64::new(0),
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, client) in clients.iter().enumerate() {
        tasks.spawn(run_client(
            http.clone(),
            target.clone(),
            client.clone(),
            stop.clone(),
            seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
    }
    // Let every socket connect before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let sent = Arc::new(Mutex::new(Vec::<SentMessage>::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(args.duration_secs);
    let mut next = started;
    let mut sends = tokio::task::JoinSet::new();
    let mut number = 0u64;
    while next < deadline {
        tokio::time::sleep_until(next).await;
        next += interval;
        let from = rng.random_range(0..clients.len());
        let partner_list = partners(from, clients.len());
        if partner_list.is_empty() {
            continue;
        }
        let to = partner_list[rng.random_range(0..partner_list.len())];
        number += 1;
        let (http, target, sent, refused) =
            (http.clone(), target.clone(), sent.clone(), refused.clone());
        let (sender, receiver) = (clients[from].account.clone(), clients[to].account.clone());
        sends.spawn(async move {
            let response = http
                .post(target.http(&format!("/api/messages/send/{}", receiver.id)))
                .bearer_auth(&sender.token)
                .json(&json!({ "text": format!("flaky {number}"), "clientMessageId": format!("flaky-{number}") }))
                .send()
                .await;
            let body = match response {
                Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                    response.json::<Value>().await.ok()
                }
                _ => None,
            };
            match body.as_ref().and_then(|body| body["messageId"].as_str()) {
                Some(id) => sent.lock().push(SentMessage {
                    id: id.to_owned(),
                    receiver: to,
                    acked_at: Instant::now(),
                }),
                None => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while sends.join_next().await.is_some() {}
    // Time for the last messages to be processed, then every client reconnects and catches up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.context("a client task panicked")??;
    }

    let sent = std::mem::take(&mut *sent.lock());
    let mut live = loadgen::histogram();
    let mut replayed = loadgen::histogram();
    let mut missing = 0u64;
    let mut expected: Vec<HashSet<&str>> = vec![HashSet::new(); clients.len()];
    for message in &sent {
        expected[message.receiver].insert(&message.id);
        let inbox = clients[message.receiver].inbox.lock();
        match inbox.first.get(&message.id) {
            Some((true, at)) => {
                loadgen::record(&mut live, at.saturating_duration_since(message.acked_at))
            }
            Some((false, at)) => loadgen::record(
                &mut replayed,
                at.saturating_duration_since(message.acked_at),
            ),
            None => missing += 1,
        }
    }
    let mut unexpected = 0u64;
    let mut repeats = 0u64;
    let mut strays = 0u64;
    let mut reconnects = 0u64;
    for (index, client) in clients.iter().enumerate() {
        let inbox = client.inbox.lock();
        unexpected += inbox
            .first
            .keys()
            .filter(|id| !expected[index].contains(id.as_str()))
            .count() as u64;
        repeats += inbox.repeats;
        strays += inbox.strays;
        reconnects += client.reconnects.load(Ordering::Relaxed);
    }
    let delivered = live.len() + replayed.len();
    let ok = missing == 0 && unexpected == 0 && strays == 0;
    Ok((
        json!({
            "clients": clients.len(),
            "offeredRate": args.rate,
            "durationSecs": args.duration_secs,
            "acknowledged": sent.len(),
            "refused": refused.load(Ordering::Relaxed),
            "delivered": delivered,
            "missing": missing,
            "unexpected": unexpected,
            "strays": strays,
            "reconnects": reconnects,
            "liveSharePct": (live.len() as f64 * 10_000.0 / delivered.max(1) as f64).round() / 100.0,
            "liveLatencyMs": loadgen::percentiles(&live),
            "replayLatencyMs": loadgen::percentiles(&replayed),
            "overlapCopies": repeats,
        }),
        ok,
    ))
}

/// Opens `count` sockets, kills the server, starts it again and times the sockets' return.
async fn run_restart(
    args: &Args,
    http: &reqwest::Client,
    target: &loadgen::Target,
    server: &mut Child,
    restart: impl FnOnce() -> anyhow::Result<Child>,
) -> anyhow::Result<Value> {
    let count = args.restart_sockets;
    let users = (count / 10).max(1);
    let accounts = loadgen::signup_all(http, target, "restart", users, 32).await?;
    let connected = Arc::new(AtomicU64::new(0));
    let back: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let armed = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let token = accounts[index % users].token.clone();
        let (target, connected, back, armed) = (
            target.clone(),
            connected.clone(),
            back.clone(),
            armed.clone(),
        );
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(index as u64);
            let mut delay = Duration::from_millis(100);
            let mut lost = false;
            loop {
                match loadgen::connect_socket(&target, &token).await {
                    Ok(mut socket) => {
                        delay = Duration::from_millis(100);
                        if lost {
                            back.lock().push(Instant::now());
                            return;
                        }
                        connected.fetch_add(1, Ordering::Relaxed);
                        // Hold it until the server goes away.
                        while let Some(Ok(_)) = socket.next().await {}
                        lost = armed.load(Ordering::Relaxed);
                        if !lost {
                            return;
                        }
                    }
                    Err(_) if !lost && !armed.load(Ordering::Relaxed) => {
                        tokio::time::sleep(delay).await;
                    }
                    Err(_) => {
                        lost = true;
                        let jitter = rng.random_range(0.5..1.5);
                        tokio::time::sleep(delay.mul_f64(jitter)).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
    }
    let opened = Instant::now();
    while (connected.load(Ordering::Relaxed) as usize) < count {
        if opened.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {} of {count} sockets connected within 120 s",
                connected.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    armed.store(true, Ordering::Relaxed);
    let killed = Instant::now();
    server.kill().context("cannot kill the server")?;
    server.wait().context("cannot reap the server")?;
    *server = restart()?;
    wait_ready(http, target).await?;
    let ready = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while back.lock().len() < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut times = back.lock().clone();
    times.sort_unstable();
    tasks.abort_all();
    let at = |share: usize| {
        times
            .get((count * share).div_ceil(100).saturating_sub(1))
            .map(|t| (t.saturating_duration_since(ready).as_secs_f64() * 1000.0).round())
    };
    Ok(json!({
        "sockets": count,
        "back": times.len(),
        "restartMs": (ready - killed).as_millis() as u64,
        "msFromReadyTo50Pct": at(50),
        "msFromReadyTo99Pct": at(99),
        "msFromReadyToAll": at(100),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.bin.is_file() {
        bail!(
            "no server binary at {} (build it, or pass --bin)",
            args.bin.display()
        );
    }
    if args.clients < 2 {
        bail!("--clients must be at least 2");
    }
    loadgen::raise_fd_limit();
    let seed = args.seed.unwrap_or_else(rand::random);
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let data_dir = dir.path().join("data");
    let log = dir.path().join("server.log");
    let port = loadgen::free_port()?;
    let target = loadgen::Target::parse(&format!("http://127.0.0.1:{port}"))?;
    let http = loadgen::http_client(256, Duration::from_secs(30))?;
    let mut server = start_server(&args.bin, &data_dir, port, &log)?;
    wait_ready(&http, &target).await?;

    let (flaky, ok) = run_flaky(&args, &http, &target, seed).await?;
    let restart = if args.restart_sockets > 0 {
        let (bin, data, log) = (args.bin.clone(), data_dir.clone(), log.clone());
        run_restart(&args, &http, &target, &mut server, move || {
            start_server(&bin, &data, port, &log)
        })
        .await?
    } else {
        Value::Null
    };
    server.kill().ok();
    server.wait().ok();
    println!(
        "{}",
        json!({ "seed": seed, "flaky": flaky, "restart": restart, "ok": ok })
    );
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
