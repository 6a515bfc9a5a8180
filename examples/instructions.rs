//! Server instructions per chat message, counted by valgrind's callgrind: a figure that does not
//! depend on the machine's speed or how busy it is, so two builds can be compared anywhere.
//! Prints one JSON line.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example instructions                   # 2,000 messages against 400
//! cargo run --release --example instructions -- --bin /tmp/old-courier   # another build
//! ```
//!
//! The server runs twice under `valgrind --tool=callgrind`, each time on a fresh data dir with
//! the same users and sockets; one run sends `--baseline-messages`, the other `--messages`
//! (text, between fixed pairs, `--senders` at a time, each waited for until the receiver's
//! socket has it). Start-up, sign-ups, connections and shutdown cost the same in both, so the
//! difference of the two totals divided by the difference of the message counts is what one
//! message costs: HTTP send, durable job, processing, storage, delivery to the receiver's and
//! the sender's sockets. Valgrind runs the server's threads one at a time, so the count is
//! exact but the run is slow (tens of messages a second).

#[allow(dead_code)]
#[path = "loadgen/lib.rs"]
mod loadgen;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(about = "count the server's instructions per chat message under callgrind")]
struct Args {
    /// The server binary.
    #[arg(long, default_value = "target/release/courier")]
    bin: PathBuf,
    /// Messages of the measured run.
    #[arg(long, default_value_t = 2_000)]
    messages: u64,
    /// Messages of the baseline run (must be fewer).
    #[arg(long, default_value_t = 400)]
    baseline_messages: u64,
    /// Users (half send, half receive), each with one socket.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Sends in flight at once.
    #[arg(long, default_value_t = 8)]
    senders: usize,
}

fn start_under_callgrind(bin: &Path, dir: &Path, port: u16) -> anyhow::Result<Child> {
    let mut valgrind = Command::new("valgrind");
    valgrind
        .arg("--tool=callgrind")
        .arg(format!(
            "--callgrind-out-file={}",
            dir.join("callgrind.out").display()
        ))
        .arg(bin);
    loadgen::spawn_server(valgrind, &dir.join("data"), port, &dir.join("server.log"))
        .context("cannot start valgrind (apt-get install valgrind)")
}

/// The total instruction count (`Ir`) of a callgrind output file.
fn total_instructions(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("no callgrind output at {}", path.display()))?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .context("the callgrind output has no summary line")
}

/// One run: start, sign up, connect, send `messages`, wait for every delivery, shut down;
/// returns the server's instruction count.
async fn run(args: &Args, messages: u64) -> anyhow::Result<u64> {
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let port = loadgen::free_port()?;
    let target = loadgen::Target::parse(&format!("http://127.0.0.1:{port}"))?;
    let http = loadgen::http_client(args.senders * 2, Duration::from_secs(120))?;
    let mut server = start_under_callgrind(&args.bin, dir.path(), port)?;
    loadgen::wait_ready(&http, &target, Duration::from_secs(300)).await?;
    let users = args.users.max(2) / 2 * 2;
    let accounts = loadgen::signup_all(&http, &target, "ir", users, 4).await?;
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = tokio::task::JoinSet::new();
    for account in &accounts {
        let mut socket = loadgen::connect_socket(&target, &account.token).await?;
        let (received, me) = (received.clone(), account.id.clone());
        readers.spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if frame["type"] == "newMessage" && frame["data"]["receiverId"] == me.as_str() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let pairs: Vec<(loadgen::Account, loadgen::Account)> = accounts
        .chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect();
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..args.senders.max(1) {
        let (http, target, pairs, next) =
            (http.clone(), target.clone(), pairs.clone(), next.clone());
        senders.spawn(async move {
            loop {
                let number = next.fetch_add(1, Ordering::Relaxed);
                if number >= messages {
                    return Ok::<(), anyhow::Error>(());
                }
                let (from, to) = &pairs[number as usize % pairs.len()];
                let status = http
                    .post(target.http(&format!("/api/messages/send/{}", to.id)))
                    .bearer_auth(&from.token)
                    .json(&json!({ "text": format!("message {number:06} {}", "x".repeat(85)) }))
                    .send()
                    .await?
                    .status();
                if status != reqwest::StatusCode::ACCEPTED {
                    bail!("a send answered {status}");
                }
            }
        });
    }
    while let Some(done) = senders.join_next().await {
        done.context("a sender panicked")??;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while received.load(Ordering::Relaxed) < messages {
        if Instant::now() > deadline {
            bail!(
                "only {} of {messages} messages reached their receiver",
                received.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    readers.abort_all();
    // A graceful stop, so callgrind writes its totals.
    let pid = libc::pid_t::try_from(server.id()).context("pid out of range")?;
    // SAFETY: kill only sends a signal to the child we started.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        bail!("cannot signal the server");
    }
    let status = server.wait().context("cannot wait for the server")?;
    if !status.success() {
        bail!(
            "the server exited with {status}; see {}",
            dir.path().join("server.log").display()
        );
    }
    total_instructions(&dir.path().join("callgrind.out"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.baseline_messages >= args.messages {
        bail!("--baseline-messages must be fewer than --messages");
    }
    if !args.bin.is_file() {
        bail!(
            "no server binary at {} (build it, or pass --bin)",
            args.bin.display()
        );
    }
    let started = Instant::now();
    let baseline = run(&args, args.baseline_messages).await?;
    let measured = run(&args, args.messages).await?;
    let per_message =
        measured.saturating_sub(baseline) as f64 / (args.messages - args.baseline_messages) as f64;
    println!(
        "{}",
        json!({
            "tool": "callgrind",
            "bin": args.bin.display().to_string(),
            "instructionsPerMessage": per_message.round(),
            "baseline": { "messages": args.baseline_messages, "instructions": baseline },
            "measured": { "messages": args.messages, "instructions": measured },
            "elapsedSecs": started.elapsed().as_secs_f64().round(),
        })
    );
    Ok(())
}
