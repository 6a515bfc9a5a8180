//! Chaos with an audit: the real server under chat load, `kill -9`ed at random moments, round
//! after round, then every acknowledged message checked. Prints one JSON line; exits 1 if any
//! message was lost, duplicated or out of order.
//!
//! ```text
//! cargo build --release && cargo run --release --example chaos -- --rounds 100
//! cargo run --example chaos -- --bin target/debug/courier --rounds 10     # what .ci/run does
//! ```
//!
//! Each conversation has one sending task that alternates its two users and waits for each
//! send's answer, so the order it sent in is the order the conversation must show. A send is
//! *acknowledged* when it answered 202; one cut off by the kill is *in doubt* and, as a client
//! would, is sent again with the same `clientMessageId` once the server is back. After the last
//! round the server starts once more, drains its queue, and the audit reads every conversation
//! through the API: every acknowledged message is there exactly once with its text, no text
//! appears twice, and every conversation is in send order.

#[allow(dead_code)]
#[path = "loadgen/lib.rs"]
mod loadgen;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "kill -9 the server under chat load, then audit every acknowledged message")]
struct Args {
    /// The server binary.
    #[arg(long, default_value = "target/release/courier")]
    bin: PathBuf,
    /// How many times the server is killed.
    #[arg(long, default_value_t = 100)]
    rounds: u32,
    /// Conversations, each with its own sender task (two users each).
    #[arg(long, default_value_t = 8)]
    conversations: usize,
    /// Shortest and longest time the server runs under load before the kill, in ms.
    #[arg(long, default_value_t = 200)]
    min_run_ms: u64,
    #[arg(long, default_value_t = 1500)]
    max_run_ms: u64,
    /// Seed of the kill moments (random if not given; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the data directory (printed) instead of removing it.
    #[arg(long)]
    keep: bool,
}

/// One message a sender task sent: where it belongs and what became of it.
#[derive(Debug, Clone)]
struct Sent {
    /// Position in its conversation's send order.
    index: usize,
    client_id: String,
    text: String,
    /// The server's id, once a send answered 202.
    message_id: Option<String>,
}

/// A conversation's two users and everything sent in it.
struct Conversation {
    users: [loadgen::Account; 2],
    sent: Vec<Sent>,
}

#[derive(Debug, Default)]
struct Totals {
    acknowledged: u64,
    in_doubt_at_kill: u64,
    refused: u64,
}

fn start_server(bin: &Path, data_dir: &Path, port: u16, log: &Path) -> anyhow::Result<Child> {
    loadgen::spawn_server(Command::new(bin), data_dir, port, log)
}

async fn wait_ready(client: &reqwest::Client, target: &loadgen::Target) -> anyhow::Result<()> {
    loadgen::wait_ready(client, target, Duration::from_secs(60)).await
}

enum Outcome {
    Acknowledged(String),
    /// The server answered, but not 202 (e.g. 503 while busy): not sent, try again.
    Refused,
    /// No answer: the kill cut it off.
    InDoubt,
}

async fn send(
    client: &reqwest::Client,
    target: &loadgen::Target,
    from: &loadgen::Account,
    to: &loadgen::Account,
    message: &Sent,
) -> Outcome {
    let response = client
        .post(target.http(&format!("/api/messages/send/{}", to.id)))
        .bearer_auth(&from.token)
        .json(&json!({ "text": message.text, "clientMessageId": message.client_id }))
        .send()
        .await;
    let Ok(response) = response else {
        return Outcome::InDoubt;
    };
    if response.status() != reqwest::StatusCode::ACCEPTED {
        return Outcome::Refused;
    }
    match response.json::<Value>().await {
        Ok(body) => match body["messageId"].as_str() {
            Some(id) => Outcome::Acknowledged(id.to_owned()),
            None => Outcome::InDoubt,
        },
        Err(_) => Outcome::InDoubt,
    }
}

