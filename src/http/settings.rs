//! The HTTP transport's settings: which other origins may call the API with the user's cookie
//! (`CORS_ORIGINS`), and how long a connection may take to send its headers or stay silent.
//!
//! Flattened into [`crate::config::Config`]; validated there at start-up.

use std::time::Duration;

/// Origins other than Courier's own, and the connection timeouts.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpSettings {
    /// Other origins (`scheme://host[:port]`, comma-separated) whose pages may call the API and
    /// open sockets with the user's cookie; empty allows Courier's own origin only.
    #[arg(long = "cors-origins", env = "CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// Where people reach Courier (`scheme://host[:port]`): the address of links in e-mails,
    /// and an allowed origin. Default `http://localhost:<PORT>`; set it whenever e-mail is sent.
    #[arg(long = "public-url", env = "PUBLIC_URL", value_parser = parse_origin)]
    pub public_url: Option<String>,

    /// Seconds a connection gets to send a request's headers (also the keep-alive idle time
    /// between requests); slower connections are closed.
    #[arg(long = "header-read-timeout-secs", env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_secs: u64,

    /// Seconds a connection may go without reading or writing a byte (WebSockets included: they
    /// are pinged well within it) before it is closed.
    #[arg(long = "idle-timeout-secs", env = "IDLE_TIMEOUT_SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(30..=86_400))]
    pub idle_timeout_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> HttpSettings {
        HttpSettings {
            cors_origins: Vec::new(),
            public_url: None,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 120,
        }
    }
}

impl HttpSettings {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// `PUBLIC_URL`, or the default for a server on `port`.
    pub fn public_url(&self, port: u16) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://localhost:{port}"))
    }

    /// Origins other than the request's own that may use the cookie: `CORS_ORIGINS` and
    /// `PUBLIC_URL`.
    pub fn allowed_origins(&self) -> Vec<String> {
        let mut allowed = self.cors_origins.clone();
        allowed.extend(self.public_url.iter().cloned());
        allowed
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

/// Normalises one origin as browsers send it in `Origin`: lowercase scheme and host, the port
/// only when it is not the scheme's default, no path. `*` is refused: a credentialed request
/// can never be allowed from anywhere.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text == "*" {
        return Err("'*' cannot be allowed: name each origin (scheme://host[:port])".to_owned());
    }
    normalise_origin(text)
        .ok_or_else(|| format!("'{text}' is not an origin (scheme://host[:port])"))
}

/// `scheme://host[:port]` in the form browsers send, or `None` when `text` is not one.
pub fn normalise_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let plausible = !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@', ' '])
        && authority.is_ascii();
    if !plausible {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let (host, port) = split_port(&authority)?;
    if host.is_empty() {
        return None;
    }
    Some(match port {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Splits `host[:port]` (with `[v6]` literals); `None` when the port is not a number.
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let port_start = if authority.starts_with('[') {
        let close = authority.find(']')?;
        match &authority[close + 1..] {
            "" => return Some((authority, None)),
            rest => rest.strip_prefix(':').map(|_| close + 1)?,
        }
    } else {
        match authority.rfind(':') {
            Some(colon) => colon,
            None => return Some((authority, None)),
        }
    };
    let port = &authority[port_start + 1..];
    let valid = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| (&authority[..port_start], Some(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(
            parse_origin("HTTPS://Chat.Example.com/").as_deref(),
            Ok("https://chat.example.com")
        );
        assert_eq!(
            parse_origin("http://localhost:5173").as_deref(),
            Ok("http://localhost:5173")
        );
        assert_eq!(
            parse_origin("https://example.com:443").as_deref(),
            Ok("https://example.com")
        );
        assert_eq!(
            parse_origin("http://[::1]:8080").as_deref(),
            Ok("http://[::1]:8080")
        );
        for bad in [
            "*",
            "example.com",
            "ftp://example.com",
            "https://example.com/app",
            "https://",
            "https://a:b",
            "https://user@example.com",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad} should be refused");
        }
    }
}
