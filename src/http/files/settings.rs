//! What the server serves beyond the API: uploaded files (`FILE_MAX_MB`, `RATE_LIMIT_UPLOAD`)
//! and, in place of the embedded web client, a built front end (`FRONTEND_DIR`).
//!
//! Flattened into [`crate::config::Config`]; [`ServeSettings::validate`] runs at start-up, so a
//! front end folder that cannot be served stops the server with one clear line (exit 2).

use std::path::PathBuf;

use crate::chat::files::DEFAULT_FILE_MAX_MB;

/// Largest `FILE_MAX_MB` accepted.
pub const MAX_FILE_MAX_MB: u64 = 1024;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeSettings {
    /// Largest file `POST /api/files/upload` accepts, in MiB.
    #[arg(long = "file-max-mb", env = "FILE_MAX_MB", default_value_t = DEFAULT_FILE_MAX_MB,
          value_parser = clap::value_parser!(u64).range(1..=MAX_FILE_MAX_MB))]
    pub file_max_mb: u64,

    /// File uploads per user per minute; 0 turns the limit off.
    #[arg(
        long = "rate-limit-upload",
        env = "RATE_LIMIT_UPLOAD",
        default_value_t = 30
    )]
    pub rate_limit_upload: u32,

    /// A built single-page front end (a folder with `index.html`, such as a Vite `dist/`)
    /// served at `/` instead of the embedded client.
    #[arg(long = "frontend-dir", env = "FRONTEND_DIR")]
    pub frontend_dir: Option<PathBuf>,
}

impl Default for ServeSettings {
    fn default() -> ServeSettings {
        ServeSettings {
            file_max_mb: DEFAULT_FILE_MAX_MB,
            rate_limit_upload: 30,
            frontend_dir: None,
        }
    }
}

impl ServeSettings {
    /// The file size limit in bytes.
    pub fn file_max_bytes(&self) -> u64 {
        self.file_max_mb * 1024 * 1024
    }

    /// Unset and empty are the same (`FRONTEND_DIR=` in a `.env`).
    pub fn normalize(&mut self) {
        if self
            .frontend_dir
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            self.frontend_dir = None;
        }
    }

    /// A front end folder must exist and hold `index.html`.
    pub fn validate(&self) -> Result<(), String> {
        let Some(dir) = &self.frontend_dir else {
            return Ok(());
        };
        if !dir.is_dir() {
            return Err(format!(
                "FRONTEND_DIR '{}' is not a folder: point it at the built front end (its dist/)",
                dir.display()
            ));
        }
        if !dir.join("index.html").is_file() {
            return Err(format!(
                "FRONTEND_DIR '{}' has no index.html: build the front end (npm run build) and \
                 point FRONTEND_DIR at the folder the build writes",
                dir.display()
            ));
        }
        Ok(())
    }
}
