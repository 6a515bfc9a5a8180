//! The job store backends the conformance tests run on, and the macro that runs a test on each.
//!
//! A test is written once, as a function of a [`Backend`]; `on_every_backend!` makes a test of
//! it per backend, `memory::name` and `sled::name` (and `redis::name` in a build with the `redis`
//! feature), so a failure names its backend. Restarts and everything about durability (what
//! survives a reopen) are for sled alone: a memory store lives and dies with its process, and a
//! Redis store's leases live in Redis, so reopening one is no restart.
//!
//! The Redis tests use the server `REDIS_URL` names, or else one `redis-server` this test binary
//! starts on a free port (append-only file, fsync on every write, in a temporary folder; cluster
//! mode, one node holding every slot, so a script touching a key outside its queue's hash tag
//! fails) and that dies with it. Each store gets keys of its own (a prefix made of its folder), so tests running
//! at once never meet. Without a server they print why and pass, except under `CI=true`.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use courier::store::memory::MemoryJobStore;
use courier::store::{self, JobStore, StoreConfig, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sled,
    #[cfg(feature = "redis")]
    Redis,
}

impl Backend {
    /// A fresh job store; sled's lives in `dir`, memory ignores it.
    pub fn open(self, dir: &Path) -> Result<Arc<dyn JobStore>, StoreError> {
        match self {
            Backend::Memory => Ok(Arc::new(MemoryJobStore::new())),
            Backend::Sled => store::open(&StoreConfig::sled(dir)).map(|stores| stores.jobs),
            #[cfg(feature = "redis")]
            Backend::Redis => {
                let Some(url) = redis_server::url() else {
                    return Err(StoreError::Unsupported("no Redis server".to_owned()));
                };
                let prefix = redis_server::prefix_for(dir);
                courier::store::redis::RedisJobStore::open(url, &prefix)
                    .map(|store| Arc::new(store) as Arc<dyn JobStore>)
            }
        }
    }

    /// Whether what the store holds outlives the store (a restart finds it again).
    pub fn is_durable(self) -> bool {
        match self {
            Backend::Memory => false,
            Backend::Sled => true,
            #[cfg(feature = "redis")]
            Backend::Redis => false,
        }
    }
}

/// Whether a test on `backend` cannot run here (no Redis server, outside CI): it says why.
pub fn skipped(backend: Backend) -> bool {
    #[cfg(feature = "redis")]
    if backend == Backend::Redis {
        return redis_server::url().is_none();
    }
    let _ = backend;
    false
}

#[cfg(feature = "redis")]
pub mod redis_server {
    //! The Redis server of this test binary.

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    static SERVER: OnceLock<Option<String>> = OnceLock::new();

