//! The group fan-out run: one group of `members` users, each with one socket, and messages
//! posted to it by random members at a fixed offered rate (open loop). Every message is followed
//! from its send request to its `newGroupMessage` frame on every member's socket; the report has
//! deliveries per second, post → last member's delivery percentiles, loss and duplicates, and
//! the generator's own CPU (it shares the machine with the server).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{stream, StreamExt as _};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{
    connect_socket, cpu_ms, histogram, http_client, load_average, machine_jiffies, machine_usage,
    percentiles, record, round, rss_mb, send_one, signup_all, Target, Ws, MAX_MESSAGES,
    MAX_SOCKETS,
};

/// What a group run does.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// Members of the group, each with one socket.
    pub members: usize,
    /// Messages posted per second, on a fixed timeline.
    pub rate: f64,
    pub duration: Duration,
    /// Posting time before the measured window (checked for loss, not timed).
    pub warmup: Duration,
    /// How long to wait after the last 202 for deliveries still on their way.
    pub grace: Duration,
    pub max_in_flight: usize,
    pub text_bytes: usize,
    pub seed: u64,
    pub server_pid: Option<u32>,
    pub request_timeout: Duration,
    pub setup_concurrency: usize,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            members: 1_000,
            rate: 100.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            grace: Duration::from_secs(10),
            max_in_flight: 256,
            text_bytes: 100,
            seed: 1,
            server_pid: None,
            request_timeout: Duration::from_secs(30),
            setup_concurrency: 64,
        }
    }
}

/// A message id (24 hex digits) as a number: cheap to keep a million of.
fn id_number(id: &str) -> Option<u128> {
    (id.len() == 24)
        .then(|| u128::from_str_radix(id, 16).ok())
        .flatten()
}

