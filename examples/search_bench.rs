//! What message search costs over a large history, on the sled chat store in a temporary
//! directory (the store's own query, below HTTP):
//!
//! - fills `--messages` messages (default 1,000,000) of 4–16 words drawn from a 20,000-word
//!   vocabulary with Zipf frequencies, in `--conversations` direct conversations among
//!   `--users` users, plus a share `--hot-percent` of them in one group every searcher belongs to;
//! - then times `--queries` searches of each kind (a common word, a rare word, a three-letter
//!   prefix, two words) by a member of the group, over all of that user's conversations, and
//!   prints one JSON object with p50/p99/max per kind and the fill rate.
//!
//! `cargo run --release --example search_bench -- --messages 1000000 [--dir /tmp/search-bench]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use courier::store::chat::{
    direct_conversation_key, ChatStore, CreateUser, NewMessage, UserRecord,
};
use courier::store::search::{query_words, SearchQuery};

/// Makes a query's text.
type MakeQuery<'a> = Box<dyn Fn(&mut StdRng) -> String + 'a>;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == name)
        .and_then(|at| args.get(at + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A pronounceable word for each rank.
fn vocabulary(size: usize) -> Vec<String> {
    const SYLLABLES: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "ba", "do", "fe", "gu", "hi", "jo",
        "pa", "qua", "ri", "so", "tu", "wy", "xe", "yo", "ze",
    ];
    (0..size)
        .map(|rank| {
            let mut word = String::new();
            let mut n = rank + SYLLABLES.len();
            while n > 0 {
                word.push_str(SYLLABLES[n % SYLLABLES.len()]);
                n /= SYLLABLES.len();
            }
            word
        })
        .collect()
}

/// Cumulative Zipf (s = 1) weights of `size` ranks.
fn zipf(size: usize) -> Vec<f64> {
    let mut total = 0.0;
    let mut cumulative = Vec::with_capacity(size);
    for rank in 1..=size {
        total += 1.0 / rank as f64;
        cumulative.push(total);
    }
    cumulative.iter().map(|weight| weight / total).collect()
}

fn draw(rng: &mut StdRng, cumulative: &[f64]) -> usize {
    let x: f64 = rng.random();
    cumulative.partition_point(|weight| *weight < x)
}

fn user(id: &str) -> UserRecord {
    UserRecord {
        id: id.to_owned(),
        full_name: format!("Bench {id}"),
        email: format!("{id}@bench.test"),
        password_hash: "$argon2id$v=19$m=8,t=1,p=1$unusable$unusable".to_owned(),
        profile_pic: String::new(),
        created_at: 0,
        updated_at: 0,
    }
}

fn percentiles(mut samples: Vec<Duration>) -> Value {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index].as_secs_f64() * 1000.0
    };
    json!({
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "max_ms": at(1.0),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let messages = arg("--messages", 1_000_000);
    let users = arg("--users", 1000).max(2);
    let conversations = arg("--conversations", 5000).max(1);
    let hot_percent = arg("--hot-percent", 10).min(100);
    let queries = arg("--queries", 500).max(1);
    let concurrency = arg("--concurrency", 512).max(1);
    // `--dir PATH` keeps the filled store for the next run (same arguments: it is not filled
    // again); without it the store lives in a temporary directory.
    let temp = tempfile::tempdir()?;
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .iter()
        .position(|arg| arg == "--dir")
        .and_then(|at| args.get(at + 1))
        .map_or_else(|| temp.path().to_owned(), std::path::PathBuf::from);
    let stores = courier::store::open(&courier::store::StoreConfig::sled(&dir))?;
    let chat: Arc<dyn ChatStore> = stores.chat;
    let already = chat.message_count().await? as usize;
    anyhow::ensure!(
        already == 0 || already == messages,
        "{} holds {already} messages, not {messages}",
        dir.display()
    );

    // Ids from the seed, so a kept store is searched as it was filled.
    let ids: Vec<String> = (0..users).map(|n| format!("{n:024x}")).collect();
    for id in &ids {
        let created = chat.create_user(user(id)).await?;
        anyhow::ensure!(already > 0 || created == CreateUser::Created);
    }
    let hot_group = format!("{:024x}", u64::MAX);
    let mut rng = StdRng::seed_from_u64(7);
    let pairs: Vec<(usize, usize)> = (0..conversations)
        .map(|_| {
            let a = rng.random_range(0..users);
            let b = (a + rng.random_range(1..users)) % users;
            (a, b)
        })
        .collect();
    let words = vocabulary(20_000);
    let weights = zipf(words.len());

    let started = Instant::now();
    let to_fill = if already == 0 { messages } else { 0 };
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..to_fill {
        let length = rng.random_range(4..=16);
        let text: Vec<&str> = (0..length)
            .map(|_| words[draw(&mut rng, &weights)].as_str())
            .collect();
        let in_hot = rng.random_range(0..100) < hot_percent;
        let (sender, receiver, group) = if in_hot {
            (rng.random_range(0..users), 0, Some(hot_group.clone()))
        } else {
            let (a, b) = pairs[rng.random_range(0..pairs.len())];
            (a, b, None)
        };
        let message = NewMessage {
            id: format!("{n:024x}"),
            sender_id: ids[sender].clone(),
            receiver_id: if group.is_some() {
                String::new()
            } else {
                ids[receiver].clone()
            },
            text: text.join(" "),
            created_at: 1_700_000_000_000 + n as u64,
            group_id: group,
            ..NewMessage::default()
        };
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let chat = Arc::clone(&chat);
        tasks.spawn(async move {
            let saved = chat.save_message(message).await;
            drop(permit);
            saved.map(|_| ())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let fill_secs = started.elapsed().as_secs_f64();

    // The searcher: user 0, in the hot group and in every direct conversation it has.
    let searcher = &ids[0];
    let mut scope: Vec<String> = pairs
        .iter()
        .filter(|(a, b)| *a == 0 || *b == 0)
        .map(|(a, b)| direct_conversation_key(&ids[*a], &ids[*b]))
        .collect();
    scope.sort();
    scope.dedup();
    let directs = scope.len();
    scope.push(hot_group.clone());

    let kinds: [(&str, MakeQuery); 4] = [
        (
            "common_word",
            Box::new(|rng: &mut StdRng| words[rng.random_range(5..50)].clone()),
        ),
        (
            "rare_word",
            Box::new(|rng: &mut StdRng| words[rng.random_range(5_000..20_000)].clone()),
        ),
        (
            "prefix_3",
            Box::new(|rng: &mut StdRng| {
                words[rng.random_range(0..2_000)].chars().take(3).collect()
            }),
        ),
        (
            "two_words",
            Box::new(|rng: &mut StdRng| {
                format!(
                    "{} {}",
                    words[rng.random_range(0..200)],
                    words[rng.random_range(0..300)]
                )
            }),
        ),
    ];
    let mut query_rng = StdRng::seed_from_u64(11);
    let mut report = serde_json::Map::new();
    for (name, make) in &kinds {
        let mut samples = Vec::with_capacity(queries);
        let mut hits = 0usize;
        for _ in 0..queries {
            let query = SearchQuery {
                words: query_words(&make(&mut query_rng)),
                conversations: scope.clone(),
                limit: 20,
                ..SearchQuery::default()
            };
            let started = Instant::now();
            let page = chat.search_messages(&query).await?;
            samples.push(started.elapsed());
            hits += page.total;
        }
        let mut figures = percentiles(samples);
        figures["mean_hits"] = json!(hits / queries);
        report.insert((*name).to_owned(), figures);
    }
    println!(
        "{}",
        json!({
            "bench": "search",
            "messages": messages,
            "users": users,
            "conversations": conversations,
            "hot_group_percent": hot_percent,
            "searcher": { "id": searcher, "direct_conversations": directs, "groups": 1 },
            "filled": to_fill,
            "fill_secs": fill_secs,
            "fill_messages_per_sec": to_fill as f64 / fill_secs,
            "queries_per_kind": queries,
            "search": Value::Object(report),
        })
    );
    Ok(())
}
