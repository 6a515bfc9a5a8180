//! Start-up settings: one clap struct whose fields read CLI flags or environment variables, the
//! data directory check, and the secrets (JWT signing key, admin key) kept in `DATA_DIR`.
//!
//! Owns turning bad settings into one clear line and exit code 2. Knows nothing of HTTP or
//! storage; `server` consumes a validated [`Config`] and the [`Secrets`] from [`ensure_secrets`].

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, ValueEnum};

mod secrets;

use self::secrets::random_hex_secret;
pub use self::secrets::{ensure_secrets, SecretOrigin, Secrets};

/// The exit code for invalid settings: the one clap uses for usage errors.
pub const EXIT_INVALID_CONFIG: u8 = 2;

/// The shortest admin key accepted without `ALLOW_SHORT_ADMIN_KEY`: 32 characters is 128 bits
/// when they are hex digits, beyond guessing even without the failure limit.
pub const MIN_ADMIN_KEY_CHARS: usize = 32;

/// Courier's settings. Every flag also reads the environment variable of the same name in
/// upper case (`--data-dir` ↔ `DATA_DIR`); a `.env` file in the working directory is read first
/// and never overrides variables already set.
///
/// Fields holding credentials are redacted by `Debug` and hidden from `--help`.
#[derive(Clone, Parser)]
#[command(
    name = "courier",
    version,
    about = "A chat server with durable job queues in one binary",
    long_about = None,
    after_help = "Every option can also be set with the environment variable shown beside it; \
                  a .env file in the working directory is read first (variables already set win)."
)]
pub struct Config {
    /// Run on memory stores, for tests and trials: nothing is written to DATA_DIR or the working
    /// directory (uploads and e-mails go to a temporary directory removed at shutdown), the port
    /// defaults to a free one on 127.0.0.1, and the URL is printed alone on stdout (logs go to
    /// stderr). Cannot be combined with DATA_DIR, QUEUE_BACKEND or CHAT_BACKEND.
    #[arg(
        long,
        env = "COURIER_EPHEMERAL",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub ephemeral: bool,

    /// TCP port of the HTTP and WebSocket server; 0 picks a free one (the default with
    /// `--ephemeral`).
    #[arg(long, env = "PORT", default_value_t = 5000)]
    pub port: u16,

    /// Address to bind; `0.0.0.0` listens on every IPv4 interface (`127.0.0.1` is the default
    /// with `--ephemeral`).
    #[arg(long, env = "BIND_ADDR", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind_addr: IpAddr,

    /// Directory of the embedded database, uploads, the e-mail outbox and generated secrets.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Key that signs session tokens; generated once and kept in DATA_DIR when unset.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Key for the admin routes (`X-Admin-Key`), at least 32 characters; generated once, kept in
    /// DATA_DIR and printed at start-up when unset.
    #[arg(long, env = "QUEUE_ADMIN_KEY", hide_env_values = true)]
    pub queue_admin_key: Option<String>,

    /// Accept an admin key shorter than 32 characters (QUEUE_ADMIN_KEY or the one kept in
    /// DATA_DIR) instead of refusing to start.
    #[arg(
        long,
        env = "ALLOW_SHORT_ADMIN_KEY",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub allow_short_admin_key: bool,

    /// Where job queues live: `sled` (embedded) or `redis` (needs the `redis` feature).
    #[arg(long, env = "QUEUE_BACKEND", value_enum, default_value_t = QueueBackend::Sled)]
    pub queue_backend: QueueBackend,

    /// Redis server, used when QUEUE_BACKEND=redis: `redis://[:password@]host:port/db`, or
    /// `rediss://` for TLS. When set, REDIS_HOST, REDIS_PORT and REDIS_PASSWORD are not read.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis host, used when QUEUE_BACKEND=redis and REDIS_URL is unset.
    #[arg(long, env = "REDIS_HOST", default_value = "localhost")]
    pub redis_host: String,

    /// Redis port, used when QUEUE_BACKEND=redis.
    #[arg(long, env = "REDIS_PORT", default_value_t = 6379)]
    pub redis_port: u16,

    /// Redis password, used when QUEUE_BACKEND=redis.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,

    /// Where users and messages live: `sled` (embedded) or `mongodb` (needs the `mongodb` feature).
    #[arg(long, env = "CHAT_BACKEND", value_enum, default_value_t = ChatBackend::Sled)]
    pub chat_backend: ChatBackend,

    /// MongoDB connection string, required when CHAT_BACKEND=mongodb.
    #[arg(long, env = "MONGODB_URI", hide_env_values = true)]
    pub mongodb_uri: Option<String>,

