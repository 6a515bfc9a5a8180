//! Start-up and shutdown: turns a validated [`Config`] and a bound listener into a running
//! server, and tears it down in order when the caller's shutdown future resolves.
//!
//! The order is the contract: cancel the root token (readiness off, sockets and the event stream
//! told to close, alert checks stopped), stop accepting and drain HTTP, wait for every tracked
//! connection and socket task (each bounded by `SHUTDOWN_GRACE_SECS`), then stop the queue
//! engine, then flush the store, so every acknowledged write is on disk when
//! `run` returns. `run` takes its listener and shutdown future from the caller, so tests bind
//! port 0 and stop the server with a channel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::FutureExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::chat::{Chat, ChatConfig, Delivery, HashCost};
use crate::config::{self, Config, ConfigError, QueueBackend, SecretOrigin, Secrets};
use crate::http::{self, AppState, HubDelivery};
use crate::jobs;
use crate::queue::{LocalHub, QueueManager};
use crate::store::chat::ChatStore;
use crate::store::{self, ChatBackend, JobBackend, JobStore, StoreConfig, StoreError};
use crate::ws::{Hub, HubConfig};

/// How long alerts still queued at shutdown may take to be delivered.
const ALERT_DELIVERY_GRACE: Duration = Duration::from_secs(2);

/// A started server: stores open, queues running, chat attached; not yet serving HTTP.
///
/// Split from [`Server::serve`] so tests can reach the pieces (the engine, the chat domain)
/// of the very server they talk to over HTTP.
pub struct Server {
    /// The root of every long-lived task's cancellation: the HTTP layer (sockets, the event
    /// stream) and the alert checks hold children of it; shutdown begins by cancelling it.
    shutdown: CancellationToken,
    state: AppState,
    queues: QueueManager,
    chat: Arc<Chat>,
    job_store: Arc<dyn JobStore>,
    grace: Duration,
    /// An ephemeral server's uploads and e-mail outbox (the chat domain writes those to files):
    /// a private temporary directory, removed when the server is dropped after `serve`.
    _scratch_dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Creates the data directory and the secrets when needed (printing a generated admin key
    /// once), opens the stores, recovers and starts the queues, and attaches the chat domain.
    /// An ephemeral config (`--ephemeral`) opens memory stores, keeps its secrets in memory and
    /// puts uploads and e-mails in a temporary directory instead of `DATA_DIR`.
    pub async fn start(mut config: Config) -> anyhow::Result<Server> {
        let scratch_dir = if config.ephemeral {
            let dir = tempfile::Builder::new()
                .prefix("courier-ephemeral-")
                .tempdir()
                .context("cannot create a temporary directory for uploads and e-mails")?;
            config.data_dir = dir.path().to_owned();
            Some(dir)
        } else {
            None
        };
        config.prepare_data_dir()?;
        let secrets = config::ensure_secrets(&mut config)?;
        announce_secrets(&secrets);

        let (job_store, chat_store) = open_stores(&config).await?;
        let grace = Duration::from_secs(config.shutdown_grace_secs);

        let queues = QueueManager::new(Arc::clone(&job_store), Arc::new(LocalHub::default()));
        jobs::register_queues(&queues)
            .await
            .context("cannot start the job queues")?;
        let hub = Hub::new(HubConfig::default());
        let delivery: Arc<dyn Delivery> = Arc::new(HubDelivery::new(hub.clone()));
        let chat = Chat::new(
            ChatConfig {
                jwt_secret: secrets.jwt_secret.clone(),
                hash_cost: HashCost {
                    memory_kib: config.argon2_memory_kib,
                    iterations: config.argon2_iterations,
                },
                login_max_failures: config.login_max_failures,
                data_dir: config.data_dir.clone(),
                smtp_url: config.smtp_url.clone(),
                email_from: config.email_from.clone(),
                cloudinary_url: config.cloudinary_url.clone(),
                public_url: config.http.public_url(config.port),
                max_image_pixels: config.max_image_pixels,
                signup_mode: config.signup_mode,
                edit_window_ms: config.message_edit_window_minutes.saturating_mul(60_000),
            },
            chat_store,
            queues.clone(),
            delivery,
        )
        .context("cannot set up the chat service")?;
        chat.attach().context("cannot attach the chat processors")?;
        let placed = chat
            .restore_backlog()
            .await
            .context("cannot read the queued messages")?;
        if placed > 0 {
            tracing::info!(
                messages = placed,
                "messages queued before the restart resume"
            );
        }
        queues.start();
        let shutdown = CancellationToken::new();
        let state =
            AppState::with_shutdown(config, secrets, queues.clone(), shutdown.child_token());
        state.set_chat(chat.clone(), hub);
        Ok(Server {
            shutdown,
            state,
            queues,
            chat,
            job_store,
            grace,
            _scratch_dir: scratch_dir,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn queues(&self) -> &QueueManager {
        &self.queues
    }

    pub fn chat(&self) -> &Arc<Chat> {
        &self.chat
    }

    /// Waits, at most the grace period, for every task the HTTP layer spawned (connections,
    /// socket sessions and their closing handshakes); the root token is cancelled by now.
    async fn wait_for_tasks(&self) {
        let tasks = self.state.tasks();
        tasks.close();
        if tokio::time::timeout(self.grace, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = tasks.len(),
                "connections or sockets still open after the shutdown grace period; leaving them"
            );
        }
    }

    /// Serves on `listener` until `shutdown` resolves, then shuts down in order: cancel the root
    /// token, drain HTTP, wait for the socket tasks, stop the queues (running jobs finish or return to `waiting`), flush.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let local_addr = listener
            .local_addr()
            .context("cannot read the listening address")?;
        let config = self.state.config();
        let alerts = crate::alerts::spawn_under(
            self.state.health_monitor().clone(),
            self.queues.clone(),
            crate::alerts::AlertOptions::new(&config.health, config.alert_webhook_url.clone()),
            &self.shutdown,
        );
        // A store that failed for good ends the server like a signal does, and the exit says
        // why: what was acknowledged is in the write-ahead log, and a restart replays it.
        let store_failure = Arc::new(std::sync::OnceLock::<String>::new());
        let shutdown = {
            let store = self.job_store.clone();
            let store_failure = store_failure.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    reason = store.failed_for_good() => {
                        tracing::error!(
                            reason = %reason,
                            "storage failed and refuses every write until a restart: shutting down"
                        );
                        let _ = store_failure.set(reason);
                    }
                }
            }
        };
        let served = serve(
            listener,
            self.state.clone(),
            self.shutdown.clone(),
            shutdown,
            self.grace,
            local_addr,
        )
        .await;
        self.wait_for_tasks().await;

        // Alerts already queued get a moment to go out; checks stop before the queues do.
        alerts.shutdown(self.grace.min(ALERT_DELIVERY_GRACE)).await;

        self.chat.stop(self.grace).await;
        if let Err(err) = self.queues.shutdown(self.grace).await {
            tracing::error!(error = %err, "cannot stop the job queues cleanly");
        }
        if let Some(reason) = store_failure.get() {
            anyhow::bail!(
                "storage failed ({reason}); every acknowledged write is in the write-ahead log and \
                 is replayed at the next start: restart once the data directory is writable"
            );
        }
        let flushed = self
            .job_store
            .flush()
            .await
            .context("cannot flush the store on shutdown");
        served?;
        flushed?;
        tracing::info!("courier stopped");
        Ok(())
    }
}

