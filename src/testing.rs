//! A whole Courier server inside a Rust test: memory stores, `127.0.0.1` on a free port, real
//! HTTP and WebSockets, started and stopped in a line each. Courier's own integration tests use
//! it (through `tests/common/`), and so can a project that talks to Courier.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> anyhow::Result<()> {
//! let server = courier::testing::TestServer::start().await?;
//! let response = reqwest::get(format!("{}/healthz", server.url())).await?;
//! assert_eq!(response.status(), 200);
//! server.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The server is the one the binary runs ([`crate::server`]), started as `--ephemeral` starts
//! it: nothing is written to disk but uploads and e-mails, which go to a temporary directory
//! ([`TestServer::data_dir`]) removed at shutdown. [`TestServerBuilder::data_dir`] puts the
//! stores on sled in a directory of the caller's instead, for tests of restarts.
//!
//! Must not hold server logic: what it sets up is a [`Config`], everything else is `server`'s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::chat::{Chat, SignupMode};
use crate::config::Config;
use crate::queue::QueueManager;
use crate::server;

/// How often, and how long apart, a start on a sled directory retries while sled's file lock is
/// still held: its background threads release it a moment after the previous server in the
/// same process dropped its last handle.
const LOCK_RETRIES: u32 = 100;
const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(30);

/// A running server. Dropping it asks the server to stop without waiting;
/// [`TestServer::stop`] waits until it has shut down (and, on sled, flushed).
pub struct TestServer {
    url: String,
    address: SocketAddr,
    data_dir: PathBuf,
    admin_key: String,
    chat: Arc<Chat>,
    queues: QueueManager,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server with the test defaults of [`TestServerBuilder`].
    pub async fn start() -> anyhow::Result<TestServer> {
        TestServer::builder().start().await
    }

    /// Settings to change before [`TestServerBuilder::start`].
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::new()
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The `X-Admin-Key` of the admin routes (random unless [`TestServerBuilder::admin_key`]).
    pub fn admin_key(&self) -> &str {
        &self.admin_key
    }

    /// Where uploads and the e-mail outbox (`outbox/*.eml`, as no SMTP server is set) are
    /// written: the temporary directory of a memory server, or the sled directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's chat domain, for tests that reach past HTTP.
    pub fn chat(&self) -> &Arc<Chat> {
        &self.chat
    }

    /// The server's job queues, for tests that add jobs or register processors of their own.
    pub fn queues(&self) -> &QueueManager {
        &self.queues
    }

    /// Shuts the server down in order and waits until it has (the result of `serve`).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.context("the server task failed")?,
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The settings of a [`TestServer`]: memory stores, loopback on a free port, open sign-up,
/// random secrets, cheap password hashes, no rate limits and a one-second shutdown grace
/// ([`Config::for_tests`]).
pub struct TestServerBuilder {
    config: Config,
}

impl TestServerBuilder {
    fn new() -> TestServerBuilder {
        let mut config = Config::for_tests(PathBuf::new());
        config.ephemeral = true;
        TestServerBuilder { config }
    }

    /// The admin key (at least 32 characters unless `allow_short_admin_key` is configured).
    pub fn admin_key(mut self, key: impl Into<String>) -> TestServerBuilder {
        self.config.queue_admin_key = Some(key.into());
        self
    }

    /// Who may create an account.
    pub fn signup_mode(mut self, mode: SignupMode) -> TestServerBuilder {
        self.config.signup_mode = mode;
        self
    }

    /// The argon2id cost of password hashes; the default is the cheapest there is, so sign-ups
    /// and logins take microseconds.
    pub fn password_hashing(mut self, memory_kib: u32, iterations: u32) -> TestServerBuilder {
        self.config.argon2_memory_kib = memory_kib;
        self.config.argon2_iterations = iterations;
        self
    }

    /// Keeps the stores on sled in `dir` (created if missing), so a later server started on the
    /// same directory finds what this one wrote.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> TestServerBuilder {
        self.config.ephemeral = false;
        self.config.data_dir = dir.into();
        self
    }

    /// Changes any other setting.
    pub fn configure(mut self, change: impl FnOnce(&mut Config)) -> TestServerBuilder {
        change(&mut self.config);
        self
    }

    /// Binds `127.0.0.1:0` (or the configured address), starts the server and serves in a
    /// task of the current runtime.
    pub async fn start(self) -> anyhow::Result<TestServer> {
        let config = self.config;
        let listener = TcpListener::bind((config.bind_addr, config.port))
            .await
            .context("cannot bind the test server's port")?;
        let address = listener
            .local_addr()
            .context("cannot read the listening address")?;
        let mut attempts = 0;
        let started = loop {
            match server::start_on(&listener, config.clone()).await {
                Err(err)
                    if !config.ephemeral
                        && attempts < LOCK_RETRIES
                        && format!("{err:#}").contains("could not acquire lock") =>
                {
                    attempts += 1;
                    tokio::time::sleep(LOCK_RETRY_PAUSE).await;
                }
                other => break other?,
            }
        };
        let settings = started.state().config();
        let data_dir = settings.data_dir.clone();
        let admin_key = started.state().secrets().admin_key.clone();
        let chat = started.chat().clone();
        let queues = started.queues().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(started.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(TestServer {
            url: server::local_url(address),
            address,
            data_dir,
            admin_key,
            chat,
            queues,
            stop: Some(stop),
            task: Some(task),
        })
    }
}