    /// `cloudinary://<key>:<secret>@<cloud>`: store images in Cloudinary instead of DATA_DIR/uploads.
    #[arg(long, env = "CLOUDINARY_URL", hide_env_values = true)]
    pub cloudinary_url: Option<String>,

    /// Most pixels (width × height of the canvas, every animation frame included) an image may
    /// have, read from its header: a small file can declare an image that takes gigabytes to
    /// show. At least 1; there is no "off".
    #[arg(long, env = "MAX_IMAGE_PIXELS", default_value_t = crate::chat::images::DEFAULT_MAX_IMAGE_PIXELS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_pixels: u64,

    /// Minutes after sending during which its sender may edit a message; 0 turns edits off.
    #[arg(long, env = "MESSAGE_EDIT_WINDOW_MINUTES", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(0..=525_600))]
    pub message_edit_window_minutes: u64,

    /// `smtp://` or `smtps://` URL of the mail server; without it e-mails go to DATA_DIR/outbox.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Sender address of notification e-mails.
    #[arg(long, env = "EMAIL_FROM")]
    pub email_from: Option<String>,

    /// HTTP(S) URL that receives queue health alerts.
    #[arg(long, env = "ALERT_WEBHOOK_URL", hide_env_values = true)]
    pub alert_webhook_url: Option<String>,

    /// Log output: `pretty` for people, `json` for log collectors (filter with RUST_LOG).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Let the admin key read queues but not change them.
    #[arg(
        long,
        env = "ADMIN_READ_ONLY",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub admin_read_only: bool,

    /// Sign-up and login attempts per IP address per minute; 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_AUTH", default_value_t = 20)]
    pub rate_limit_auth: u32,

    /// Messages sent per user per minute; 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_SEND", default_value_t = 600)]
    pub rate_limit_send: u32,

    /// Index messages for search (`GET /api/messages/search`). Off, sends cost less CPU (see
    /// BENCHMARKS.md) and searches answer 403; turned on again, the index is rebuilt at start.
    #[arg(
        long,
        env = "SEARCH_INDEX",
        action = ArgAction::Set,
        default_value_t = true,
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub search_index: bool,

    /// Message searches per user per minute; 0 turns the limit off.
    #[arg(long, env = "RATE_LIMIT_SEARCH", default_value_t = 120)]
    pub rate_limit_search: u32,

    /// Sends are refused (503 with Retry-After) while this many messages wait to be processed,
    /// so an overloaded server answers at once instead of queueing without bound; 0 turns it off.
    #[arg(long, env = "SEND_BACKLOG_LIMIT", default_value_t = 5_000)]
    pub send_backlog_limit: u64,

    /// Megabytes of the store's page cache (sled's own count; it holds somewhat more). Smaller
    /// saves memory on a busy server; history reads of older conversations then go to disk.
    #[arg(long, env = "STORE_CACHE_MB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub store_cache_mb: u64,

    /// Failed logins per account per 15 minutes before logins are refused; 0 turns it off.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 10)]
    pub login_max_failures: u32,

    /// Who may create an account: `open` (anyone), `invite` (with an invitation link from the
    /// admin dashboard) or `closed`.
    #[arg(long, env = "SIGNUP_MODE", value_enum, default_value_t = crate::chat::SignupMode::Open)]
    pub signup_mode: crate::chat::SignupMode,

    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM before they are cut off.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Mark the `jwt` cookie `Secure` (set it when serving over HTTPS).
    #[arg(
        long,
        env = "COOKIE_SECURE",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub cookie_secure: bool,

    /// `SameSite` attribute of the `jwt` cookie: `strict`, `lax` or `none` (`none` needs Secure).
    #[arg(long, env = "COOKIE_SAMESITE", value_enum, default_value_t = SameSitePolicy::Strict)]
    pub cookie_same_site: SameSitePolicy,

    /// argon2id memory cost in KiB for password hashes (OWASP's minimum is 19456).
    #[arg(long, env = "ARGON2_MEMORY_KIB", default_value_t = 19_456, value_parser = clap::value_parser!(u32).range(8..))]
    pub argon2_memory_kib: u32,

    /// argon2id iterations for password hashes.
    #[arg(long, env = "ARGON2_ITERATIONS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub argon2_iterations: u32,

    /// Queue health thresholds and the health monitor's pace (`HEALTH_*`; see `alerts.rs`).
    #[command(flatten)]
    pub health: crate::alerts::HealthSettings,