/// Runs the server on `listener` until `shutdown` resolves, then shuts down in order.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    start_on(&listener, config)
        .await?
        .serve(listener, shutdown)
        .await
}

/// [`Server::start`] for a server that will serve on `listener`: links in e-mails and
/// invitations name the port really bound (PORT=0 picks one).
pub async fn start_on(listener: &TcpListener, mut config: Config) -> anyhow::Result<Server> {
    config.port = listener
        .local_addr()
        .context("cannot read the listening address")?
        .port();
    Server::start(config).await
}

/// The URL a client on this machine reaches a server listening on `address` by: an unspecified
/// address (`0.0.0.0`, `::`) is reached through loopback.
pub fn local_url(address: SocketAddr) -> String {
    let ip = match address.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    format!("http://{}", SocketAddr::new(ip, address.port()))
}

/// A future that resolves on SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// signal that arrives while the server is still starting is not lost (and does not kill the
/// process with the default action). Call it before start-up work. A handler that cannot be
/// installed is logged and that signal ignored, rather than shutting down at once.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            tokio::select! {
                () = wait_for(interrupt, "SIGINT") => tracing::info!("SIGINT received, shutting down"),
                () = wait_for(terminate, "SIGTERM") => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => tracing::info!("Ctrl-C received, shutting down"),
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for Ctrl-C");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

#[cfg(unix)]
async fn wait_for(installed: std::io::Result<tokio::signal::unix::Signal>, name: &str) {
    match installed {
        Ok(mut stream) => {
            stream.recv().await;
        }
        Err(err) => {
            tracing::error!(error = %err, signal = name, "cannot listen for the signal");
            std::future::pending::<()>().await;
        }
    }
}