    /// The server's URL: `REDIS_URL`, or a private `redis-server` started once. `None` (with the
    /// reason printed) when there is none; under `CI=true` that is a failure instead.
    pub fn url() -> Option<&'static str> {
        let found = SERVER.get_or_init(|| {
            if let Ok(url) = std::env::var("REDIS_URL") {
                return Some(url);
            }
            match start() {
                Ok(url) => Some(url),
                Err(why) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
                    panic!("CI=true: the Redis tests cannot run: {why}")
                }
                Err(why) => {
                    eprintln!(
                        "skipping the Redis tests: {why} (set REDIS_URL or install redis-server)"
                    );
                    None
                }
            }
        });
        found.as_deref()
    }

    /// A key prefix of the store in `dir`: the same for a reopen of that folder, another for
    /// every other folder and test binary run.
    pub fn prefix_for(dir: &Path) -> String {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut hasher = DefaultHasher::new();
        dir.hash(&mut hasher);
        format!("test-{}-{:x}", std::process::id(), hasher.finish())
    }

    /// Starts `redis-server` on a free port from a thread that lives as long as the test binary:
    /// the server gets SIGKILL when that thread ends (`PR_SET_PDEATHSIG`), so none outlives it.
    fn start() -> Result<String, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|err| format!("no free port: {err}"))?
            .port();
        let dir = tempfile::tempdir().map_err(|err| format!("no temporary folder: {err}"))?;
        let dir = dir.keep();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut command = Command::new("redis-server");
            command
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                // One node holding every slot: the scripts' `#!lua` then makes the server refuse
                // any key outside a queue's slot, so the suite proves the hash tags.
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(dir.join("nodes.conf"))
                .args(["--daemonize", "no", "--dir"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            match command.spawn() {
                Ok(mut child) => {
                    let _ = sender.send(Ok(()));
                    let _ = child.wait();
                }
                Err(err) => {
                    let _ = sender.send(Err(format!("cannot start redis-server: {err}")));
                }
            }
        });
        receiver
            .recv()
            .map_err(|_| "the redis-server thread died".to_owned())??;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut slots_assigned = false;
        while Instant::now() < deadline {
            if !slots_assigned {
                slots_assigned = ask(port, "CLUSTER ADDSLOTSRANGE 0 16383")
                    .is_some_and(|reply| reply.starts_with("+OK"));
            } else if ask(port, "CLUSTER INFO")
                .is_some_and(|reply| reply.contains("cluster_state:ok"))
            {
                return Ok(format!("redis://127.0.0.1:{port}/"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "redis-server on port {port} was not ready within 15 s"
        ))
    }

    /// Sends one inline command; what came back within a moment (`None`: nobody listens yet).
    fn ask(port: u16, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        // Until the read times out or the connection ends: replies here are short.
        while let Ok(read) = stream.read(&mut chunk) {
            if read == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..read]);
            if reply.starts_with(b"+") || reply.starts_with(b"-") {
                break;
            }
        }
        Some(String::from_utf8_lossy(&reply).into_owned())
    }
}

/// For each listed test function `name(backend: Backend)`, a test `memory::name` and a test
/// `sled::name` carrying the given attributes. List `fn name;` for a plain function and
/// `async fn name;` for one to await (under an async test attribute such as `#[tokio::test]`).
macro_rules! on_every_backend {
    (@tests $backend:ident;) => {};
    (@tests $backend:ident; not_on_redis($why:literal) $($rest:tt)*) => {
        on_every_backend!(@tests $backend; $($rest)*);
    };
    (@tests $backend:ident; $(#[$attr:meta])* async fn $name:ident; $($rest:tt)*) => {
        $(#[$attr])*
        async fn $name() {
            super::$name(super::Backend::$backend).await
        }
        on_every_backend!(@tests $backend; $($rest)*);
    };
    (@tests $backend:ident; $(#[$attr:meta])* fn $name:ident; $($rest:tt)*) => {
        $(#[$attr])*
        fn $name() {
            super::$name(super::Backend::$backend)
        }
        on_every_backend!(@tests $backend; $($rest)*);
    };
    (@redis) => {};
    // `not_on_redis("why")` before a test's attributes: ignored on Redis, with the reason.
    (@redis not_on_redis($why:literal) $(#[$attr:meta])* async fn $name:ident; $($rest:tt)*) => {
        on_every_backend!(@redis #[ignore = $why] $(#[$attr])* async fn $name; $($rest)*);
    };
    (@redis not_on_redis($why:literal) $(#[$attr:meta])* fn $name:ident; $($rest:tt)*) => {
        on_every_backend!(@redis #[ignore = $why] $(#[$attr])* fn $name; $($rest)*);
    };
    (@redis $(#[$attr:meta])* async fn $name:ident; $($rest:tt)*) => {
        $(#[$attr])*
        async fn $name() {
            if crate::job_backends::skipped(super::Backend::Redis) {
                return;
            }
            super::$name(super::Backend::Redis).await
        }
        on_every_backend!(@redis $($rest)*);
    };
    (@redis $(#[$attr:meta])* fn $name:ident; $($rest:tt)*) => {
        $(#[$attr])*
        fn $name() {
            if crate::job_backends::skipped(super::Backend::Redis) {
                return;
            }
            super::$name(super::Backend::Redis)
        }
        on_every_backend!(@redis $($rest)*);
    };
    ($($tests:tt)*) => {
        mod memory {
            on_every_backend!(@tests Memory; $($tests)*);
        }
        mod sled {
            on_every_backend!(@tests Sled; $($tests)*);
        }
        #[cfg(feature = "redis")]
        mod redis {
            on_every_backend!(@redis $($tests)*);
        }
    };
}
