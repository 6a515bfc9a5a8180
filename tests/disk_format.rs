//! Data written by an earlier release keeps opening: a data dir written with the current disk
//! format is checked in under `tests/fixtures/disk-v1/` (each file gzipped), and this test opens
//! a copy of it and reads every record back.
//!
//! The fixture was made by the ignored test [`write_fixture`]:
//!
//! ```text
//! COURIER_FIXTURE_OUT=/tmp/disk-v1 cargo test --test disk_format -- --ignored write_fixture
//! cd /tmp/disk-v1 && find . -type f -exec gzip -9 {} \; && cp -r . tests/fixtures/disk-v1/
//! ```
//!
//! It writes half of the records, closes the store (so they are checkpointed into sled's files),
//! opens it again, writes the rest and ends the process without closing the store, so the
//! write-ahead log still holds entries that were acknowledged but not checkpointed into sled:
//! opening the fixture replays them.
//!
//! Never regenerate the fixture to make this test pass: a failure means data written by the
//! release that made it no longer opens. Add a new fixture for a new format next to the old one.

use std::fs;
use std::io::Read;
use std::path::Path;

use courier::store::accounts::SessionRecord;
use courier::store::chat::{
    ChangeOutcome, CreateUser, HistoryPage, MessageChange, NewMessage, UserRecord,
};
use courier::store::job::{
    Complete, Fail, FailOutcome, JobOptions, JobState, KeepJobs, NewJob, TakeRequest,
};
use courier::store::search::{query_words, SearchQuery};
use courier::store::{open, StoreConfig, Stores};

const LEASE: TakeRequest = TakeRequest {
    lease_ms: 30_000,
    limit: None,
    groups: courier::store::job::GroupLimits::NONE,
};

const QUEUE: &str = "mail";
const T0: u64 = 1_700_000_000_000;

fn user(id: &str, name: &str) -> UserRecord {
    UserRecord {
        id: id.to_owned(),
        full_name: name.to_owned(),
        email: format!("{id}@example.com"),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${id}"),
        profile_pic: format!("https://img.example.com/{id}.png"),
        created_at: T0,
        updated_at: T0 + 1,
    }
}

fn session() -> SessionRecord {
    SessionRecord {
        user_id: "ada".to_owned(),
        created_at: T0,
        expires_at: T0 + 30 * 86_400_000,
        last_seen_at: T0 + 5,
        user_agent: "fixture-agent/1.0".to_owned(),
        address: "203.0.113.7".to_owned(),
    }
}

fn job(id: &str, delay_ms: u64) -> NewJob {
    NewJob {
        name: format!("send-{id}"),
        data: format!(r#"{{"job":"{id}"}}"#),
        opts: JobOptions {
            job_id: Some(id.to_owned()),
            delay_ms,
            ..JobOptions::default()
        },
    }
}

fn message(id: &str, from: &str, to: &str, at: u64) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        sender_id: from.to_owned(),
        receiver_id: to.to_owned(),
        text: format!("text of {id}"),
        image: String::new(),
        created_at: at,
        ..NewMessage::default()
    }
}