    /// Allowed cross-origin callers and connection timeouts (`CORS_ORIGINS`, `*_TIMEOUT_SECS`).
    #[command(flatten)]
    pub http: crate::http::HttpSettings,

    /// File uploads and a front end folder to serve (`FILE_MAX_MB`, `RATE_LIMIT_UPLOAD`,
    /// `FRONTEND_DIR`).
    #[command(flatten)]
    pub serve: crate::http::ServeSettings,
}

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SameSitePolicy {
    Strict,
    Lax,
    None,
}

/// Where the job queues are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueBackend {
    Sled,
    Redis,
}

/// Where users, conversations and messages are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChatBackend {
    Sled,
    Mongodb,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--help` or `--version` was asked for: print it and exit successfully.
    #[error("{0}")]
    Info(clap::Error),
    /// A setting is invalid; the text is one line, lowercase, naming the variable.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// The Redis server to use: REDIS_URL, or one built from REDIS_HOST, REDIS_PORT and
    /// REDIS_PASSWORD (percent-encoded, so any password fits in the URL).
    pub fn redis_url(&self) -> String {
        if let Some(url) = &self.redis_url {
            return url.clone();
        }
        let auth = match &self.redis_password {
            Some(password) => format!(
                ":{}@",
                percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => String::new(),
        };
        format!("redis://{auth}{}:{}/", self.redis_host, self.redis_port)
    }

    /// Reads `.env`, then flags and environment variables, then validates. On `--help` or
    /// `--version` prints and exits 0; on an invalid setting prints one line to stderr and exits
    /// with [`EXIT_INVALID_CONFIG`].
    pub fn parse_or_exit() -> Config {
        let loaded = load_dotenv().and_then(|()| Config::from_args(std::env::args_os()));
        match loaded {
            Ok(config) => config,
            Err(ConfigError::Info(info)) => info.exit(),
            Err(ConfigError::Invalid(message)) => {
                eprintln!("courier: error: {message}");
                std::process::exit(i32::from(EXIT_INVALID_CONFIG))
            }
        }
    }

    /// Parses `args` (the first item is the program name) and the environment, and validates.
    /// Does not read `.env`.
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = match Config::command().try_get_matches_from(args) {
            Ok(matches) => matches,
            Err(err) if is_info(&err) => return Err(ConfigError::Info(err)),
            Err(err) => return Err(ConfigError::Invalid(one_line(&err))),
        };
        let mut config = Config::from_arg_matches(&matches)
            .map_err(|err| ConfigError::Invalid(one_line(&err.format(&mut Config::command()))))?;
        config.normalize();
        if config.ephemeral {
            config
                .apply_ephemeral(&matches)
                .map_err(ConfigError::Invalid)?;
        }
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// What `--ephemeral` changes: a free port on loopback unless one is given, and a refusal
    /// of every setting that asks for storage on disk or elsewhere (only whether a setting was
    /// given counts, not its value: `QUEUE_BACKEND=sled` is as much a request for disk as
    /// `redis` is one for Redis).
    fn apply_ephemeral(&mut self, matches: &ArgMatches) -> Result<(), String> {
        let given = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let conflicting: Vec<&str> = [
            ("data_dir", "DATA_DIR (--data-dir)"),
            ("queue_backend", "QUEUE_BACKEND (--queue-backend)"),
            ("chat_backend", "CHAT_BACKEND (--chat-backend)"),
        ]
        .into_iter()
        .filter(|(id, _)| given(id))
        .map(|(_, name)| name)
        .collect();
        if !conflicting.is_empty() {
            return Err(format!(
                "COURIER_EPHEMERAL (--ephemeral) keeps every store in memory and cannot be \
                 combined with {}: unset it or drop --ephemeral",
                conflicting.join(" or ")
            ));
        }
        if !given("port") {
            self.port = 0;
        }
        if !given("bind_addr") {
            self.bind_addr = IpAddr::V4(Ipv4Addr::LOCALHOST);
        }
        Ok(())
    }

    /// Settings for integration tests: loopback on an ephemeral port, `data_dir` as given,
    /// rate limits off, a one-second shutdown grace, and fresh random secrets (read them from
    /// the returned value).
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            ephemeral: false,
            port: 0,
            bind_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            data_dir: data_dir.into(),
            jwt_secret: Some(random_hex_secret()),
            queue_admin_key: Some(random_hex_secret()),
            allow_short_admin_key: false,
            queue_backend: QueueBackend::Sled,
            redis_url: None,
            redis_host: "localhost".to_owned(),
            redis_port: 6379,
            redis_password: None,
            chat_backend: ChatBackend::Sled,
            mongodb_uri: None,
            cloudinary_url: None,
            max_image_pixels: crate::chat::images::DEFAULT_MAX_IMAGE_PIXELS,
            message_edit_window_minutes: 15,
            smtp_url: None,
            email_from: None,
            alert_webhook_url: None,
            log_format: LogFormat::Pretty,
            admin_read_only: false,
            rate_limit_auth: 0,
            rate_limit_send: 0,
            rate_limit_search: 0,
            search_index: true,
            send_backlog_limit: 0,
            store_cache_mb: 64,
            login_max_failures: 0,
            signup_mode: crate::chat::SignupMode::Open,
            shutdown_grace_secs: 1,
            cookie_secure: false,
            cookie_same_site: SameSitePolicy::Strict,
            // Cheap hashes keep tests fast; production cost is ~1 s per hash in a debug build.
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            health: crate::alerts::HealthSettings::default(),
            http: crate::http::HttpSettings::default(),
            serve: crate::http::ServeSettings {
                rate_limit_upload: 0,
                ..crate::http::ServeSettings::default()
            },
        }
    }

    /// Creates the data directory if missing, makes it private to this user and proves it is
    /// writable (see [`crate::data_dir::prepare`]). The error reads as one line with `{:#}`.
    pub fn prepare_data_dir(&self) -> anyhow::Result<()> {
        crate::data_dir::prepare(&self.data_dir)
    }

    /// Unset and empty are the same to us: `.env` files and compose files often carry `FOO=`.
    fn normalize(&mut self) {
        for field in [
            &mut self.jwt_secret,
            &mut self.queue_admin_key,
            &mut self.redis_password,
            &mut self.mongodb_uri,
            &mut self.cloudinary_url,
            &mut self.smtp_url,
            &mut self.email_from,
            &mut self.alert_webhook_url,
        ] {
            if field
                .as_deref()
                .is_some_and(|value| value.trim().is_empty())
            {
                *field = None;
            }
        }
        self.serve.normalize();
    }

    fn validate(&self) -> Result<(), String> {
        // Whether this binary can open the chosen backends is the store's to say (`store::open`).
        if self.chat_backend == ChatBackend::Mongodb && self.mongodb_uri.is_none() {
            return Err("CHAT_BACKEND=mongodb needs MONGODB_URI".to_owned());
        }
        if let Some(key) = &self.queue_admin_key {
            check_admin_key_length(key, "QUEUE_ADMIN_KEY", self.allow_short_admin_key)?;
        }
        if self.redis_host.trim().is_empty() {
            return Err("REDIS_HOST is empty".to_owned());
        }
        check_scheme(
            "MONGODB_URI",
            self.mongodb_uri.as_deref(),
            &["mongodb://", "mongodb+srv://"],
        )?;
        check_scheme(
            "REDIS_URL",
            self.redis_url.as_deref(),
            &["redis://", "rediss://"],
        )?;
        check_scheme(
            "CLOUDINARY_URL",
            self.cloudinary_url.as_deref(),
            &["cloudinary://"],
        )?;
        check_scheme(
            "SMTP_URL",
            self.smtp_url.as_deref(),
            &["smtp://", "smtps://"],
        )?;
        check_scheme(
            "ALERT_WEBHOOK_URL",
            self.alert_webhook_url.as_deref(),
            &["http://", "https://"],
        )?;
        if self.cookie_same_site == SameSitePolicy::None && !self.cookie_secure {
            return Err(
                "COOKIE_SAMESITE=none needs COOKIE_SECURE=true (browsers drop a SameSite=None \
                 cookie that is not Secure, so every login would fail silently)"
                    .to_owned(),
            );
        }
        if let Some(from) = &self.email_from {
            if !from.contains('@') {
                return Err(format!(
                    "invalid value '{from}' for EMAIL_FROM: expected an e-mail address"
                ));
            }
        }
        self.serve.validate()?;
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn redacted(value: &Option<String>) -> Option<&'static str> {
            value.as_ref().map(|_| "<redacted>")
        }
        f.debug_struct("Config")
            .field("ephemeral", &self.ephemeral)
            .field("port", &self.port)
            .field("bind_addr", &self.bind_addr)
            .field("data_dir", &self.data_dir)
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field("queue_admin_key", &redacted(&self.queue_admin_key))
            .field("allow_short_admin_key", &self.allow_short_admin_key)
            .field("queue_backend", &self.queue_backend)
            .field("redis_host", &self.redis_host)
            .field("redis_port", &self.redis_port)
            .field("redis_password", &redacted(&self.redis_password))
            .field("chat_backend", &self.chat_backend)
            .field("mongodb_uri", &redacted(&self.mongodb_uri))
            .field("cloudinary_url", &redacted(&self.cloudinary_url))
            .field("max_image_pixels", &self.max_image_pixels)
            .field(
                "message_edit_window_minutes",
                &self.message_edit_window_minutes,
            )
            .field("smtp_url", &redacted(&self.smtp_url))
            .field("email_from", &self.email_from)
            .field("alert_webhook_url", &redacted(&self.alert_webhook_url))
            .field("log_format", &self.log_format)
            .field("admin_read_only", &self.admin_read_only)
            .field("rate_limit_auth", &self.rate_limit_auth)
            .field("rate_limit_send", &self.rate_limit_send)
            .field("rate_limit_search", &self.rate_limit_search)
            .field("search_index", &self.search_index)
            .field("send_backlog_limit", &self.send_backlog_limit)
            .field("store_cache_mb", &self.store_cache_mb)
            .field("login_max_failures", &self.login_max_failures)
            .field("signup_mode", &self.signup_mode)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("cookie_secure", &self.cookie_secure)
            .field("cookie_same_site", &self.cookie_same_site)
            .field("argon2_memory_kib", &self.argon2_memory_kib)
            .field("argon2_iterations", &self.argon2_iterations)
            .field("health", &self.health)
            .field("http", &self.http)
            .field("serve", &self.serve)
            .finish()
    }
}

