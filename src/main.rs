//! The `courier` binary: parse settings, set up logging, bind, and hand over to
//! [`courier::server`] until SIGINT or SIGTERM.
//!
//! Exit codes: 0 after a clean shutdown, 2 for invalid settings (including an unwritable data
//! directory and an admin key shorter than 32 characters, configured or stored), 1 when the port
//! cannot be bound or the server fails.
//!
//! With `--ephemeral` the server's URL is the only line on stdout (logs go to stderr), printed
//! once it has started, so a script can read it.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use courier::config::{Config, ConfigError, LogFormat, EXIT_INVALID_CONFIG};
use courier::server;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

courier::install_allocator!();

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse_or_exit();
    // Installed before any start-up work, so an early SIGTERM still shuts down cleanly.
    let shutdown = server::shutdown_signal();
    let ephemeral = config.ephemeral;
    if let Err(message) = init_tracing(config.log_format, ephemeral) {
        return fail(EXIT_INVALID_CONFIG, &message);
    }
    // An ephemeral server has no data directory (its start-up makes a temporary one).
    if !ephemeral {
        if let Err(err) = config.prepare_data_dir() {
            return fail(EXIT_INVALID_CONFIG, &format!("{err:#}"));
        }
    }

    let address = SocketAddr::new(config.bind_addr, config.port);
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(err) => return fail(1, &format!("cannot listen on {address}: {err}")),
    };
    let bound = match listener.local_addr() {
        Ok(bound) => bound,
        Err(err) => return fail(1, &format!("cannot read the listening address: {err}")),
    };

    let served = match server::start_on(&listener, config).await {
        Ok(server) => {
            if ephemeral {
                // Connections made from here on wait in the listen backlog until `serve` runs.
                println!("{}", server::local_url(bound));
            }
            server.serve(listener, shutdown).await
        }
        Err(err) => Err(err),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        // A setting only start-up can judge (a stored admin key that is too short).
        Err(err) if matches!(err.downcast_ref(), Some(ConfigError::Invalid(_))) => {
            fail(EXIT_INVALID_CONFIG, &format!("{err:#}"))
        }
        Err(err) => fail(1, &format!("{err:#}")),
    }
}

/// Prints one line to stderr (whatever the log format, so it is seen even with logging off).
fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("courier: error: {message}");
    ExitCode::from(code)
}

/// `RUST_LOG` filters (default `info`); an invalid filter is an invalid setting. Logs go to
/// stdout, or to stderr when stdout is kept for the URL (`--ephemeral`).
fn init_tracing(format: LogFormat, to_stderr: bool) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|err| format!("invalid value '{directives}' for RUST_LOG: {err}"))?,
        _ => EnvFilter::new("info"),
    };
    let (writer, terminal) = if to_stderr {
        (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        )
    } else {
        (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        )
    };
    // Colour codes only for a person at a terminal: in a file or a log collector they are noise.
    let colour = terminal && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(colour);
    let installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|err| format!("cannot set up logging: {err}"))
}