/// Writes the fixture's content into `COURIER_FIXTURE_OUT` and ends the process without closing
/// the store (see the module comment).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "generator of tests/fixtures/disk-v1; run by hand"]
async fn write_fixture() {
    let dir = std::env::var("COURIER_FIXTURE_OUT").expect("set COURIER_FIXTURE_OUT");
    let stores = open(&StoreConfig::sled(&dir)).unwrap();
    for (id, name) in [
        ("ada", "Ada Lovelace"),
        ("bob", "Bob Babbage"),
        ("cy", "Cy Young"),
    ] {
        assert_eq!(
            stores.chat.create_user(user(id, name)).await.unwrap(),
            CreateUser::Created
        );
    }
    // Jobs taken first so `take` finds only them: one completes, one fails for good.
    stores
        .jobs
        .add(QUEUE, vec![job("done", 0)], T0)
        .await
        .unwrap();
    let taken = stores
        .jobs
        .take(QUEUE, LEASE, T0 + 1)
        .await
        .unwrap()
        .job()
        .unwrap();
    assert!(stores
        .jobs
        .complete(
            QUEUE,
            Complete {
                id: taken.id.clone(),
                token: taken.token,
                return_value: r#"{"sent":true}"#.to_owned(),
                keep: KeepJobs::ALL,
            },
            T0 + 2
        )
        .await
        .unwrap());
    stores
        .jobs
        .add(QUEUE, vec![job("broken", 0)], T0 + 3)
        .await
        .unwrap();
    let taken = stores
        .jobs
        .take(QUEUE, LEASE, T0 + 4)
        .await
        .unwrap()
        .job()
        .unwrap();
    let outcome = stores
        .jobs
        .fail(
            QUEUE,
            Fail {
                id: taken.id.clone(),
                token: taken.token,
                reason: "mailbox full".to_owned(),
                stack: "at send".to_owned(),
                retry_at: None,
                keep: KeepJobs::ALL,
            },
            T0 + 5,
        )
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::Failed);
    assert!(stores
        .jobs
        .log(QUEUE, "broken", "tried once".to_owned())
        .await
        .unwrap());
    // Closed and opened again: what is above is checkpointed into sled's own files.
    stores.jobs.flush().await.unwrap();
    drop(stores);
    let stores = open(&StoreConfig::sled(&dir)).unwrap();
    // Written after the reopen: these are only in the write-ahead log when the process ends.
    stores
        .jobs
        .add(
            QUEUE,
            vec![job("later", 0), job("sleepy", 3_600_000)],
            T0 + 6,
        )
        .await
        .unwrap();
    stores
        .chat
        .save_message(message("m1", "ada", "bob", T0 + 10))
        .await
        .unwrap();
    stores
        .chat
        .save_message(message("m2", "bob", "ada", T0 + 11))
        .await
        .unwrap();
    stores
        .chat
        .save_message(message("m3", "ada", "bob", T0 + 12))
        .await
        .unwrap();
    assert_eq!(stores.chat.mark_read("bob", "ada", 2).await.unwrap(), 2);
    stores
        .chat
        .put_session("s-ada", session(), T0 + 13)
        .await
        .unwrap();
    std::process::exit(0);
}

/// Unpacks `tests/fixtures/disk-v1` (every file gzipped) into `to`.
fn unpack(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_dir() {
            fs::create_dir_all(to.join(&name)).unwrap();
            unpack(&path, &to.join(&name));
        } else if let Some(plain) = name.strip_suffix(".gz") {
            let mut bytes = Vec::new();
            flate2::read::GzDecoder::new(fs::File::open(&path).unwrap())
                .read_to_end(&mut bytes)
                .unwrap();
            fs::write(to.join(plain), bytes).unwrap();
        }
    }
}

fn open_at(dir: &Path) -> Stores {
    open(&StoreConfig::sled(dir)).unwrap()
}

