//! A short run of the load generator (`examples/loadgen.rs`) against the real server: every
//! acknowledged message reaches every socket of its receiver and of its sender exactly once.
//!
//! Timing is not asserted (it depends on the machine); `BENCHMARKS.md` has the figures.

mod common;

// The same core the command line runs; this test drives its chat run only.
#[allow(dead_code)]
#[path = "../examples/loadgen/lib.rs"]
mod loadgen;

use std::time::Duration;

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_load_run_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::TestServer::start(dir.path()).await;
    let target = loadgen::Target::parse(&server.base).unwrap();
    let options = loadgen::ChatOptions {
        users: 8,
        // Two tabs each: both must get every message of their user.
        sockets_per_user: 2,
        rate: 100.0,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        grace: Duration::from_secs(20),
        ..loadgen::ChatOptions::default()
    };

    let report = loadgen::run_chat(&target, &options).await.unwrap();

    let messages = &report["messages"];
    assert_eq!(messages["scheduled"], 250, "{report}");
    assert_eq!(messages["acknowledged"], 250, "{report}");
    assert_eq!(report["errors"], json!({}), "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicated"], 0, "{report}");
    assert_eq!(report["out_of_order"], 0, "{report}");
    assert_eq!(report["echo_missing"], 0, "{report}");
    assert_eq!(report["misdelivered"], 0, "{report}");
    assert_eq!(report["unmatched"], 0, "{report}");
    // Every measured message has a delivery time, and the report has the documented keys.
    assert_eq!(
        report["delivery_ms"]["count"], messages["measured"],
        "{report}"
    );
    for key in ["offered_rate", "achieved_rate", "send_ms", "server_rss_mb"] {
        assert!(report.get(key).is_some(), "missing {key}: {report}");
    }
    server.stop().await;
}

#[test]
fn the_load_generator_only_targets_loopback() {
    for url in [
        "http://127.0.0.1:5000",
        "http://localhost:5000",
        "http://[::1]:5000",
    ] {
        assert!(loadgen::Target::parse(url).is_ok(), "{url}");
    }
    for url in [
        "http://10.0.0.1:5000",
        "http://example.com",
        "https://127.0.0.1:5000",
        "not a url",
    ] {
        assert!(loadgen::Target::parse(url).is_err(), "{url}");
    }
}

/// The group run (`--mode group`): every acknowledged post reaches every member's socket once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_group_run_reaches_every_member_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::TestServer::start(dir.path()).await;
    let target = loadgen::Target::parse(&server.base).unwrap();
    let options = loadgen::group::GroupOptions {
        members: 20,
        rate: 50.0,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        grace: Duration::from_secs(20),
        ..loadgen::group::GroupOptions::default()
    };

    let report = loadgen::group::run_group(&target, &options).await.unwrap();

    let messages = &report["messages"];
    assert_eq!(messages["scheduled"], 60, "{report}");
    assert_eq!(messages["acknowledged"], 60, "{report}");
    assert_eq!(report["errors"], json!({}), "{report}");
    for key in [
        "lost_messages",
        "missing_deliveries",
        "duplicated",
        "unmatched",
        "sockets_ended_early",
    ] {
        assert_eq!(report[key], 0, "{key}: {report}");
    }
    assert_eq!(
        report["post_to_last_member_ms"]["count"], messages["measured"],
        "{report}"
    );
    server.stop().await;
}