/// Reads `./.env` into the environment (variables already set win). A missing file is fine; a
/// malformed one is an invalid setting.
fn load_dotenv() -> Result<(), ConfigError> {
    match dotenvy::from_path(".env") {
        Ok(()) => Ok(()),
        Err(dotenvy::Error::Io(err)) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(ConfigError::Invalid(format!("cannot read .env: {err}"))),
    }
}

/// Refuses an admin key shorter than [`MIN_ADMIN_KEY_CHARS`] unless `allow_short`; `source`
/// names where it came from. The message never contains the key.
fn check_admin_key_length(key: &str, source: &str, allow_short: bool) -> Result<(), String> {
    let length = key.chars().count();
    if length >= MIN_ADMIN_KEY_CHARS || allow_short {
        return Ok(());
    }
    let remedy = if source == "QUEUE_ADMIN_KEY" {
        "set a longer one (`openssl rand -hex 32` makes one)"
    } else {
        "delete the file (a new key is generated) or set QUEUE_ADMIN_KEY"
    };
    Err(format!(
        "{source} is {length} characters long, shorter than the {MIN_ADMIN_KEY_CHARS} an admin \
         key needs: {remedy}, or set ALLOW_SHORT_ADMIN_KEY=true to accept it"
    ))
}

fn check_scheme(name: &str, value: Option<&str>, schemes: &[&str]) -> Result<(), String> {
    match value {
        Some(url) if !schemes.iter().any(|scheme| url.starts_with(scheme)) => Err(format!(
            "invalid {name}: expected a URL starting with {}",
            schemes.join(" or ")
        )),
        _ => Ok(()),
    }
}

