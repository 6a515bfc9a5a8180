//! The load generator's core, shared by `examples/loadgen.rs` (the command line) and
//! `tests/loadgen_smoke.rs` (a short run against an in-process server).
//!
//! Four runs, each returning one JSON object:
//! - [`run_chat`]: users send messages to each other at a fixed offered rate (open loop) and every
//!   message is followed from the send request to its `newMessage` frame on the receiver's and
//!   the sender's sockets;
//! - [`run_connections`]: many idle sockets, server memory per socket, time to connect them, and
//!   how long one presence change takes to reach all of them;
//! - [`fill_store`]: writes users and messages straight into a data directory (server stopped),
//!   to measure start-up with a large history;
//! - [`run_startup`]: starts the server binary on a data directory and times it to `/readyz`;
//! - [`group::run_group`]: one big group, every member on a socket, messages posted at a fixed
//!   rate and followed to every member.
//!
//! Everything talks to a loopback address only ([`Target::parse`] refuses others), and every run
//! is bounded in count and time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{stream, StreamExt as _};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// The group fan-out run ([`group::run_group`]).
pub mod group;

/// Most messages one chat run may schedule, warm-up included (bounds memory and time).
pub const MAX_MESSAGES: u64 = 10_000_000;
/// Most sockets one run may open.
pub const MAX_SOCKETS: usize = 100_000;
/// Password of every generated account.
const PASSWORD: &str = "loadgen-password";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The server under test: a loopback `http://` base URL and the matching `ws://` one.
#[derive(Debug, Clone)]
pub struct Target {
    http: String,
    ws: String,
}

impl Target {
    /// Accepts `http://<loopback host>[:port]` only: this tool must never load another machine.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("invalid url {url:?}"))?;
        if parsed.scheme() != "http" {
            bail!("the url must start with http:// (got {url:?})");
        }
        let host = parsed.host_str().unwrap_or_default();
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            bail!("refusing to load a non-loopback address: {url:?} (use 127.0.0.1 or localhost)");
        }
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Target {
            http: format!("http://{authority}"),
            ws: format!("ws://{authority}"),
        })
    }

    pub fn http(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }
}

/// A signed-up user: id and session token.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub token: String,
}

/// A free port on the loopback interface (bound and released: another process could take it in
/// between, which a loopback test rig accepts).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `command` (the server binary, or a wrapper such as valgrind around it) as a server for
/// a test rig: `data_dir`, `port` on 127.0.0.1, no rate limits, the cheapest password hashes,
/// warnings only; stdout and stderr appended to `log`.
// Used by the chaos, flaky and instructions examples, not by the loadgen command itself.
#[allow(dead_code)]
pub fn spawn_server(
    mut command: std::process::Command,
    data_dir: &Path,
    port: u16,
    log: &Path,
) -> anyhow::Result<std::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    command
        .env("DATA_DIR", data_dir)
        .env("PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("RATE_LIMIT_AUTH", "0")
        .env("RATE_LIMIT_SEND", "0")
        .env("ARGON2_MEMORY_KIB", "8")
        .env("ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.get_program()))
}

/// Waits until `GET /readyz` answers 200, for at most `within`.
#[allow(dead_code)]
pub async fn wait_ready(
    client: &reqwest::Client,
    target: &Target,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(response) = client.get(target.http("/readyz")).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the server was not ready within {} s", within.as_secs())
}

/// An HTTP client for many concurrent requests to one host: keep-alive connections, pooled.
pub fn http_client(max_connections: usize, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(max_connections)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .timeout(timeout)
        .build()
        .context("cannot build the http client")
}

/// Signs up `count` users (`concurrency` at once) with e-mails unique to `tag`.
pub async fn signup_all(
    client: &reqwest::Client,
    target: &Target,
    tag: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Account>> {
    let results: Vec<anyhow::Result<Account>> = stream::iter(0..count)
        .map(|index| {
            let email = format!("lg-{tag}-{index}@loadgen.test");
            let name = format!("Loadgen {tag} {index}");
            async move { signup(client, target, &email, &name).await }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

async fn signup(
    client: &reqwest::Client,
    target: &Target,
    email: &str,
    name: &str,
) -> anyhow::Result<Account> {
    let response = client
        .post(target.http("/api/auth/signup"))
        .json(&json!({ "fullName": name, "email": email, "password": PASSWORD }))
        .send()
        .await
        .with_context(|| format!("cannot reach {}", target.http))?;
    let status = response.status();
    let token = response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookie| cookie.strip_prefix("jwt="))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned());
    let body = response.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        bail!("signup was rate limited (429): start the server with RATE_LIMIT_AUTH=0");
    }
    if status != reqwest::StatusCode::CREATED {
        bail!("signup answered {status}: {body}");
    }
    let user: Value = serde_json::from_str(&body).context("signup answered invalid json")?;
    let id = user["_id"]
        .as_str()
        .context("signup answer has no _id")?
        .to_owned();
    let token = token.context("signup set no jwt cookie")?;
    Ok(Account { id, token })
}

/// Opens a WebSocket for `token` with small buffers (tungstenite's defaults allocate 128 KiB
/// per socket, which would make the generator, not the server, the memory hog).
pub async fn connect_socket(target: &Target, token: &str) -> anyhow::Result<Ws> {
    let request = format!("{}/ws?token={token}", target.ws)
        .into_client_request()
        .context("bad websocket url")?;
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .context("websocket connect failed")?;
    Ok(socket)
}

/// The real-time protocol the sockets speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Courier's own `/ws` frames.
    #[default]
    Ws,
    /// Socket.IO over WebSocket at `/socket.io/` (Engine.IO v4), as socket.io-client does it.
    SocketIo,
}

/// Opens a socket of `transport` for `token`; a Socket.IO one has its namespace connected.
pub async fn connect_with(
    target: &Target,
    token: &str,
    transport: Transport,
) -> anyhow::Result<Ws> {
    match transport {
        Transport::Ws => connect_socket(target, token).await,
        Transport::SocketIo => connect_socketio(target, token).await,
    }
}

/// A Socket.IO connection: the Engine.IO open packet, then `40{"token"}` answered by `40{...}`.
pub async fn connect_socketio(target: &Target, token: &str) -> anyhow::Result<Ws> {
    let request = format!("{}/socket.io/?EIO=4&transport=websocket", target.ws)
        .into_client_request()
        .context("bad websocket url")?;
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .context("socket.io connect failed")?;
    let mut connect_sent = false;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .context("no socket.io handshake within 30 s")?;
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(err)) => bail!("socket.io handshake failed: {err}"),
            None => bail!("socket.io handshake: the server closed"),
        };
        if text.starts_with('0') && !connect_sent {
            let connect = format!("40{}", json!({ "token": token }));
            futures_util::SinkExt::send(&mut socket, Message::text(connect)).await?;
            connect_sent = true;
        } else if text.as_str() == "2" {
            futures_util::SinkExt::send(&mut socket, Message::text("3")).await?;
        } else if text.starts_with("40") {
            return Ok(socket);
        } else if text.starts_with("44") {
            bail!("socket.io connect refused: {text}");
        }
    }
}

