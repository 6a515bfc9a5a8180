//! End-to-end load generator for a running Courier server (loopback only). Prints one JSON line.
//!
//! ```text
//! # the server, set up for load: no rate limits, cheap password hashes, a roomy fd limit
//! ulimit -n 20000
//! RATE_LIMIT_AUTH=0 RATE_LIMIT_SEND=0 ARGON2_MEMORY_KIB=8 ARGON2_ITERATIONS=1 RUST_LOG=warn \
//!     DATA_DIR=/tmp/courier-load target/release/courier &
//!
//! cargo run --release --example loadgen -- --url http://127.0.0.1:5000 --server-pid $! \
//!     --rate 5000 --duration-secs 30                             # messages/s and latency
//! cargo run --release --example loadgen -- --server-pid $! --mode connections --connections 10000
//! cargo run --release --example loadgen -- --mode fill --data-dir /tmp/big --messages 1000000
//! cargo run --release --example loadgen -- --mode startup --data-dir /tmp/big
//! cargo run --release --example loadgen -- --server-pid $! --mode group --members 1000 --rate 100
//! ```
//!
//! `BENCHMARKS.md` explains each figure; the core lives in `loadgen/lib.rs` so that
//! `tests/loadgen_smoke.rs` can run it against an in-process server.

#[path = "loadgen/lib.rs"]
mod loadgen;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Users send messages between random pairs at --rate for --duration-secs (open loop); every
    /// message is timed from its send request to its `newMessage` frame on the receiver's
    /// sockets, and checked on the sender's own sockets.
    Chat,
    /// Open --connections idle WebSockets; report server RSS per connection, the time to connect
    /// them all, and how long one presence change (`getOnlineUsers` after one more user
    /// connects) takes to reach every one of them.
    Connections,
    /// Write --users users and --messages messages (over --conversations conversations) straight
    /// into the store in --data-dir (no server may be running on it), to measure start-up with a
    /// large history.
    Fill,
    /// Start --server-bin on --data-dir --repeat times and time each start to the first 200 from
    /// /readyz; also reports the server's RSS when ready and after --idle-secs.
    Startup,
    /// Open the store in --data-dir in this process (no server may be running on it) and time
    /// its parts: sled's own open, the job store, the chat store, with RSS after each.
    Open,
    /// One group of --members users, each with a socket; random members post at --rate for
    /// --duration-secs; every message is timed from its post to its `newGroupMessage` frame on
    /// the last member's socket, and checked on every member's.
    Group,
}

#[derive(Debug, Parser)]
#[command(
    about = "End-to-end load generator for Courier: prints one JSON line",
    long_about = "End-to-end load generator for Courier: prints one JSON line.\n\n\
        It drives a server on a loopback address only (it refuses any other). Start the server for \
        load runs with no rate limits and cheap password hashes, and a file limit above the \
        number of sockets:\n\n  \
        ulimit -n 20000\n  \
        RATE_LIMIT_AUTH=0 RATE_LIMIT_SEND=0 ARGON2_MEMORY_KIB=8 ARGON2_ITERATIONS=1 RUST_LOG=warn \\\n  \
        DATA_DIR=/tmp/courier-load target/release/courier\n\n\
        This process raises its own open-file limit to the hard limit. Pass --server-pid to get \
        the server's RSS (from /proc/<pid>/status) and CPU time per message. See BENCHMARKS.md."
)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Chat)]
    mode: Mode,
    /// Base URL of the server (http, loopback host only).
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    url: String,
    /// Process id of the server, for RSS (VmRSS) and CPU figures.
    #[arg(long)]
    server_pid: Option<u32>,
    /// chat: users taking part (default 100); connections: users owning the sockets (default
    /// 1000, sockets spread evenly); fill: users the messages go between (default 1000).
    #[arg(long)]
    users: Option<usize>,
    /// chat: sockets each user opens (like browser tabs); each must receive every message.
    #[arg(long, default_value_t = 1)]
    sockets_per_user: usize,
    /// chat: messages offered per second, on a fixed schedule whatever the responses (open loop).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// chat: measured sending time, in seconds (at most 3600).
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// chat: sending time before the measured window, same rate; checked for loss and
    /// duplicates but left out of latency figures.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// chat: how long to wait after the last 202 for deliveries still on their way; a message
    /// not on every socket of its receiver by then counts as lost.
    #[arg(long, default_value_t = 5.0)]
    grace_secs: f64,
    /// chat: most send requests outstanding at once (and so HTTP connections); a send waiting
    /// for a slot is still timed from its scheduled start.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// chat: length of each message text, in bytes.
    #[arg(long, default_value_t = 100)]
    text_bytes: usize,
    /// chat, fill: seed of the random sender/receiver choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// chat: timeout of one send request, in seconds.
    #[arg(long, default_value_t = 30.0)]
    request_timeout_secs: f64,
    /// chat: signups and socket connects in flight at once while setting up.
    #[arg(long, default_value_t = 64)]
    setup_concurrency: usize,
    /// chat: also write every acknowledged message to this CSV file: scheduled start (ms since
    /// the run began), send and delivery latency (ms; delivery empty when lost).
    #[arg(long)]
    dump_latencies: Option<PathBuf>,
    /// group: members of the group, each with one socket.
    #[arg(long, default_value_t = 1_000)]
    members: usize,
    /// connections: idle WebSockets to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// connections: socket connects in flight at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// connections: seconds to hold every socket idle before reading RSS and probing presence.
    #[arg(long, default_value_t = 3.0)]
    settle_secs: f64,
    /// connections: seconds to wait for the presence change to reach every socket.
    #[arg(long, default_value_t = 60.0)]
    presence_timeout_secs: f64,
    /// fill, startup, open: the server's data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// fill: messages to write.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// fill: conversations the messages are spread over (random pairs of the users, chosen
    /// once); 0 sends each message between a fresh random pair, the worst case for the store.
    #[arg(long, default_value_t = 10_000)]
    conversations: usize,
    /// fill: saves in flight at once (they share group commits).
    #[arg(long, default_value_t = 512)]
    fill_concurrency: usize,
    /// startup: the server binary to start.
    #[arg(long, default_value = "target/release/courier")]
    server_bin: PathBuf,
    /// startup: start-ups to time, one after another.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// startup: seconds to leave each started server idle before reading its idle RSS.
    #[arg(long, default_value_t = 2.0)]
    idle_secs: f64,
    /// chat, connections: the sockets' protocol: Courier's `/ws`, or Socket.IO at `/socket.io/`.
    #[arg(long, value_enum, default_value_t = TransportArg::Ws)]
    transport: TransportArg,
    /// Tokio worker threads of this generator. One keeps up with 5,000 messages/s and leaves
    /// more of a shared machine to the server (two cost ~15% more CPU per message in wake-ups).
    #[arg(long, default_value_t = 1)]
    worker_threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    Ws,
    Socketio,
}

