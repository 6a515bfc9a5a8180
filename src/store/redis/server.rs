//! What the Redis server is and promises: checked once when the store opens.

use crate::store::StoreError;

/// What an acknowledged write survives, as the server's configuration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `appendonly yes` with `appendfsync always`: a reply comes after the fsync.
    Always,
    /// `appendfsync everysec`: a crash of the server's machine loses up to a second.
    Everysec,
    /// No append-only file (or `appendfsync no`): a crash loses what the last snapshot lacks.
    None,
    /// The server refuses `CONFIG GET` (a managed service): not known.
    Unknown,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Always => "always",
            Durability::Everysec => "everysec",
            Durability::None => "none",
            Durability::Unknown => "unknown",
        }
    }
}

/// Checks that the server answers, is Redis 7.0 or newer (the scripts' `#!lua` flags), and
/// reads (and logs) how durable its acknowledged writes are. `shown` names it, password hidden.
pub(super) fn check(client: &redis::Client, shown: &str) -> Result<Durability, StoreError> {
    let mut probe = client
        .get_connection_with_timeout(super::CONNECT_TIMEOUT)
        .map_err(|err| {
            StoreError::unavailable(format!("cannot reach Redis at {shown}: {err}"), err)
        })?;
    redis::cmd("PING")
        .query::<String>(&mut probe)
        .map_err(|err| {
            StoreError::unavailable(format!("Redis at {shown} does not answer: {err}"), err)
        })?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut probe)
        .map_err(|err| {
            StoreError::unavailable(format!("Redis at {shown} does not answer: {err}"), err)
        })?;
    let version = server_version(&info);
    if version.is_some_and(|(major, _)| major < 7) {
        let (major, minor) = version.unwrap_or_default();
        return Err(StoreError::Unsupported(format!(
            "Redis at {shown} is {major}.{minor}: the job store needs Redis 7.0 or newer"
        )));
    }
    let durability = read_durability(&mut probe);
    match durability {
        Durability::Always => {
            tracing::info!(server = %shown, "redis job store: acknowledged writes are fsynced (appendfsync always)")
        }
        Durability::Unknown => tracing::warn!(
            server = %shown,
            "redis job store: CONFIG GET is refused, so whether acknowledged jobs are fsynced is unknown"
        ),
        weaker => tracing::warn!(
            server = %shown,
            durability = weaker.as_str(),
            "redis job store: acknowledged jobs are not fsynced (set appendonly yes and appendfsync always for that)"
        ),
    }
    Ok(durability)
}

/// `redis_version` (major, minor) in an `INFO server` reply; `None` when it is not there (a
/// proxy that hides it: the scripts' own errors then say what is missing).
fn server_version(info: &str) -> Option<(u32, u32)> {
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))?;
    let mut parts = version.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()
        .and_then(|minor| minor.parse().ok())
        .unwrap_or(0);
    Some((major, minor))
}

/// Reads `appendonly` and `appendfsync`; a server that refuses `CONFIG` is [`Durability::Unknown`].
fn read_durability(connection: &mut redis::Connection) -> Durability {
    let config = |name: &str, connection: &mut redis::Connection| -> Option<String> {
        let pairs: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(connection)
            .ok()?;
        pairs.get(1).cloned()
    };
    let Some(appendonly) = config("appendonly", connection) else {
        return Durability::Unknown;
    };
    if appendonly != "yes" {
        return Durability::None;
    }
    match config("appendfsync", connection).as_deref() {
        Some("always") => Durability::Always,
        Some("everysec") => Durability::Everysec,
        Some(_) => Durability::None,
        None => Durability::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_version_is_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(server_version(info), Some((7, 0)));
        assert_eq!(server_version("redis_version:6.2.14\r\n"), Some((6, 2)));
        assert_eq!(server_version("# Server\r\n"), None);
    }
}
