//! A full disk, for real: the server binary runs on a small tmpfs that a filler file fills up.
//! Sends must be refused with a clear 503 (never a bare 500, never a hang); once there is room
//! again, the server either goes on by itself or stops with a clear error (sled refuses every
//! write after its first I/O error); after a restart every send that was acknowledged is there.
//!
//! Mounting needs root: elsewhere the test says so and passes, except under CI, where it must run.
#![cfg(target_os = "linux")]

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|err| format!("cannot run mount: {err}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The server binary on `data_dir`, and the base URL it listens on.
fn start_server(data_dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
        .env_clear()
        .env("PORT", "0")
        .env("BIND_ADDR", "127.0.0.1")
        .env("DATA_DIR", data_dir)
        .env("RATE_LIMIT_AUTH", "0")
        .env("RATE_LIMIT_SEND", "0")
        .env("ARGON2_MEMORY_KIB", "8")
        .env("ARGON2_ITERATIONS", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let base = loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the server stopped before listening"
        );
        if let Some(at) = line.find("courier listening on ") {
            let url = line[at + "courier listening on ".len()..].trim();
            break url.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stdout.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    (child, base)
}

struct User {
    http: reqwest::Client,
    id: String,
}

/// Signs `name` up (`signup`) or in (`login`) with a fresh cookie jar; the client and the user.
async fn authenticate(base: &str, route: &str, name: &str, expected: u16) -> User {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let response = http
        .post(format!("{base}/api/auth/{route}"))
        .json(&json!({
            "fullName": name,
            "email": format!("{}@example.com", name.to_lowercase()),
            "password": "correct horse battery",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), expected);
    let body: Value = response.json().await.unwrap();
    User {
        http,
        id: body["_id"].as_str().unwrap().to_owned(),
    }
}

/// Sends one message; `Ok(id)` when acknowledged, else the status and body (or the error).
async fn send(from: &User, to: &str, base: &str, n: usize) -> Result<String, String> {
    let response = from
        .http
        .post(format!("{base}/api/messages/send/{to}"))
        .json(&json!({ "text": format!("{n:05} {}", "x".repeat(2_000)), "clientMessageId": format!("m{n}") }))
        .send()
        .await
        .map_err(|err| format!("request failed: {err}"))?;
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").cloned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == 202 {
        return Ok(body["messageId"].as_str().unwrap().to_owned());
    }
    Err(format!("{status} retry-after={retry_after:?} {body}"))
}

/// Every message id of the conversation with `other`, oldest first.
async fn history(http: &reqwest::Client, base: &str, other: &str) -> Vec<String> {
    let mut stored = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut url = format!("{base}/api/messages/{other}?limit=200");
        if let Some(seq) = before {
            url.push_str(&format!("&before={seq}"));
        }
        let page: Vec<Value> = http.get(url).send().await.unwrap().json().await.unwrap();
        let Some(oldest) = page.first() else {
            break;
        };
        before = Some(oldest["seq"].as_u64().unwrap());
        let ids = page.iter().map(|m| m["_id"].as_str().unwrap().to_owned());
        stored.splice(0..0, ids);
    }
    stored
}

/// The child's exit status, if it exits within `wait`.
fn wait_for_exit(child: &mut Child, wait: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_bytes(dir: &Path) -> u64 {
    fs4::available_space(dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_clearly_and_loses_nothing_acknowledged() {
    let mount_point = tempfile::tempdir().unwrap();
    let _tmpfs = match Tmpfs::mount(mount_point.path(), "32m") {
        Ok(tmpfs) => tmpfs,
        Err(reason) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: cannot mount a tmpfs to fill ({reason}); run as root to test this");
            return;
        }
        Err(reason) => panic!("CI must run this test, but mounting a tmpfs failed: {reason}"),
    };
    let data_dir = mount_point.path().join("data");
    let (mut server, base) = start_server(&data_dir);
    let alice = authenticate(&base, "signup", "Alice", 201).await;
    let bob = authenticate(&base, "signup", "Bob", 201).await;

    // Leave about 1 MB: a few hundred messages' worth of log and database.
    let filler = mount_point.path().join("filler");
    let room = free_bytes(mount_point.path()).saturating_sub(1 << 20);
    let status = Command::new("fallocate")
        .args(["-l", &room.to_string()])
        .arg(&filler)
        .status()
        .unwrap();
    assert!(status.success());

    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for n in 0..20_000 {
        match send(&alice, &bob.id, &base, n).await {
            Ok(id) => acknowledged.push(id),
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    let refusal = refusal.expect("the disk never filled up");
    assert!(!acknowledged.is_empty());
    // sled may fail first, and for good (it refuses every write after its first I/O error):
    // then the server must have stopped by itself, with a clear error.
    let stopped_at_once = wait_for_exit(&mut server, Duration::from_millis(500));
    if stopped_at_once.is_none() {
        assert!(
            refusal.starts_with("503 retry-after=Some(\"5\")")
                && refusal.contains("storage is unavailable"),
            "a full disk is a clear 503: {refusal}"
        );
    }

    // Room again: the log repairs itself, and the server goes on, or stops as above.
    std::fs::remove_file(&filler).unwrap();
    if stopped_at_once.is_none() {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut n = 100_000;
        loop {
            if server.try_wait().unwrap().is_some() {
                break;
            }
            if let Ok(id) = send(&alice, &bob.id, &base, n).await {
                println!("the server recovered by itself");
                acknowledged.push(id);
                let _ = Command::new("kill")
                    .args(["-TERM", &server.id().to_string()])
                    .status();
                break;
            }
            n += 1;
            assert!(Instant::now() < deadline, "neither recovered nor stopped");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let status = server.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(server.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    println!("the server ended: {status}: {stderr}");
    if status.code() != Some(0) {
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("storage failed") && stderr.contains("restart"),
            "{stderr}"
        );
    }

    // A restart replays the log and runs the jobs left: every acknowledged send ends up in the
    // history, once.
    let (mut server, base) = start_server(&data_dir);
    let bob = authenticate(&base, "login", "Bob", 200).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = history(&bob.http, &base, &alice.id).await;
        let stored_set: HashSet<&String> = stored.iter().collect();
        assert_eq!(stored_set.len(), stored.len(), "a message stored twice");
        let missing: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !stored_set.contains(id))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged messages lost: {missing:?}",
            missing.len(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    server.wait().unwrap();
}