impl From<TransportArg> for loadgen::Transport {
    fn from(transport: TransportArg) -> Self {
        match transport {
            TransportArg::Ws => loadgen::Transport::Ws,
            TransportArg::Socketio => loadgen::Transport::SocketIo,
        }
    }
}

fn secs(value: f64, name: &str) -> anyhow::Result<Duration> {
    if !(0.0..=3600.0).contains(&value) {
        anyhow::bail!("--{name} must be between 0 and 3600 seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    match args.mode {
        Mode::Chat => {
            let target = loadgen::Target::parse(&args.url)?;
            let options = loadgen::ChatOptions {
                users: args.users.unwrap_or(100),
                sockets_per_user: args.sockets_per_user,
                rate: args.rate,
                duration: secs(args.duration_secs, "duration-secs")?,
                warmup: secs(args.warmup_secs, "warmup-secs")?,
                grace: secs(args.grace_secs, "grace-secs")?,
                max_in_flight: args.max_in_flight,
                text_bytes: args.text_bytes,
                seed: args.seed,
                server_pid: args.server_pid,
                request_timeout: secs(args.request_timeout_secs, "request-timeout-secs")?,
                setup_concurrency: args.setup_concurrency,
                dump_latencies: args.dump_latencies.clone(),
                transport: args.transport.into(),
            };
            loadgen::run_chat(&target, &options).await
        }
        Mode::Group => {
            let target = loadgen::Target::parse(&args.url)?;
            if (args.members as u64) + 200 > loadgen::raise_fd_limit() {
                anyhow::bail!("{} sockets need a higher `ulimit -n`", args.members);
            }
            let options = loadgen::group::GroupOptions {
                members: args.members,
                rate: args.rate,
                duration: secs(args.duration_secs, "duration-secs")?,
                warmup: secs(args.warmup_secs, "warmup-secs")?,
                grace: secs(args.grace_secs, "grace-secs")?,
                max_in_flight: args.max_in_flight,
                text_bytes: args.text_bytes,
                seed: args.seed,
                server_pid: args.server_pid,
                request_timeout: secs(args.request_timeout_secs, "request-timeout-secs")?,
                setup_concurrency: args.setup_concurrency,
            };
            loadgen::group::run_group(&target, &options).await
        }
        Mode::Connections => {
            let target = loadgen::Target::parse(&args.url)?;
            let limit = loadgen::raise_fd_limit();
            // The sockets, the sign-up connections and some slack for the runtime.
            if (args.connections as u64) + 200 > limit {
                anyhow::bail!(
                    "{} sockets need more open files than this process may have ({limit}): raise `ulimit -n`",
                    args.connections
                );
            }
            let options = loadgen::ConnectionOptions {
                connections: args.connections,
                users: args.users.unwrap_or(1_000),
                connect_concurrency: args.connect_concurrency,
                settle: secs(args.settle_secs, "settle-secs")?,
                presence_timeout: secs(args.presence_timeout_secs, "presence-timeout-secs")?,
                server_pid: args.server_pid,
                transport: args.transport.into(),
            };
            loadgen::run_connections(&target, &options).await
        }
        Mode::Fill => {
            let data_dir = args.data_dir.clone().ok_or_else(|| {
                anyhow::anyhow!("--mode fill needs --data-dir (a stopped server's DATA_DIR)")
            })?;
            loadgen::fill_store(
                &data_dir,
                args.users.unwrap_or(1_000),
                args.messages,
                args.conversations,
                args.fill_concurrency,
                args.seed,
            )
            .await
        }
        Mode::Open => {
            let data_dir = args
                .data_dir
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--mode open needs --data-dir"))?;
            tokio::task::spawn_blocking(move || loadgen::time_open(&data_dir)).await?
        }
        Mode::Startup => {
            let data_dir = args
                .data_dir
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--mode startup needs --data-dir"))?;
            let options = loadgen::StartupOptions {
                server_bin: args.server_bin.clone(),
                data_dir,
                repeat: args.repeat,
                idle: secs(args.idle_secs, "idle-secs")?,
                timeout: Duration::from_secs(120),
            };
            loadgen::run_startup(&options).await
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    loadgen::raise_fd_limit();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime
        .enable_all()
        .worker_threads(args.worker_threads.max(1));
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("loadgen: error: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("loadgen: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
