//! Running the headless-Chromium tests of `tests/browser/`: whether they can run here, and
//! running one script against a started server.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// What the browser test needs, or why it cannot run here.
pub fn browser_prerequisites(root: &std::path::Path) -> Result<(), String> {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|output| output.status.success()) {
        return Err("node is not installed".to_owned());
    }
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Err(format!("{chromium} is missing (apt-get install chromium)"));
    }
    if !root
        .join("tests/browser/node_modules/playwright-core/package.json")
        .exists()
    {
        return Err("playwright-core is missing (cd tests/browser && npm ci)".to_owned());
    }
    Ok(())
}

/// Whether the browser tests can run here: `false` (with the reason printed) when node, Chromium
/// or playwright-core are missing outside CI; with `CI=true` a missing piece fails the test.
pub fn browser_available(test: &str) -> bool {
    use std::io::Write as _;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let Err(reason) = browser_prerequisites(root) else {
        return true;
    };
    let in_ci = std::env::var("CI").is_ok_and(|value| value == "true" || value == "1");
    assert!(!in_ci, "CI must run the browser test, but {reason}");
    // Straight to the process's stderr, past the test harness's capture, so it is seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipping the {test} browser test: {reason}"
    );
    false
}

/// Runs `node tests/browser/<script> <args...>` (with `envs` set) from the crate root within
/// `limit`, and returns its report; fails the test when the script fails.
pub async fn run_browser_script(
    script: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    limit: Duration,
) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = Instant::now();
    let run = tokio::process::Command::new("node")
        .arg(format!("tests/browser/{script}"))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("{script} finishes within {limit:?}"))
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{script} failed:\n{report}");
    format!(
        "{report}{script} took {:.1} s",
        started.elapsed().as_secs_f64()
    )
}

/// `target/screenshots/`, created.
pub fn screenshot_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