/// Sends in one conversation until the server goes away: first whatever is still in doubt or
/// refused (same `clientMessageId`, as a client retries), then new messages.
async fn load_conversation(
    client: reqwest::Client,
    target: loadgen::Target,
    number: usize,
    round: u32,
    mut conversation: Conversation,
) -> (Conversation, Totals) {
    let mut totals = Totals::default();
    let mut next = conversation
        .sent
        .iter()
        .position(|sent| sent.message_id.is_none())
        .unwrap_or(conversation.sent.len());
    loop {
        if next == conversation.sent.len() {
            let index = conversation.sent.len();
            conversation.sent.push(Sent {
                index,
                client_id: format!("chaos-c{number}-n{index}"),
                text: format!("chaos conversation {number} message {index} (round {round})"),
                message_id: None,
            });
        }
        let message = conversation.sent[next].clone();
        let from = &conversation.users[message.index % 2];
        let to = &conversation.users[1 - message.index % 2];
        match send(&client, &target, from, to, &message).await {
            Outcome::Acknowledged(id) => {
                totals.acknowledged += 1;
                conversation.sent[next].message_id = Some(id);
                next += 1;
            }
            Outcome::Refused => {
                totals.refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Outcome::InDoubt => {
                totals.in_doubt_at_kill += 1;
                return (conversation, totals);
            }
        }
    }
}

async fn drain(client: &reqwest::Client, target: &loadgen::Target) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let stats: Value = client
            .get(target.http("/api/messages/queue/stats"))
            .send()
            .await?
            .json()
            .await?;
        let counts = &stats["queues"]["message"];
        let left: u64 = ["waiting", "active", "delayed"]
            .iter()
            .map(|state| counts[state].as_u64().unwrap_or(0))
            .sum();
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the message queue did not drain within 120 s")
}

#[derive(Debug, Default)]
struct Audit {
    stored: u64,
    lost: Vec<String>,
    duplicated: Vec<String>,
    wrong_text: Vec<String>,
    out_of_order: Vec<String>,
    unexpected: Vec<String>,
}