fn is_info(err: &clap::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    )
}

/// Turns clap's multi-line report into one line that names the environment variable as well as
/// the flag, since most deployments set variables.
fn one_line(err: &clap::Error) -> String {
    let flag = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split_whitespace().next().map(str::to_owned),
        _ => None,
    };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => Some(value.clone()),
        _ => None,
    };
    if let (Some(flag), Some(value), ErrorKind::InvalidValue | ErrorKind::ValueValidation) =
        (&flag, &value, err.kind())
    {
        let variable = flag
            .trim_start_matches('-')
            .replace('-', "_")
            .to_uppercase();
        let reason = match (err.kind(), err.get(ContextKind::ValidValue)) {
            (ErrorKind::InvalidValue, Some(ContextValue::Strings(valid))) => {
                format!("expected one of {}", valid.join(", "))
            }
            (ErrorKind::InvalidValue, _) => "a value is required".to_owned(),
            _ => deepest_cause(err),
        };
        // Secrets are plain strings and never fail to parse, so echoing the value is safe.
        return format!("invalid value '{value}' for {variable} ({flag}): {reason}");
    }
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid arguments");
    first.trim_start_matches("error: ").to_owned()
}

fn deepest_cause(err: &clap::Error) -> String {
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(err);
    let mut text = String::from("invalid value");
    while let Some(current) = cause {
        text = current.to_string();
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests;