/// Serves until `shutdown`, then waits for in-flight requests for at most `grace`.
async fn serve(
    listener: TcpListener,
    state: AppState,
    root: CancellationToken,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    local_addr: SocketAddr,
) -> anyhow::Result<()> {
    // One shutdown event feeds three waiters: the accept loop's graceful shutdown, the
    // cancellation tree (readiness, WebSocket sessions, the event stream, alert checks) and the
    // grace timer.
    let shutdown = shutdown.boxed().shared();
    let begin_shutdown = {
        let shutdown = shutdown.clone();
        let state = state.clone();
        async move {
            shutdown.await;
            // Readiness off and the HTTP layer's tasks told to stop, then the rest of the tree.
            state.begin_shutdown();
            root.cancel();
        }
    };
    let grace_elapsed = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            tokio::time::sleep(grace).await;
        }
    };

    let app = http::app(state.clone());
    let settings = state.config().http.clone();
    let tasks = state.tasks().clone();
    let server = async move {
        http::serve_connections(listener, app, &settings, &tasks, begin_shutdown).await;
        Ok::<(), anyhow::Error>(())
    };
    state.set_ready(true);
    tracing::info!(address = %local_addr, "courier listening on http://{local_addr}");

    tokio::select! {
        served = server => served,
        () = grace_elapsed => {
            tracing::warn!(grace_secs = grace.as_secs(), "requests still running after the shutdown grace period; cutting them off");
            Ok(())
        }
    }
}

async fn open_stores(config: &Config) -> anyhow::Result<(Arc<dyn JobStore>, Arc<dyn ChatStore>)> {
    let store_config = store_config(config);
    // sled's open reads and recovers the log: blocking work, kept off the async workers.
    let opened = tokio::task::spawn_blocking(move || store::open(&store_config))
        .await
        .context("the task opening the store failed")?;
    match opened {
        Ok(stores) => Ok((stores.jobs, stores.chat)),
        // A backend this binary cannot open is a setting to change: exit 2 like any other.
        Err(StoreError::Unsupported(message)) => Err(ConfigError::Invalid(message).into()),
        // So is a Redis nobody answers at start-up (a wrong address, a server not started): one
        // line and exit 2, rather than a server that would answer 503 to everything.
        Err(err @ StoreError::Unavailable { .. })
            if config.queue_backend == QueueBackend::Redis =>
        {
            Err(ConfigError::Invalid(err.to_string()).into())
        }
        Err(err) => Err(anyhow::Error::new(err).context("cannot open the store")),
    }
}

/// What the settings ask of the storage layer.
fn store_config(config: &Config) -> StoreConfig {
    if config.ephemeral {
        // `Config` refuses `--ephemeral` with any storage setting, so nothing is overridden.
        return StoreConfig::memory();
    }
    StoreConfig {
        data_dir: config.data_dir.clone(),
        cache_bytes: config.store_cache_mb.saturating_mul(1024 * 1024),
        search_index: config.search_index,
        jobs: match config.queue_backend {
            QueueBackend::Sled => JobBackend::Sled,
            QueueBackend::Redis => JobBackend::Redis {
                url: config.redis_url(),
            },
        },
        chat: match config.chat_backend {
            config::ChatBackend::Sled => ChatBackend::Sled,
            // `Config` requires MONGODB_URI here; never fall back to sled on a missing one.
            config::ChatBackend::Mongodb => ChatBackend::Mongodb {
                uri: config.mongodb_uri.clone().unwrap_or_default(),
            },
        },
    }
}

/// Logs where the secrets came from. A generated admin key is printed this once (the operator
/// needs it and it is kept in `DATA_DIR`); the JWT secret is never printed.
fn announce_secrets(secrets: &Secrets) {
    match &secrets.jwt_secret_origin {
        SecretOrigin::Configured => tracing::info!("jwt secret: from JWT_SECRET"),
        SecretOrigin::Stored(path) => {
            tracing::info!(path = %path.display(), "jwt secret: loaded from the data directory")
        }
        SecretOrigin::Generated(path) => {
            tracing::info!(path = %path.display(), "jwt secret: generated and saved in the data directory")
        }
        SecretOrigin::Ephemeral => tracing::info!("jwt secret: generated for this run only"),
    }
    match &secrets.admin_key_origin {
        SecretOrigin::Configured => tracing::info!("admin key: from QUEUE_ADMIN_KEY"),
        SecretOrigin::Stored(path) => {
            tracing::info!(path = %path.display(), "admin key: loaded from the data directory (QUEUE_ADMIN_KEY is unset)")
        }
        SecretOrigin::Generated(path) => tracing::warn!(
            path = %path.display(),
            "QUEUE_ADMIN_KEY is unset: generated admin key {}; it is saved in the data directory and not printed again",
            secrets.admin_key,
        ),
        SecretOrigin::Ephemeral => tracing::warn!(
            "QUEUE_ADMIN_KEY is unset: generated admin key {} for this run only",
            secrets.admin_key,
        ),
    }
}