async fn audit(
    client: &reqwest::Client,
    target: &loadgen::Target,
    number: usize,
    conversation: &Conversation,
    audit: &mut Audit,
) -> anyhow::Result<()> {
    let [reader, other] = &conversation.users;
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page: Vec<Value> = client
            .get(target.http(&format!(
                "/api/messages/{}?after={after}&limit=200",
                other.id
            )))
            .bearer_auth(&reader.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let Some(last) = page.last() else { break };
        after = last["seq"].as_u64().context("a message without seq")?;
        stored.extend(page);
    }
    audit.stored += stored.len() as u64;
    let by_text: HashMap<&str, &Sent> = conversation
        .sent
        .iter()
        .map(|sent| (sent.text.as_str(), sent))
        .collect();
    let mut seen: HashMap<&str, u32> = HashMap::new();
    let mut last_index = None;
    for message in &stored {
        let id = message["_id"].as_str().unwrap_or_default();
        let text = message["text"].as_str().unwrap_or_default();
        let Some(sent) = by_text.get(text) else {
            audit
                .unexpected
                .push(format!("conversation {number}: {id} {text:?}"));
            continue;
        };
        if let Some(expected) = &sent.message_id {
            if expected != id {
                audit
                    .wrong_text
                    .push(format!("conversation {number}: {id} holds {text:?}"));
            }
        }
        *seen.entry(text).or_default() += 1;
        if last_index.is_some_and(|last| sent.index < last) {
            audit.out_of_order.push(format!(
                "conversation {number}: message {} after {}",
                sent.index,
                last_index.unwrap_or_default()
            ));
        }
        last_index = Some(sent.index);
    }
    for (text, count) in &seen {
        if *count > 1 {
            audit
                .duplicated
                .push(format!("conversation {number}: {text:?} x{count}"));
        }
    }
    for sent in &conversation.sent {
        if sent.message_id.is_some() && !seen.contains_key(sent.text.as_str()) {
            audit
                .lost
                .push(format!("conversation {number}: message {}", sent.index));
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.min_run_ms > args.max_run_ms {
        bail!("--min-run-ms must not exceed --max-run-ms");
    }
    if !args.bin.is_file() {
        bail!(
            "no server binary at {} (build it, or pass --bin)",
            args.bin.display()
        );
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let data_dir = dir.path().join("data");
    let log = dir.path().join("server.log");
    let client = loadgen::http_client(64, Duration::from_secs(10))?;
    let started = Instant::now();

    let port = loadgen::free_port()?;
    let target = loadgen::Target::parse(&format!("http://127.0.0.1:{port}"))?;
    let mut server = start_server(&args.bin, &data_dir, port, &log)?;
    wait_ready(&client, &target).await?;
    let accounts = loadgen::signup_all(
        &client,
        &target,
        "chaos",
        args.conversations * 2,
        args.conversations * 2,
    )
    .await?;
    let mut conversations: Vec<Conversation> = accounts
        .chunks_exact(2)
        .map(|pair| Conversation {
            users: [pair[0].clone(), pair[1].clone()],
            sent: Vec::new(),
        })
        .collect();
    let mut totals = Totals::default();

    for round in 0..args.rounds {
        let target = if round == 0 {
            target.clone()
        } else {
            let port = loadgen::free_port()?;
            let target = loadgen::Target::parse(&format!("http://127.0.0.1:{port}"))?;
            server = start_server(&args.bin, &data_dir, port, &log)?;
            wait_ready(&client, &target)
                .await
                .with_context(|| format!("round {round}; the server's log: {}", log.display()))?;
            target
        };
        let run_for = Duration::from_millis(rng.random_range(args.min_run_ms..=args.max_run_ms));
        run_round(
            &client,
            &target,
            round,
            &mut conversations,
            &mut totals,
            &mut server,
            run_for,
        )
        .await?;
    }

    // The last start: retry what was in doubt, let the queue drain, read everything back.
    let port = loadgen::free_port()?;
    let target = loadgen::Target::parse(&format!("http://127.0.0.1:{port}"))?;
    let mut server = start_server(&args.bin, &data_dir, port, &log)?;
    wait_ready(&client, &target).await?;
    for (number, conversation) in conversations.iter_mut().enumerate() {
        for sent in conversation
            .sent
            .iter_mut()
            .filter(|s| s.message_id.is_none())
        {
            let from = &conversation.users[sent.index % 2];
            let to = &conversation.users[1 - sent.index % 2];
            match send(&client, &target, from, to, sent).await {
                Outcome::Acknowledged(id) => {
                    totals.acknowledged += 1;
                    sent.message_id = Some(id);
                }
                _ => bail!("conversation {number}: a retried send was not accepted"),
            }
        }
    }
    drain(&client, &target).await?;
    let mut result = Audit::default();
    for (number, conversation) in conversations.iter().enumerate() {
        audit(&client, &target, number, conversation, &mut result).await?;
    }
    server.kill().ok();
    server.wait().ok();

    let failed = !(result.lost.is_empty()
        && result.duplicated.is_empty()
        && result.wrong_text.is_empty()
        && result.out_of_order.is_empty()
        && result.unexpected.is_empty());
    let sample = |list: &Vec<String>| list.iter().take(5).cloned().collect::<Vec<_>>();
    println!(
        "{}",
        json!({
            "rounds": args.rounds,
            "seed": seed,
            "conversations": args.conversations,
            "acknowledged": totals.acknowledged,
            "inDoubtAtKill": totals.in_doubt_at_kill,
            "refusedBusy": totals.refused,
            "stored": result.stored,
            "lost": result.lost.len(),
            "duplicated": result.duplicated.len(),
            "wrongText": result.wrong_text.len(),
            "outOfOrder": result.out_of_order.len(),
            "unexpected": result.unexpected.len(),
            "examples": {
                "lost": sample(&result.lost),
                "duplicated": sample(&result.duplicated),
                "outOfOrder": sample(&result.out_of_order),
            },
            "elapsedSecs": started.elapsed().as_secs_f64(),
            "ok": !failed,
        })
    );
    if args.keep {
        let kept = dir.keep();
        eprintln!("data kept in {}", kept.display());
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// One round: load every conversation, kill the server at a random moment, collect what the
/// senders learned.
async fn run_round(
    client: &reqwest::Client,
    target: &loadgen::Target,
    round: u32,
    conversations: &mut Vec<Conversation>,
    totals: &mut Totals,
    server: &mut Child,
    run_for: Duration,
) -> anyhow::Result<()> {
    let tasks: Vec<_> = std::mem::take(conversations)
        .into_iter()
        .enumerate()
        .map(|(number, conversation)| {
            tokio::spawn(load_conversation(
                client.clone(),
                target.clone(),
                number,
                round,
                conversation,
            ))
        })
        .collect();
    tokio::time::sleep(run_for).await;
    server.kill().context("cannot kill the server")?;
    server.wait().context("cannot reap the server")?;
    for task in tasks {
        let (conversation, round_totals) = task.await.context("a sender task panicked")?;
        conversations.push(conversation);
        totals.acknowledged += round_totals.acknowledged;
        totals.in_doubt_at_kill += round_totals.in_doubt_at_kill;
        totals.refused += round_totals.refused;
    }
    Ok(())
}