async fn check_fixture(stores: &Stores) {
    for (id, name) in [
        ("ada", "Ada Lovelace"),
        ("bob", "Bob Babbage"),
        ("cy", "Cy Young"),
    ] {
        assert_eq!(
            stores.chat.user_by_id(id).await.unwrap(),
            Some(user(id, name))
        );
        assert_eq!(
            stores
                .chat
                .user_by_email(&format!("{id}@example.com"))
                .await
                .unwrap(),
            Some(user(id, name))
        );
    }
    let history = stores
        .chat
        .history("ada", "bob", HistoryPage::After { seq: 0, limit: 3 })
        .await
        .unwrap();
    let seen: Vec<_> = history
        .iter()
        .map(|m| {
            (
                m.id.as_str(),
                m.sender_id.as_str(),
                m.text.as_str(),
                m.seq,
                m.created_at,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("m1", "ada", "text of m1", 1, T0 + 10),
            ("m2", "bob", "text of m2", 2, T0 + 11),
            ("m3", "ada", "text of m3", 3, T0 + 12),
        ]
    );
    assert_eq!(stores.chat.message("m2").await.unwrap().unwrap().seq, 2);
    // The read mark stays where it was: marking lower does not move it back.
    assert_eq!(stores.chat.mark_read("bob", "ada", 1).await.unwrap(), 2);
    assert_eq!(stores.chat.session("s-ada").await.unwrap(), Some(session()));

    let state = |id: &'static str| async move {
        let job = stores.jobs.get(QUEUE, id).await.unwrap().unwrap();
        assert_eq!(job.spec.name, format!("send-{id}"));
        assert_eq!(job.spec.data, format!(r#"{{"job":"{id}"}}"#));
        job
    };
    let done = state("done").await;
    assert_eq!(done.status.state, JobState::Completed);
    assert_eq!(
        done.status.return_value.as_deref(),
        Some(r#"{"sent":true}"#)
    );
    let broken = state("broken").await;
    assert_eq!(broken.status.state, JobState::Failed);
    assert_eq!(broken.status.failed_reason.as_deref(), Some("mailbox full"));
    assert_eq!(
        stores.jobs.logs(QUEUE, "broken").await.unwrap(),
        ["tried once"]
    );
    assert_eq!(state("later").await.status.state, JobState::Waiting);
    let sleepy = state("sleepy").await;
    assert_eq!(sleepy.status.state, JobState::Delayed);
    assert_eq!(sleepy.status.ready_at, T0 + 6 + 3_600_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_written_by_the_first_format_opens_and_keeps_working() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/disk-v1");
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("db");
    fs::create_dir_all(&dir).unwrap();
    unpack(&fixture, &dir);

    let stores = open_at(&dir);
    check_fixture(&stores).await;
    // The store keeps working on old data.
    stores
        .jobs
        .add(QUEUE, vec![job("new", 0)], T0 + 20)
        .await
        .unwrap();
    stores
        .chat
        .save_message(message("m4", "bob", "ada", T0 + 21))
        .await
        .unwrap();
    drop(stores);

    let stores = open_at(&dir);
    check_fixture(&stores).await;
    assert_eq!(
        stores
            .jobs
            .get(QUEUE, "new")
            .await
            .unwrap()
            .unwrap()
            .status
            .state,
        JobState::Waiting
    );
    assert_eq!(stores.chat.message("m4").await.unwrap().unwrap().seq, 4);

    // A format-1 message can be edited and reacted to; the change index starts on old data.
    let old = stores.chat.message("m1").await.unwrap().unwrap();
    assert_eq!((old.change, old.edit_history.len()), (0, 0));
    let edit = MessageChange::Edit {
        by: "ada".to_owned(),
        text: "edited".to_owned(),
        window_ms: u64::MAX,
    };
    let ChangeOutcome::Changed {
        message: edited, ..
    } = stores
        .chat
        .change_message("m1", edit, T0 + 30)
        .await
        .unwrap()
    else {
        panic!("m1 was not edited");
    };
    assert_eq!(edited.edit_history[0].text, "text of m1");
    drop(stores);
    let stores = open_at(&dir);
    assert_eq!(stores.chat.message("m1").await.unwrap().unwrap(), edited);
    let changed = stores
        .chat
        .history(
            "ada",
            "bob",
            HistoryPage::ChangedAfter {
                change: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = changed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m4", "m1"]);
    // Messages from before the search index are indexed at the first open.
    let search = |text: &str| SearchQuery {
        words: query_words(text),
        conversations: vec!["ada:bob".to_owned()],
        limit: 10,
        ..SearchQuery::default()
    };
    let hits = stores.chat.search_messages(&search("text")).await.unwrap();
    let ids: Vec<&str> = hits.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!((ids, hits.total), (vec!["m4", "m3", "m2"], 3));
    let hits = stores.chat.search_messages(&search("edit")).await.unwrap();
    assert_eq!(hits.messages, std::slice::from_ref(&edited));
    let all = stores
        .chat
        .history("ada", "bob", HistoryPage::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        4,
        "format-1 and format-2 messages read side by side"
    );
}