/// The id of a `newGroupMessage` frame, read without parsing it: the server writes `_id` first.
fn group_message_id(text: &str) -> Option<u128> {
    let rest = text.strip_prefix(r#"{"type":"newGroupMessage","data":{"_id":""#)?;
    id_number(rest.get(..24)?)
}

struct SocketLog {
    /// Message id and first arrival.
    arrivals: Vec<(u128, Instant)>,
    duplicates: u64,
    other_frames: u64,
    ended_early: Option<String>,
}

async fn read_group_socket(
    mut socket: Ws,
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
    registered: oneshot::Sender<()>,
) -> SocketLog {
    let mut log = SocketLog {
        arrivals: Vec::new(),
        duplicates: 0,
        other_frames: 0,
        ended_early: None,
    };
    let mut registered = Some(registered);
    let mut seen: HashSet<u128> = HashSet::new();
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            message = socket.next() => message,
        };
        let now = Instant::now();
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                log.ended_early = Some(format!("closed by server: {frame:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(err)) => {
                log.ended_early = Some(format!("read failed: {err}"));
                break;
            }
            None => {
                log.ended_early = Some("stream ended".to_owned());
                break;
            }
        };
        if let Some(registered) = registered.take() {
            let _ = registered.send(());
        }
        match group_message_id(&text) {
            Some(id) => {
                if seen.insert(id) {
                    log.arrivals.push((id, now));
                    delivered.fetch_add(1, Ordering::Relaxed);
                } else {
                    log.duplicates += 1;
                }
            }
            None => log.other_frames += 1,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    log
}

struct Post {
    start: Instant,
    outcome: Result<(u128, Instant), String>,
    warmup: bool,
}

/// Runs the group load and returns the report.
pub async fn run_group(target: &Target, options: &GroupOptions) -> anyhow::Result<Value> {
    if options.members < 2 || options.members > MAX_SOCKETS.min(10_000) {
        bail!("--members must be between 2 and 10000 (a group's limit)");
    }
    if !(options.rate > 0.0 && options.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    let total_secs = (options.warmup + options.duration).as_secs_f64();
    let scheduled = (options.rate * total_secs).floor() as u64;
    if scheduled.saturating_mul(options.members as u64) > MAX_MESSAGES * 10 {
        bail!(
            "a run may schedule at most {} deliveries",
            MAX_MESSAGES * 10
        );
    }
    let load_start = load_average();
    let client = http_client(options.max_in_flight, options.request_timeout)?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let setup_started = Instant::now();
    let accounts = signup_all(
        &client,
        target,
        &tag,
        options.members,
        options.setup_concurrency,
    )
    .await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut readers: JoinSet<SocketLog> = JoinSet::new();
    let connected: Vec<anyhow::Result<Ws>> = stream::iter(accounts.iter())
        .map(|account| connect_socket(target, &account.token))
        .buffer_unordered(options.setup_concurrency.max(1))
        .collect()
        .await;
    let mut registrations = Vec::with_capacity(accounts.len());
    for socket in connected {
        let (registered, is_registered) = oneshot::channel();
        registrations.push(is_registered);
        readers.spawn(read_group_socket(
            socket?,
            delivered.clone(),
            stop.clone(),
            registered,
        ));
    }
    for registration in registrations {
        tokio::time::timeout(Duration::from_secs(30), registration)
            .await
            .context("a socket got no first frame within 30 s")?
            .context("a socket closed before its first frame")?;
    }
    // The group: the first account creates it with everyone else in it.
    let (creator, others) = accounts.split_first().context("no accounts")?;
    let member_ids: Vec<&str> = others.iter().map(|account| account.id.as_str()).collect();
    let response = client
        .post(target.http("/api/groups"))
        .bearer_auth(&creator.token)
        .json(&json!({ "name": format!("Loadgen {tag}"), "members": member_ids }))
        .send()
        .await
        .context("cannot create the group")?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status != reqwest::StatusCode::CREATED {
        bail!("creating the group answered {status}: {body}");
    }
    let group_id = body["_id"]
        .as_str()
        .context("the group has no _id")?
        .to_owned();
    // Every socket gets the creation's system message: then all are counted as members.
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < options.members as u64 {
        if Instant::now() >= deadline {
            bail!("the group's first message did not reach every member within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let baseline = delivered.load(Ordering::Relaxed);
    let warm_connections =
        ((options.rate / 100.0).ceil() as usize).clamp(8, options.max_in_flight.max(1));
    futures_util::future::join_all(
        (0..warm_connections).map(|_| client.get(target.http("/healthz")).send()),
    )
    .await;
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let rss_connected = options.server_pid.and_then(rss_mb);

    let url: Arc<str> = Arc::from(target.http(&format!("/api/groups/{group_id}/messages")));
    let tokens: Vec<Arc<str>> = accounts
        .iter()
        .map(|account| Arc::from(account.token.as_str()))
        .collect();
    let slots = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let posts: Arc<Mutex<Vec<Post>>> = Arc::new(Mutex::new(Vec::with_capacity(scheduled as usize)));
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut pacer_lag = histogram();
    let server_cpu_before = options.server_pid.and_then(|pid| cpu_ms(Some(pid)));
    let own_cpu_before = cpu_ms(None);
    let machine_before = machine_jiffies();
    let start = Instant::now();
    let measured_from = start + options.warmup;
    let interval = 1.0 / options.rate;
    for index in 0..scheduled {
        let due = start + Duration::from_secs_f64(index as f64 * interval);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let began = Instant::now();
        record(&mut pacer_lag, began.saturating_duration_since(due));
        let sender = rng.random_range(0..options.members);
        let (client, url, token, slots, posts) = (
            client.clone(),
            url.clone(),
            tokens[sender].clone(),
            slots.clone(),
            posts.clone(),
        );
        let body = json!({ "text": super::message_text(index, options.text_bytes) }).to_string();
        let warmup = due < measured_from;
        in_flight.spawn(async move {
            let outcome = match slots.acquire().await {
                Ok(_permit) => send_one(&client, &url, &token, body).await.and_then(|id| {
                    id_number(&id)
                        .map(|id| (id, Instant::now()))
                        .ok_or_else(|| "bad_message_id".to_owned())
                }),
                Err(_) => Err("cancelled".to_owned()),
            };
            posts.lock().push(Post {
                start: began,
                outcome,
                warmup,
            });
        });
        while in_flight.try_join_next().is_some() {}
    }
    let paced_secs = start.elapsed().as_secs_f64();
    while in_flight.join_next().await.is_some() {}
    let last_ack = Instant::now();
    let acked = posts
        .lock()
        .iter()
        .filter(|post| post.outcome.is_ok())
        .count() as u64;
    let wanted = baseline + acked * options.members as u64;
    let deadline = last_ack + options.grace;
    while delivered.load(Ordering::Relaxed) < wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = Instant::now();
    let machine = machine_usage(machine_before);
    let server_cpu = match (
        server_cpu_before,
        options.server_pid.and_then(|pid| cpu_ms(Some(pid))),
    ) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let own_cpu = match (own_cpu_before, cpu_ms(None)) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    stop.cancel();
    let mut logs = Vec::with_capacity(options.members);
    while let Some(log) = readers.join_next().await {
        logs.push(log.context("a socket reader panicked")?);
    }
    let posts = std::mem::take(&mut *posts.lock());
    let rss_after = options.server_pid.and_then(rss_mb);

    // Per acknowledged post: sockets reached and the last arrival.
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    let mut index_of: std::collections::HashMap<u128, usize> =
        std::collections::HashMap::with_capacity(posts.len());
    for (index, post) in posts.iter().enumerate() {
        match &post.outcome {
            Ok((id, _)) => {
                index_of.insert(*id, index);
            }
            Err(kind) => *errors.entry(kind.clone()).or_default() += 1,
        }
    }
    let mut reached: Vec<(u64, Option<Instant>)> = vec![(0, None); posts.len()];
    let (mut duplicated, mut unmatched, mut ended_early) = (0u64, 0u64, 0u64);
    let mut first_arrival: Option<Instant> = None;
    let mut last_arrival: Option<Instant> = None;
    for log in &logs {
        duplicated += log.duplicates;
        ended_early += u64::from(log.ended_early.is_some());
        for (id, arrived) in &log.arrivals {
            let Some(&index) = index_of.get(id) else {
                unmatched += 1;
                continue;
            };
            let slot = &mut reached[index];
            slot.0 += 1;
            slot.1 = Some(slot.1.map_or(*arrived, |seen: Instant| seen.max(*arrived)));
            if !posts[index].warmup {
                first_arrival = Some(first_arrival.map_or(*arrived, |seen| seen.min(*arrived)));
                last_arrival = Some(last_arrival.map_or(*arrived, |seen| seen.max(*arrived)));
            }
        }
    }
    // The creation's system message is the one unmatched arrival each socket must have.
    let unmatched = unmatched.saturating_sub(options.members as u64);
    let mut last_member = histogram();
    let mut send_ms = histogram();
    let (mut lost_messages, mut missing_deliveries) = (0u64, 0u64);
    let (mut measured, mut measured_deliveries) = (0u64, 0u64);
    for (index, post) in posts.iter().enumerate() {
        let Ok((_, ack)) = &post.outcome else {
            continue;
        };
        let (count, latest) = reached[index];
        if count < options.members as u64 {
            lost_messages += 1;
            missing_deliveries += options.members as u64 - count;
        }
        if post.warmup {
            continue;
        }
        measured += 1;
        measured_deliveries += count;
        record(&mut send_ms, ack.saturating_duration_since(post.start));
        if let (Some(latest), true) = (latest, count >= options.members as u64) {
            record(
                &mut last_member,
                latest.saturating_duration_since(post.start),
            );
        }
    }
    let deliveries_per_s = match (first_arrival, last_arrival) {
        (Some(first), Some(last)) if last > first => {
            round(measured_deliveries as f64 / (last - first).as_secs_f64(), 0)
        }
        _ => 0.0,
    };
    Ok(json!({
        "mode": "group",
        "members": options.members,
        "offered_rate": options.rate,
        "duration_s": options.duration.as_secs_f64(),
        "warmup_s": options.warmup.as_secs_f64(),
        "setup_s": round(setup_secs, 3),
        "paced_s": round(paced_secs, 3),
        "messages": {
            "scheduled": posts.len(),
            "acknowledged": acked,
            "measured": measured,
        },
        "deliveries_per_s": deliveries_per_s,
        "post_to_last_member_ms": percentiles(&last_member),
        "send_ms": percentiles(&send_ms),
        "pacer_lag_ms": percentiles(&pacer_lag),
        "lost_messages": lost_messages,
        "missing_deliveries": missing_deliveries,
        "duplicated": duplicated,
        "unmatched": unmatched,
        "sockets_ended_early": ended_early,
        "errors": errors,
        "server_cpu_ms_per_msg": server_cpu.map(|ms| round(ms as f64 / acked.max(1) as f64, 3)),
        "loadgen_cpu_ms_per_msg": own_cpu.map(|ms| round(ms as f64 / acked.max(1) as f64, 3)),
        "loadgen_cpu_pct": own_cpu.map(|ms| round(ms as f64 / 10.0 / drained.saturating_duration_since(start).as_secs_f64().max(1e-9), 1)),
        "server_rss_mb": { "connected": rss_connected, "after": rss_after },
        "load_avg": { "start": load_start, "end": load_average() },
        "machine_cpu": machine,
        "run_s": round(drained.saturating_duration_since(start).as_secs_f64(), 3),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_the_frame_head() {
        let frame =
            r#"{"type":"newGroupMessage","data":{"_id":"0123456789abcdef01234567","text":"x"}}"#;
        assert_eq!(
            group_message_id(frame),
            id_number("0123456789abcdef01234567")
        );
        assert_eq!(group_message_id(r#"{"type":"newMessage","data":{}}"#), None);
        assert_eq!(id_number("xyz"), None);
    }
}