/// What a socket.io packet means to a reader: an event as the `/ws` frame
/// `{"type":..,"data":..}`, a ping to answer, or nothing.
pub enum SioPacket {
    Frame(String),
    Ping,
    Other,
}

/// Reads one Socket.IO packet: `42["name",data(,"offset")]` becomes `{"type":"name","data":data}`.
pub fn socketio_packet(text: &str) -> SioPacket {
    if text == "2" {
        return SioPacket::Ping;
    }
    let Some(rest) = text.strip_prefix("42[\"") else {
        return SioPacket::Other;
    };
    let Some(end) = rest.find('"') else {
        return SioPacket::Other;
    };
    let name = &rest[..end];
    let mut data = rest[end + 1..].strip_suffix(']').unwrap_or("");
    // The recovery offset, a last string argument after the data.
    if data.ends_with('"') {
        if let Some(comma) = data.rfind(",\"") {
            data = &data[..comma];
        }
    }
    match data.strip_prefix(',') {
        Some(data) => SioPacket::Frame(format!(r#"{{"type":"{name}","data":{data}}}"#)),
        None => SioPacket::Frame(format!(r#"{{"type":"{name}"}}"#)),
    }
}

/// The server's durable commits so far and what their log writes and syncs took, from
/// `courier_storage_commits_total` and `courier_storage_commit_duration_seconds` in `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct StorageSample {
    commits: u64,
    /// Commits timed, their total seconds, and how many took at most 2 ms.
    timed: u64,
    seconds: f64,
    within_2ms: u64,
}

impl StorageSample {
    /// This run's share: commits per message and the commits' time.
    fn since(&self, before: &StorageSample, messages: u64) -> Value {
        let timed = self.timed.saturating_sub(before.timed);
        let seconds = self.seconds - before.seconds;
        let within = self.within_2ms.saturating_sub(before.within_2ms);
        json!({
            "per_msg": round(self.commits.saturating_sub(before.commits) as f64 / messages.max(1) as f64, 3),
            "mean_ms": round(seconds * 1000.0 / timed.max(1) as f64, 3),
            "over_2ms_pct": round(100.0 * timed.saturating_sub(within) as f64 / timed.max(1) as f64, 2),
        })
    }
}

async fn storage_sample(client: &reqwest::Client, target: &Target) -> Option<StorageSample> {
    let text = client
        .get(target.http("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |prefix: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|value| value.trim().parse::<f64>().ok())
    };
    Some(StorageSample {
        commits: value("courier_storage_commits_total ")? as u64,
        timed: value("courier_storage_commit_duration_seconds_count ").unwrap_or(0.0) as u64,
        seconds: value("courier_storage_commit_duration_seconds_sum ").unwrap_or(0.0),
        within_2ms: value(r#"courier_storage_commit_duration_seconds_bucket{le="0.002"} "#)
            .unwrap_or(0.0) as u64,
    })
}

/// Raises this process's soft open-file limit to its hard limit (each socket is a file).
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by reference.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// VmRSS of a process in MiB, from `/proc/<pid>/status`.
pub fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(round(kb / 1024.0, 1))
}

/// CPU time (user + system) a process has used, in milliseconds (`self` for this process).
pub fn cpu_ms(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) * 10)
}

/// Jiffies of the whole machine from `/proc/stat`: (busy, idle + iowait, steal).
pub fn machine_jiffies() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let get = |index: usize| fields.get(index).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let idle = get(3) + get(4);
    let steal = get(7);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6);
    Some((busy, idle, steal))
}

/// Share of the machine's CPU time that was busy, and stolen by the hypervisor, between two
/// [`machine_jiffies`] readings, in percent.
fn machine_usage(before: Option<(u64, u64, u64)>) -> Value {
    match (before, machine_jiffies()) {
        (Some((busy0, idle0, steal0)), Some((busy1, idle1, steal1))) => {
            let busy = busy1.saturating_sub(busy0) as f64;
            let idle = idle1.saturating_sub(idle0) as f64;
            let steal = steal1.saturating_sub(steal0) as f64;
            let total = (busy + idle + steal).max(1.0);
            json!({ "busy_pct": round(busy * 100.0 / total, 1), "steal_pct": round(steal * 100.0 / total, 1) })
        }
        _ => Value::Null,
    }
}

/// The 1-minute load average of the machine.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

pub fn histogram() -> Histogram<u64> {
    // Microseconds, from 1 µs to an hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record((elapsed.as_micros() as u64).max(1));
}

/// `{p50, p90, p99, p999, max, count}` in milliseconds.
pub fn percentiles(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return json!({ "p50": null, "p90": null, "p99": null, "p999": null, "max": null, "count": 0 });
    }
    let ms = |micros: u64| round(micros as f64 / 1000.0, 3);
    json!({
        "p50": ms(histogram.value_at_quantile(0.50)),
        "p90": ms(histogram.value_at_quantile(0.90)),
        "p99": ms(histogram.value_at_quantile(0.99)),
        "p999": ms(histogram.value_at_quantile(0.999)),
        "max": ms(histogram.max()),
        "count": histogram.len(),
    })
}

