//! The data directory: created if missing, proven writable, and private to the user running
//! Courier. It holds the secrets, the database, uploads and outgoing e-mail, so no other local
//! user may read it: new files are created `0600` and directories `0700` (the process umask),
//! and a directory left readable by an older version is tightened once, at start-up.
//!
//! Knows nothing of what is stored inside.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// Creates `dir` if missing, makes it (and, the first time, everything in it) private, and
/// proves it is writable by writing, syncing and removing a probe file. The error reads as one
/// line with `{:#}`.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    private_by_default();
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    make_private(dir)?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let written = fs::File::create(&probe)
        .and_then(|mut file| file.write_all(b"courier").and_then(|()| file.sync_all()));
    let removed = fs::remove_file(&probe);
    written.with_context(|| format!("data directory {} is not writable", dir.display()))?;
    removed
        .with_context(|| format!("cannot remove {} from the data directory", probe.display()))?;
    Ok(())
}

/// Every file and directory the process creates from now on is its user's only. A umask is the
/// one place that covers files made by libraries too (sled's, the write-ahead logs).
fn private_by_default() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Tightens `dir` to `0700`; when it was open to others, also everything under it (files
/// `0600`, directories `0700`), so data written by an older version stops being readable.
#[cfg(unix)]
fn make_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(dir)
        .with_context(|| format!("cannot read data directory {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let count = tighten_tree(dir)
        .with_context(|| format!("cannot make data directory {} private", dir.display()))?;
    tracing::warn!(
        path = %dir.display(),
        entries = count,
        "the data directory was readable by other users; it and everything in it are now private"
    );
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_dir: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// Sets `0700` on `dir` and its subdirectories and `0600` on its files; returns how many
/// entries it changed. Symbolic links are left alone (their target is not ours to change).
#[cfg(unix)]
fn tighten_tree(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut changed = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        fs::set_permissions(&next, fs::Permissions::from_mode(0o700))?;
        changed += 1;
        for entry in fs::read_dir(&next)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let mode = entry.metadata()?.permissions().mode();
                if mode & 0o077 != 0 {
                    fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))?;
                    changed += 1;
                }
            }
        }
    }
    Ok(changed)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_readable_directory_and_its_contents_become_private() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("data");
        fs::create_dir_all(dir.join("uploads")).unwrap();
        fs::write(dir.join("secrets"), b"x").unwrap();
        fs::write(dir.join("uploads").join("a"), b"x").unwrap();
        for (path, mode) in [
            (dir.clone(), 0o755),
            (dir.join("uploads"), 0o755),
            (dir.join("secrets"), 0o644),
            (dir.join("uploads").join("a"), 0o644),
        ] {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("uploads")), 0o700);
        assert_eq!(mode(&dir.join("secrets")), 0o600);
        assert_eq!(mode(&dir.join("uploads").join("a")), 0o600);
        let created = dir.join("later");
        fs::write(&created, b"x").unwrap();
        assert_eq!(mode(&created), 0o600, "new files are private too");
    }
}
