//! What file attachments and `lastSeen` cost, on a real server (sled in a temporary directory):
//! - a `FILE_MAX_MB` (25 MiB) upload, streamed to disk, hashed and synced before the answer,
//!   and its download, each the median of `--rounds`;
//! - the sidebar with `--users` other users, first (every row's sessions read for `lastSeen`)
//!   and again (the per-user memo answers).
//!
//! Prints one JSON object. `cargo run --release --example files_bench -- --users 1000`

use std::time::{Duration, Instant};

use serde_json::json;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == name)
        .and_then(|at| args.get(at + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

async fn signup(http: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<()> {
    let response = http
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({
            "fullName": format!("User {n}"),
            "email": format!("user{n}@example.com"),
            "password": "secret123",
        }))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 201, "signup: {}", response.status());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let users = arg("--users", 1000);
    let rounds = arg("--rounds", 5);
    let dir = tempfile::tempdir()?;
    let server = courier::testing::TestServer::builder()
        .data_dir(dir.path())
        .start()
        .await?;
    let base = server.url().to_owned();
    let http = reqwest::Client::builder().cookie_store(true).build()?;
    signup(&http, &base, 0).await?;

    let size = 25 * 1024 * 1024;
    let mut uploads = Vec::new();
    let mut downloads = Vec::new();
    for round in 0..rounds {
        // Different bytes each round, so each is a new file.
        let bytes: Vec<u8> = (0..size)
            .map(|i: usize| (i.wrapping_mul(31) ^ round) as u8)
            .collect();
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("big.bin"),
        );
        let started = Instant::now();
        let response = http
            .post(format!("{base}/api/files/upload"))
            .header("origin", &base)
            .multipart(form)
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "upload: {}", response.status());
        let body: serde_json::Value = response.json().await?;
        uploads.push(started.elapsed());
        let url = body["file"]["url"].as_str().unwrap_or_default().to_owned();
        let started = Instant::now();
        let bytes = http
            .get(format!("{base}{url}"))
            .send()
            .await?
            .bytes()
            .await?;
        downloads.push(started.elapsed());
        anyhow::ensure!(bytes.len() == size, "download size");
    }

    for n in 1..=users {
        // Each on its own client: the cookie jar keeps the first user signed in.
        signup(&reqwest::Client::new(), &base, n).await?;
    }
    let sidebar = || async {
        let started = Instant::now();
        let response = http
            .get(format!("{base}/api/messages/users"))
            .send()
            .await?;
        let rows: Vec<serde_json::Value> = response.json().await?;
        anyhow::ensure!(rows.len() == users, "sidebar rows");
        anyhow::ensure!(
            rows.iter().all(|row| row["lastSeen"].is_string()),
            "lastSeen"
        );
        Ok::<Duration, anyhow::Error>(started.elapsed())
    };
    let first = sidebar().await?;
    let mut again = Vec::new();
    for _ in 0..rounds {
        again.push(sidebar().await?);
    }
    server.stop().await?;

    let mib = size as f64 / (1024.0 * 1024.0);
    let upload_ms = median(uploads);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "fileMiB": mib,
            "uploadMedianMs": upload_ms,
            "uploadMiBPerSecond": mib / (upload_ms / 1000.0),
            "downloadMedianMs": median(downloads),
            "sidebarUsers": users,
            "sidebarFirstMs": first.as_secs_f64() * 1000.0,
            "sidebarAgainMedianMs": median(again),
        }))?
    );
    Ok(())
}