/// Samples a process's RSS every 100 ms until stopped; returns the highest value seen.
fn sample_rss(pid: Option<u32>, stop: CancellationToken) -> tokio::task::JoinHandle<Option<f64>> {
    tokio::spawn(async move {
        let pid = pid?;
        let mut highest: Option<f64> = None;
        loop {
            if let Some(rss) = rss_mb(pid) {
                highest = Some(highest.map_or(rss, |seen: f64| seen.max(rss)));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.cancelled() => return highest,
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Chat run

/// What a chat run does.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Users taking part (each one sends and receives).
    pub users: usize,
    /// Sockets each user opens (tabs); every one must receive every message of its user.
    pub sockets_per_user: usize,
    /// Messages offered per second, on a fixed timeline (open loop).
    pub rate: f64,
    /// Measured sending time.
    pub duration: Duration,
    /// Sending time before the measured window, at the same rate; its messages are checked for
    /// loss and duplicates but left out of the latency figures.
    pub warmup: Duration,
    /// How long to wait after the last acknowledgement for deliveries still on their way.
    pub grace: Duration,
    /// Most send requests outstanding at once (bounds connections); a send waiting for a slot
    /// is still timed from its scheduled start.
    pub max_in_flight: usize,
    /// Length of each message's text.
    pub text_bytes: usize,
    /// Seed of the sender/receiver choice.
    pub seed: u64,
    /// Process id of the server, for RSS and CPU figures.
    pub server_pid: Option<u32>,
    /// Timeout of one send request.
    pub request_timeout: Duration,
    /// Signups and socket connects in flight at once during set-up.
    pub setup_concurrency: usize,
    /// Writes every acknowledged message as a CSV line here: scheduled start (ms since the run
    /// began), send and delivery latency (ms; empty when lost).
    pub dump_latencies: Option<PathBuf>,
    /// The protocol of the sockets.
    pub transport: Transport,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            users: 100,
            sockets_per_user: 1,
            rate: 1000.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            grace: Duration::from_secs(5),
            max_in_flight: 1024,
            text_bytes: 100,
            seed: 1,
            server_pid: None,
            request_timeout: Duration::from_secs(30),
            setup_concurrency: 64,
            dump_latencies: None,
            transport: Transport::Ws,
        }
    }
}

/// Deliveries counted as they happen, so the run knows when everything has arrived.
#[derive(Default)]
struct Live {
    to_receivers: AtomicU64,
    to_senders: AtomicU64,
}

/// What one socket saw.
struct SocketLog {
    user: usize,
    /// `newMessage` frames: message id and arrival time (first arrival of each id only).
    arrivals: Vec<(String, Instant)>,
    /// `newMessage` frames whose id this socket had already received.
    duplicates: u64,
    /// `newMessage` frames whose `seq` was not above the last one this socket saw of the same
    /// conversation (a conversation's messages must arrive in the order they were saved).
    out_of_order: u64,
    /// Frames by type.
    frames: BTreeMap<String, u64>,
    /// Why the socket ended before the run stopped it, if it did.
    ended_early: Option<String>,
}

#[derive(Deserialize)]
struct FrameHead {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct NewMessageFrame {
    data: NewMessageData,
}

#[derive(Deserialize)]
struct NewMessageData {
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "senderId")]
    sender_id: String,
    #[serde(rename = "receiverId")]
    receiver_id: String,
    seq: u64,
}

/// The `type` of a frame that starts with it (`{"type":"..."`), without parsing the rest.
fn frame_kind(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(r#"{"type":""#)?;
    let end = rest.find('"')?;
    let kind = &rest[..end];
    (!kind.contains('\\')).then_some(kind)
}

/// Reads one socket until `stop`, logging `newMessage` arrivals. Signals `registered` on the
/// first frame (the server's `getOnlineUsers` snapshot), which proves the hub knows the socket.
async fn read_chat_socket(
    mut socket: Ws,
    transport: Transport,
    user: usize,
    user_id: Arc<str>,
    live: Arc<Live>,
    stop: CancellationToken,
    registered: oneshot::Sender<()>,
) -> SocketLog {
    let mut log = SocketLog {
        user,
        arrivals: Vec::new(),
        duplicates: 0,
        out_of_order: 0,
        frames: BTreeMap::new(),
        ended_early: None,
    };
    let mut registered = Some(registered);
    let mut seen: HashSet<String> = HashSet::new();
    // The other user of each conversation → the last `seq` that arrived from it.
    let mut last_seq: HashMap<String, u64> = HashMap::new();
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
                log.ended_early = Some(format!(
                    "closed by server: {}",
                    frame.map_or_else(|| "no close frame".to_owned(), |f| f.to_string())
                ));
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
        let converted;
        let text: &str = match transport {
            Transport::Ws => text.as_str(),
            Transport::SocketIo => match socketio_packet(&text) {
                SioPacket::Frame(frame) => {
                    converted = frame;
                    &converted
                }
                SioPacket::Ping => {
                    let _ = futures_util::SinkExt::send(&mut socket, Message::text("3")).await;
                    continue;
                }
                SioPacket::Other => continue,
            },
        };
        if let Some(registered) = registered.take() {
            let _ = registered.send(());
        }
        // The generator shares the machine with the server: read a frame's type without parsing
        // the whole frame when it comes first, as the server writes it.
        let parsed;
        let kind = match frame_kind(text) {
            Some(kind) => kind,
            None => match serde_json::from_str::<FrameHead>(text) {
                Ok(head) => {
                    parsed = head.kind;
                    parsed.as_str()
                }
                Err(_) => "unparsable",
            },
        };
        match log.frames.get_mut(kind) {
            Some(count) => *count += 1,
            None => {
                log.frames.insert(kind.to_owned(), 1);
            }
        }
        if kind == "newMessage" {
            match serde_json::from_str::<NewMessageFrame>(text) {
                Ok(frame) => {
                    let data = frame.data;
                    if !seen.insert(data.id.clone()) {
                        log.duplicates += 1;
                    } else {
                        let other = if *data.sender_id == *user_id {
                            &data.receiver_id
                        } else {
                            &data.sender_id
                        };
                        match last_seq.get_mut(other.as_str()) {
                            Some(last) if data.seq <= *last => log.out_of_order += 1,
                            Some(last) => *last = data.seq,
                            None => {
                                last_seq.insert(other.clone(), data.seq);
                            }
                        }
                        if *data.receiver_id == *user_id {
                            live.to_receivers.fetch_add(1, Ordering::Relaxed);
                        } else if *data.sender_id == *user_id {
                            live.to_senders.fetch_add(1, Ordering::Relaxed);
                        }
                        log.arrivals.push((data.id, now));
                    }
                }
                Err(_) => *log.frames.entry("unparsable".to_owned()).or_default() += 1,
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    log
}

/// One scheduled send and what became of it.
struct SendLog {
    sender: usize,
    receiver: usize,
    /// When the pacer started it (its scheduled time, give or take the pacer's lag).
    start: Instant,
    /// The 202 answer: message id and arrival time; or the error's kind.
    outcome: Result<(String, Instant), String>,
    warmup: bool,
}

async fn send_one(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: String,
) -> Result<String, String> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|err| {
            if err.is_timeout() {
                "timeout".to_owned()
            } else if err.is_connect() {
                "connect".to_owned()
            } else {
                "request".to_owned()
            }
        })?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|_| "body".to_owned())?;
    if status != reqwest::StatusCode::ACCEPTED {
        return Err(format!("http_{}", status.as_u16()));
    }
    #[derive(Deserialize)]
    struct Accepted {
        #[serde(rename = "messageId")]
        message_id: String,
    }
    serde_json::from_slice::<Accepted>(&bytes)
        .map(|accepted| accepted.message_id)
        .map_err(|_| "bad_202_body".to_owned())
}

fn message_text(index: u64, bytes: usize) -> String {
    let mut text = format!("loadgen message {index} ");
    while text.len() < bytes {
        text.push('x');
    }
    text
}

/// Runs the chat load and returns the report (one JSON object).
pub async fn run_chat(target: &Target, options: &ChatOptions) -> anyhow::Result<Value> {
    if options.users < 2 {
        bail!("--users must be at least 2 (messages go between two different users)");
    }
    if !(options.rate > 0.0 && options.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    let total_secs = (options.warmup + options.duration).as_secs_f64();
    let scheduled = (options.rate * total_secs).floor() as u64;
    if scheduled > MAX_MESSAGES {
        bail!("a run may schedule at most {MAX_MESSAGES} messages (rate x (warmup + duration))");
    }
    let sockets = options.users * options.sockets_per_user.max(1);
    if sockets > MAX_SOCKETS {
        bail!("a run may open at most {MAX_SOCKETS} sockets");
    }
    let load_start = load_average();
    let rss_before = options.server_pid.and_then(rss_mb);
    let client = http_client(options.max_in_flight, options.request_timeout)?;

    // Set-up: accounts, then every socket, each proven registered by its first frame.
    let tag = format!("{:08x}", rand::random::<u32>());
    let setup_started = Instant::now();
    let accounts = signup_all(
        &client,
        target,
        &tag,
        options.users,
        options.setup_concurrency,
    )
    .await?;
    let live = Arc::new(Live::default());
    let stop = CancellationToken::new();
    let mut readers: JoinSet<SocketLog> = JoinSet::new();
    let plan: Vec<usize> = (0..options.users)
        .flat_map(|user| std::iter::repeat_n(user, options.sockets_per_user.max(1)))
        .collect();
    let connected: Vec<anyhow::Result<(usize, Ws)>> = stream::iter(plan)
        .map(|user| {
            let token = accounts[user].token.clone();
            async move { Ok((user, connect_with(target, &token, options.transport).await?)) }
        })
        .buffer_unordered(options.setup_concurrency.max(1))
        .collect()
        .await;
    let mut registrations = Vec::with_capacity(sockets);
    for result in connected {
        let (user, socket) = result?;
        let (registered, is_registered) = oneshot::channel();
        registrations.push(is_registered);
        readers.spawn(read_chat_socket(
            socket,
            options.transport,
            user,
            Arc::from(accounts[user].id.as_str()),
            live.clone(),
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
    // Open the HTTP connections the offered rate needs before the clock starts (about 10 ms of
    // sends each), as a steady stream of clients would have them; more are opened if needed.
    let warm_connections =
        ((options.rate / 100.0).ceil() as usize).clamp(8, options.max_in_flight.max(1));
    let warmed = futures_util::future::join_all(
        (0..warm_connections).map(|_| client.get(target.http("/healthz")).send()),
    )
    .await;
    if let Some(Err(err)) = warmed.into_iter().find(|result| result.is_err()) {
        bail!("cannot open http connections to {}: {err}", target.http);
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let rss_connected = options.server_pid.and_then(rss_mb);

    // The open loop: send i starts at start + i / rate, whatever happened to the earlier ones.
    let urls: Vec<Arc<str>> = accounts
        .iter()
        .map(|account| Arc::from(target.http(&format!("/api/messages/send/{}", account.id))))
        .collect();
    let tokens: Vec<Arc<str>> = accounts
        .iter()
        .map(|account| Arc::from(account.token.as_str()))
        .collect();
    let slots = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let sends: Arc<Mutex<Vec<SendLog>>> =
        Arc::new(Mutex::new(Vec::with_capacity(scheduled as usize)));
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut pacer_lag = histogram();
    let rss_stop = CancellationToken::new();
    let rss_peak = sample_rss(options.server_pid, rss_stop.clone());
    let server_cpu_before = options.server_pid.and_then(|pid| cpu_ms(Some(pid)));
    let storage_before = storage_sample(&client, target).await;
    let own_cpu_before = cpu_ms(None);
    let machine_before = machine_jiffies();
    let start = Instant::now();
    let measured_from = start + options.warmup;
    let interval = 1.0 / options.rate;
    for index in 0..scheduled {
        let due = start + Duration::from_secs_f64(index as f64 * interval);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        }
        let began = Instant::now();
        record(&mut pacer_lag, began.saturating_duration_since(due));
        let sender = rng.random_range(0..options.users);
        let mut receiver = rng.random_range(0..options.users - 1);
        if receiver >= sender {
            receiver += 1;
        }
        let (client, url, token, slots, sends) = (
            client.clone(),
            urls[receiver].clone(),
            tokens[sender].clone(),
            slots.clone(),
            sends.clone(),
        );
        let body = json!({ "text": message_text(index, options.text_bytes) }).to_string();
        let warmup = due < measured_from;
        in_flight.spawn(async move {
            let outcome = match slots.acquire().await {
                Ok(_permit) => send_one(&client, &url, &token, body)
                    .await
                    .map(|id| (id, Instant::now())),
                Err(_) => Err("cancelled".to_owned()),
            };
            sends.lock().push(SendLog {
                sender,
                receiver,
                start: began,
                outcome,
                warmup,
            });
        });
        // Reap finished sends now and then so the set stays small.
        while in_flight.try_join_next().is_some() {}
    }
    let paced_secs = start.elapsed().as_secs_f64();
    while in_flight.join_next().await.is_some() {}
    let last_ack = Instant::now();

    // Wait for deliveries still on their way: every acknowledged message, on every socket of its
    // receiver and of its sender.
    let acked = sends
        .lock()
        .iter()
        .filter(|send| send.outcome.is_ok())
        .count() as u64;
    let per_user = options.sockets_per_user.max(1) as u64;
    let deadline = last_ack + options.grace;
    loop {
        let complete = live.to_receivers.load(Ordering::Relaxed) >= acked * per_user
            && live.to_senders.load(Ordering::Relaxed) >= acked * per_user;
        if complete || Instant::now() >= deadline {
            break;
        }
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
    let storage_after = storage_sample(&client, target).await;
    rss_stop.cancel();
    let rss_max = rss_peak.await.ok().flatten();
    stop.cancel();
    let mut logs = Vec::with_capacity(sockets);
    while let Some(log) = readers.join_next().await {
        logs.push(log.context("a socket reader panicked")?);
    }
    let rss_after = options.server_pid.and_then(rss_mb);
    let sends = std::mem::take(&mut *sends.lock());

    let report = analyse(
        options,
        &sends,
        &logs,
        Timeline {
            start,
            measured_from,
            drained,
        },
    );
    let mut report = report;
    let extra = json!({
        "mode": "chat",
        "transport": format!("{:?}", options.transport),
        "offered_rate": options.rate,
        "duration_s": options.duration.as_secs_f64(),
        "warmup_s": options.warmup.as_secs_f64(),
        "users": options.users,
        "sockets": sockets,
        "setup_s": round(setup_secs, 3),
        "paced_s": round(paced_secs, 3),
        "pacer_lag_ms": percentiles(&pacer_lag),
        "server_rss_mb": {
            "before": rss_before,
            "connected": rss_connected,
            "max": rss_max,
            "after": rss_after,
        },
        "server_cpu_ms_per_msg": server_cpu.map(|ms| round(ms as f64 / acked.max(1) as f64, 4)),
        "loadgen_cpu_ms_per_msg": own_cpu.map(|ms| round(ms as f64 / acked.max(1) as f64, 4)),
        "storage_commits": match (&storage_before, &storage_after) {
            (Some(before), Some(after)) => after.since(before, acked),
            _ => Value::Null,
        },
        "load_avg": { "start": load_start, "end": load_average() },
        "machine_cpu": machine,
    });
    if let (Value::Object(report), Value::Object(extra)) = (&mut report, extra) {
        report.extend(extra);
    }
    Ok(report)
}

struct Timeline {
    start: Instant,
    measured_from: Instant,
    drained: Instant,
}

/// Matches every acknowledged send with its arrivals and computes the report's figures.
fn analyse(options: &ChatOptions, sends: &[SendLog], logs: &[SocketLog], at: Timeline) -> Value {
    let per_user = options.sockets_per_user.max(1);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    // Message id -> index in `sends`.
    let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(sends.len());
    for (index, send) in sends.iter().enumerate() {
        match &send.outcome {
            Ok((id, _)) => {
                if by_id.insert(id.as_str(), index).is_some() {
                    *errors.entry("repeated_message_id".to_owned()).or_default() += 1;
                }
            }
            Err(kind) => *errors.entry(kind.clone()).or_default() += 1,
        }
    }
    // Per acknowledged send: receiver sockets reached and the latest arrival among them; the
    // same for the sender's own sockets.
    let mut to_receiver: Vec<(usize, Option<Instant>)> = vec![(0, None); sends.len()];
    let mut to_sender: Vec<(usize, Option<Instant>)> = vec![(0, None); sends.len()];
    let mut misdelivered = 0u64;
    let mut unmatched = 0u64;
    let mut duplicated = 0u64;
    let mut out_of_order = 0u64;
    let mut frames: BTreeMap<String, u64> = BTreeMap::new();
    for log in logs {
        duplicated += log.duplicates;
        out_of_order += log.out_of_order;
        for (kind, count) in &log.frames {
            *frames.entry(kind.clone()).or_default() += count;
        }
        if let Some(reason) = &log.ended_early {
            let kind = if reason.starts_with("closed by server") {
                "socket_closed_by_server"
            } else {
                "socket_failed"
            };
            *errors.entry(kind.to_owned()).or_default() += 1;
        }
        for (id, arrived) in &log.arrivals {
            let Some(&index) = by_id.get(id.as_str()) else {
                // A send that timed out on our side may still have been accepted.
                unmatched += 1;
                continue;
            };
            let send = &sends[index];
            let slot = if log.user == send.receiver {
                &mut to_receiver[index]
            } else if log.user == send.sender {
                &mut to_sender[index]
            } else {
                misdelivered += 1;
                continue;
            };
            slot.0 += 1;
            slot.1 = Some(slot.1.map_or(*arrived, |seen: Instant| seen.max(*arrived)));
        }
    }
    let mut send_ms = histogram();
    let mut delivery_ms = histogram();
    let mut echo_ms = histogram();
    let (mut acked, mut lost, mut echo_missing, mut before_ack) = (0u64, 0u64, 0u64, 0u64);
    let (mut measured, mut delivered_measured) = (0u64, 0u64);
    let mut first_start: Option<Instant> = None;
    let mut last_delivery: Option<Instant> = None;
    let mut csv = options
        .dump_latencies
        .as_ref()
        .map(|_| String::from("start_ms,send_ms,delivery_ms\n"));
    for (index, send) in sends.iter().enumerate() {
        let Ok((_, ack)) = &send.outcome else {
            continue;
        };
        if let Some(csv) = &mut csv {
            let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
            let delivered = match to_receiver[index] {
                (reached, Some(latest)) if reached >= per_user => {
                    format!("{:.3}", ms(latest.saturating_duration_since(send.start)))
                }
                _ => String::new(),
            };
            csv.push_str(&format!(
                "{:.3},{:.3},{delivered}\n",
                ms(send.start.saturating_duration_since(at.start)),
                ms(ack.saturating_duration_since(send.start)),
            ));
        }
        acked += 1;
        let in_window = !send.warmup;
        if in_window {
            measured += 1;
            record(&mut send_ms, ack.saturating_duration_since(send.start));
            first_start =
                Some(first_start.map_or(send.start, |seen: Instant| seen.min(send.start)));
        }
        let (reached, latest) = to_receiver[index];
        match latest {
            Some(latest) if reached >= per_user => {
                if latest < *ack {
                    before_ack += 1;
                }
                if in_window {
                    delivered_measured += 1;
                    record(
                        &mut delivery_ms,
                        latest.saturating_duration_since(send.start),
                    );
                    last_delivery =
                        Some(last_delivery.map_or(latest, |seen: Instant| seen.max(latest)));
                }
            }
            _ => lost += 1,
        }
        let (reached, latest) = to_sender[index];
        match latest {
            Some(latest) if reached >= per_user => {
                if in_window {
                    record(&mut echo_ms, latest.saturating_duration_since(send.start));
                }
            }
            _ => echo_missing += 1,
        }
    }
    if let (Some(path), Some(csv)) = (&options.dump_latencies, csv) {
        if let Err(err) = std::fs::write(path, csv) {
            *errors.entry(format!("dump_failed: {err}")).or_default() += 1;
        }
    }
    let achieved_rate = match (first_start, last_delivery) {
        (Some(first), Some(last)) if last > first => {
            round(delivered_measured as f64 / (last - first).as_secs_f64(), 1)
        }
        _ => 0.0,
    };
    let measured_secs = at.drained.saturating_duration_since(at.measured_from);
    json!({
        "achieved_rate": achieved_rate,
        "messages": {
            "scheduled": sends.len(),
            "acknowledged": acked,
            "measured": measured,
            "delivered_measured": delivered_measured,
            "delivered_before_ack": before_ack,
        },
        "delivery_ms": percentiles(&delivery_ms),
        "echo_ms": percentiles(&echo_ms),
        "send_ms": percentiles(&send_ms),
        "errors": errors,
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "echo_missing": echo_missing,
        "misdelivered": misdelivered,
        "unmatched": unmatched,
        "frames": frames,
        "run_s": round(at.drained.saturating_duration_since(at.start).as_secs_f64(), 3),
        "measured_until_drained_s": round(measured_secs.as_secs_f64(), 3),
    })
}

// ---------------------------------------------------------------------------------------------
// Connection-scale run

/// What a connection-scale run does.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Idle sockets to open.
    pub connections: usize,
    /// Users those sockets belong to (sockets are spread evenly over them).
    pub users: usize,
    /// Socket connects in flight at once.
    pub connect_concurrency: usize,
    /// How long to hold every socket open after connecting, before the presence probe.
    pub settle: Duration,
    /// How long to wait for the presence change to reach every socket.
    pub presence_timeout: Duration,
    pub server_pid: Option<u32>,
    /// The protocol of the sockets.
    pub transport: Transport,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            connections: 10_000,
            users: 1_000,
            connect_concurrency: 200,
            settle: Duration::from_secs(3),
            presence_timeout: Duration::from_secs(60),
            server_pid: None,
            transport: Transport::Ws,
        }
    }
}

/// Holds one idle socket: answers pings (tungstenite does, while reading), and records when a
/// `getOnlineUsers` frame first lists the probe user.
async fn hold_socket(
    mut socket: Ws,
    transport: Transport,
    probe: Arc<Mutex<Option<(String, Instant)>>>,
    seen_probe: Arc<AtomicU64>,
    stop: CancellationToken,
) -> (Option<Duration>, Option<String>) {
    let mut arrival = None;
    let mut ended = None;
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            message = socket.next() => message,
        };
        let now = Instant::now();
        match message {
            Some(Ok(Message::Text(text))) => {
                let presence = match transport {
                    Transport::Ws => r#"{"type":"getOnlineUsers""#,
                    Transport::SocketIo => {
                        if text.as_str() == "2" {
                            let _ =
                                futures_util::SinkExt::send(&mut socket, Message::text("3")).await;
                            continue;
                        }
                        r#"42["getOnlineUsers""#
                    }
                };
                if arrival.is_some() || !text.starts_with(presence) {
                    continue;
                }
                let probe = probe.lock().clone();
                if let Some((probe_id, connected_at)) = probe {
                    if text.contains(probe_id.as_str()) {
                        arrival = Some(now.saturating_duration_since(connected_at));
                        seen_probe.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Some(Ok(Message::Close(_))) => {
                ended = Some("closed by server".to_owned());
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                ended = Some(format!("read failed: {err}"));
                break;
            }
            None => {
                ended = Some("stream ended".to_owned());
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    (arrival, ended)
}

/// Opens many idle sockets and reports server memory per socket, the time to connect them, and
/// the time one presence change takes to reach all of them.
pub async fn run_connections(
    target: &Target,
    options: &ConnectionOptions,
) -> anyhow::Result<Value> {
    if options.connections == 0 || options.connections > MAX_SOCKETS {
        bail!("--connections must be between 1 and {MAX_SOCKETS}");
    }
    let users = options.users.clamp(1, options.connections);
    let load_start = load_average();
    let client = http_client(64, Duration::from_secs(60))?;
    let tag = format!("{:08x}", rand::random::<u32>());
    // One more user than the sockets' owners: the probe, whose arrival changes presence.
    let accounts = signup_all(&client, target, &tag, users + 1, 64).await?;
    let (probe_account, owners) = accounts.split_last().context("no accounts")?;
    // Let the server settle after the signups (argon2, allocations) before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = options.server_pid.and_then(rss_mb);

    let probe: Arc<Mutex<Option<(String, Instant)>>> = Arc::new(Mutex::new(None));
    let seen_probe = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let connect_started = Instant::now();
    let results: Vec<anyhow::Result<Ws>> = stream::iter(0..options.connections)
        .map(|index| {
            let token = owners[index % users].token.clone();
            async move { connect_with(target, &token, options.transport).await }
        })
        .buffer_unordered(options.connect_concurrency.max(1))
        .collect()
        .await;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let mut holders = JoinSet::new();
    let mut connect_errors: BTreeMap<String, u64> = BTreeMap::new();
    for result in results {
        match result {
            Ok(socket) => {
                holders.spawn(hold_socket(
                    socket,
                    options.transport,
                    probe.clone(),
                    seen_probe.clone(),
                    stop.clone(),
                ));
            }
            Err(err) => *connect_errors.entry(format!("{err:#}")).or_default() += 1,
        }
    }
    let open = holders.len();
    tokio::time::sleep(options.settle).await;
    let rss_connected = options.server_pid.and_then(rss_mb);

    // The probe: one more user connects; every socket must get a getOnlineUsers listing it.
    *probe.lock() = Some((probe_account.id.clone(), Instant::now()));
    let probe_started = Instant::now();
    let probe_socket = connect_with(target, &probe_account.token, options.transport).await?;
    let deadline = probe_started + options.presence_timeout;
    while (seen_probe.load(Ordering::Relaxed) as usize) < open && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let all_secs = probe_started.elapsed().as_secs_f64();
    let rss_after = options.server_pid.and_then(rss_mb);
    stop.cancel();
    let mut presence = histogram();
    let mut ended_early: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(held) = holders.join_next().await {
        let (arrival, ended) = held.context("a socket holder panicked")?;
        if let Some(arrival) = arrival {
            record(&mut presence, arrival);
        }
        if let Some(reason) = ended {
            *ended_early.entry(reason).or_default() += 1;
        }
    }
    drop(probe_socket);
    let per_connection_kb = match (rss_before, rss_connected) {
        (Some(before), Some(after)) if open > 0 => {
            Some(round((after - before) * 1024.0 / open as f64, 2))
        }
        _ => None,
    };
    Ok(json!({
        "mode": "connections",
        "transport": format!("{:?}", options.transport),
        "connections": open,
        "users": users,
        "connect_s": round(connect_secs, 3),
        "connect_rate": round(open as f64 / connect_secs.max(1e-9), 1),
        "connect_errors": connect_errors,
        "ended_early": ended_early,
        "server_rss_mb": {
            "before": rss_before,
            "connected": rss_connected,
            "after_presence": rss_after,
            "per_connection_kb": per_connection_kb,
        },
        "presence_ms": percentiles(&presence),
        "presence_reached": presence.len(),
        "presence_missing": open as u64 - presence.len().min(open as u64),
        "presence_all_ms": round(all_secs * 1000.0, 3),
        "load_avg": { "start": load_start, "end": load_average() },
    }))
}

// ---------------------------------------------------------------------------------------------
// Filling a data directory, and timing start-up

/// Writes `users` users and `messages` messages between random pairs straight into the store in
/// `data_dir` (which no server may be using), `concurrency` saves in flight.
pub async fn fill_store(
    data_dir: &Path,
    users: usize,
    messages: u64,
    conversations: usize,
    concurrency: usize,
    seed: u64,
) -> anyhow::Result<Value> {
    use courier::store::chat::{CreateUser, NewMessage, UserRecord};
    if users < 2 {
        bail!("--users must be at least 2");
    }
    if messages > MAX_MESSAGES {
        bail!("--messages must be at most {MAX_MESSAGES}");
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let started = Instant::now();
    let dir = data_dir.to_owned();
    let courier::store::Stores { jobs, chat } = tokio::task::spawn_blocking(move || {
        courier::store::open(&courier::store::StoreConfig::sled(&dir))
    })
    .await?
    .context("cannot open the store (is a server using it?)")?;
    let opened_ms = started.elapsed().as_secs_f64() * 1000.0;
    let already = chat.message_count().await?;
    let now = courier::time::now_millis;
    let tag = format!("{:08x}", rand::random::<u32>());
    let mut ids = Vec::with_capacity(users);
    for index in 0..users {
        let id = courier::chat::ids::new_id();
        let created = chat
            .create_user(UserRecord {
                id: id.clone(),
                full_name: format!("Filler {tag} {index}"),
                email: format!("fill-{tag}-{index}@loadgen.test"),
                // Not a usable hash: these accounts only own history.
                password_hash: "$argon2id$v=19$m=8,t=1,p=1$unusable$unusable".to_owned(),
                profile_pic: String::new(),
                created_at: now(),
                updated_at: now(),
            })
            .await?;
        if created != CreateUser::Created {
            bail!("filler user {index} exists already");
        }
        ids.push(id);
    }
    // The conversations messages go to: `conversations` fixed pairs, or any pair when 0.
    let mut pairs_rng = StdRng::seed_from_u64(seed);
    let pairs: Vec<(usize, usize)> = (0..conversations)
        .map(|_| {
            let sender = pairs_rng.random_range(0..users);
            let mut receiver = pairs_rng.random_range(0..users - 1);
            if receiver >= sender {
                receiver += 1;
            }
            (sender, receiver)
        })
        .collect();
    let pairs = Arc::new(pairs);
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicU64::new(0));
    let write_started = Instant::now();
    let mut writers = JoinSet::new();
    for worker in 0..concurrency.max(1) {
        let (chat, ids, next, pairs) = (chat.clone(), ids.clone(), next.clone(), pairs.clone());
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(worker as u64 + 1));
        writers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= messages {
                    return Ok::<_, anyhow::Error>(());
                }
                let (sender, receiver) = if pairs.is_empty() {
                    let sender = rng.random_range(0..ids.len());
                    let mut receiver = rng.random_range(0..ids.len() - 1);
                    if receiver >= sender {
                        receiver += 1;
                    }
                    (sender, receiver)
                } else {
                    pairs[rng.random_range(0..pairs.len())]
                };
                chat.save_message(NewMessage {
                    id: courier::chat::ids::new_id(),
                    sender_id: ids[sender].clone(),
                    receiver_id: ids[receiver].clone(),
                    text: message_text(index, 100),
                    image: String::new(),
                    created_at: now(),
                    ..NewMessage::default()
                })
                .await?;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    let write_secs = write_started.elapsed().as_secs_f64();
    let total = chat.message_count().await?;
    jobs.flush().await?;
    let size = jobs.stats().and_then(|stats| stats.size_on_disk());
    drop(chat);
    drop(jobs);
    Ok(json!({
        "mode": "fill",
        "data_dir": data_dir.display().to_string(),
        "users_added": users,
        "conversations": if conversations == 0 { json!("any pair") } else { json!(conversations) },
        "messages_added": messages,
        "messages_before": already,
        "messages_total": total,
        "open_ms": round(opened_ms, 1),
        "write_s": round(write_secs, 3),
        "write_rate": round(messages as f64 / write_secs.max(1e-9), 1),
        "size_on_disk_mb": size.map(|bytes| round(bytes as f64 / 1_048_576.0, 1)),
    }))
}

/// Times the pieces of opening the store in `data_dir` (no server may be using it): sled's own
/// open, the job store (which scans job status records), the chat store; with this process's
/// RSS after each.
pub fn time_open(data_dir: &Path) -> anyhow::Result<Value> {
    use courier::store::sled::{open_db, SledChatStore, SledJobStore};
    let own_rss = || rss_mb(std::process::id());
    let rss_before = own_rss();
    let started = Instant::now();
    let db = open_db(data_dir).context("cannot open the database (is a server using it?)")?;
    let db_ms = started.elapsed().as_secs_f64() * 1000.0;
    let rss_db = own_rss();
    let jobs_started = Instant::now();
    let jobs = SledJobStore::open(&db)?;
    let jobs_ms = jobs_started.elapsed().as_secs_f64() * 1000.0;
    let chat_started = Instant::now();
    let chat = SledChatStore::open(&db, true)?;
    let chat_ms = chat_started.elapsed().as_secs_f64() * 1000.0;
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    let rss_after = own_rss();
    drop(chat);
    drop(jobs);
    Ok(json!({
        "mode": "open",
        "data_dir": data_dir.display().to_string(),
        "data_dir_mb": round(dir_size(data_dir) as f64 / 1_048_576.0, 1),
        "sled_open_ms": round(db_ms, 1),
        "job_store_ms": round(jobs_ms, 1),
        "chat_store_ms": round(chat_ms, 1),
        "total_ms": round(total_ms, 1),
        "rss_mb": { "before": rss_before, "after_sled_open": rss_db, "after": rss_after },
        "load_avg": load_average(),
    }))
}

/// What a start-up run does.
#[derive(Debug, Clone)]
pub struct StartupOptions {
    /// The server binary (`target/release/courier`).
    pub server_bin: PathBuf,
    pub data_dir: PathBuf,
    /// Start-ups to time, one after another.
    pub repeat: usize,
    /// How long to leave each started server idle before reading its idle RSS.
    pub idle: Duration,
    /// Give up on one start-up after this long.
    pub timeout: Duration,
}

/// Starts the server `repeat` times on `data_dir`, timing each from spawn to the first 200 from
/// `/readyz`, reading its RSS when ready and after `idle`, then stopping it with SIGTERM.
pub async fn run_startup(options: &StartupOptions) -> anyhow::Result<Value> {
    let mut runs = Vec::new();
    let mut times = Vec::new();
    for _ in 0..options.repeat.max(1) {
        let port = free_port()?;
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&options.server_bin)
            .env("DATA_DIR", &options.data_dir)
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", options.server_bin.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let ready_after = loop {
            if started.elapsed() > options.timeout {
                bail!("the server was not ready within {:?}", options.timeout);
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!("the server exited during start-up ({status})");
            }
            if readyz(port).await {
                break started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let ready_rss = rss_mb(pid);
        tokio::time::sleep(options.idle).await;
        let idle_rss = rss_mb(pid);
        // SAFETY: `kill` with a valid signal on the pid of a child we still own.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        let stopped = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .context("the server did not stop within 30 s of SIGTERM")??;
        let ms = round(ready_after.as_secs_f64() * 1000.0, 1);
        times.push(ms);
        runs.push(json!({
            "ready_ms": ms,
            "ready_rss_mb": ready_rss,
            "idle_rss_mb": idle_rss,
            "stop_ms": round(stopped.elapsed().as_secs_f64() * 1000.0, 1),
            "exit": status.code(),
        }));
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(json!({
        "mode": "startup",
        "data_dir": options.data_dir.display().to_string(),
        "data_dir_mb": round(dir_size(&options.data_dir) as f64 / 1_048_576.0, 1),
        "ready_ms": {
            "min": sorted.first(),
            "median": sorted.get(sorted.len() / 2),
            "max": sorted.last(),
        },
        "runs": runs,
        "load_avg": load_average(),
    }))
}

/// Whether `GET /readyz` on 127.0.0.1:`port` answers 200, by hand so that start-up timing does
/// not include a client's pool or DNS.
async fn readyz(port: u16) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    match tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head)).await {
        Ok(Ok(_)) => head.starts_with(b"HTTP/1.1 200"),
        _ => false,
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
