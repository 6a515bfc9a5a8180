//! The [`ChatStore`] contract, checked on every backend (in memory, and sled on a real database
//! in a temp dir): unique e-mails, idempotent saves, gap-free sequences under concurrency,
//! history pages, read marks, unread counts, conversation summaries, e-mail claims, profile
//! updates, and (sled only) everything again after a reopen. A model-based property test at the
//! end drives random saves, read marks, claims and reopens against a small in-memory model of the
//! contract, on each backend.
//!
//! Each test is written once, as `async fn name(backend: Backend)`; `on_every_backend!` (in
//! `chat_backends/mod.rs`) runs it as `memory::name` and `sled::name`.

#[macro_use]
mod chat_backends;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::Barrier;

use chat_backends::{open_sled, Backend};
use courier::queue::model::{JobOptions, Millis, NewJob};
use courier::store::chat::{
    ChatStore, ConversationSummary, CreateUser, HistoryPage, MessageRecord, NewMessage, UserRecord,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const START: Millis = 1_700_000_000_000;

on_every_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    an_email_is_created_once_even_by_concurrent_signups;
    #[tokio::test]
    users_are_found_by_id_and_email_and_listed_oldest_first;
    #[tokio::test]
    a_profile_picture_update_is_stored_and_returned;
    #[tokio::test]
    ids_that_cannot_be_part_of_a_key_are_refused;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    saving_a_message_id_twice_stores_it_once;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    concurrent_saves_get_every_seq_once_in_each_conversation;
    #[tokio::test]
    history_pages_are_oldest_first_and_cover_both_directions_only;
    #[tokio::test]
    read_marks_never_move_back_and_stop_at_the_last_message;
    #[tokio::test]
    conversations_list_the_last_message_and_unread_count;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    an_email_slot_is_claimed_once_per_window;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    concurrent_read_marks_keep_the_highest;
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn user(id: &str, email: &str, created_at: Millis) -> UserRecord {
    UserRecord {
        id: id.to_owned(),
        full_name: format!("User {id}"),
        email: email.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        profile_pic: String::new(),
        created_at,
        updated_at: created_at,
    }
}

fn message(id: &str, from: &str, to: &str, created_at: Millis) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        sender_id: from.to_owned(),
        receiver_id: to.to_owned(),
        text: format!("text of {id}"),
        image: String::new(),
        created_at,
        ..NewMessage::default()
    }
}

/// Saves `id` from `from` to `to` and checks it was new.
async fn send(store: &dyn ChatStore, id: &str, from: &str, to: &str, at: Millis) -> MessageRecord {
    let (record, created) = store
        .save_message(message(id, from, to, at))
        .await
        .expect("save the message");
    assert!(created, "message {id} was new");
    record
}

fn seqs(messages: &[MessageRecord]) -> Vec<u64> {
    messages.iter().map(|message| message.seq).collect()
}

async fn history(store: &dyn ChatStore, a: &str, b: &str, page: HistoryPage) -> Vec<MessageRecord> {
    store.history(a, b, page).await.expect("read the history")
}

const ALL: HistoryPage = HistoryPage::Latest { limit: usize::MAX };

// ---------------------------------------------------------------------------------------------
// Users

/// Rounds of each race: a commit can finish before the last racer starts, so one round may not
/// race at all.
const ROUNDS: u64 = 20;
const RACERS: u64 = 16;

async fn an_email_is_created_once_even_by_concurrent_signups(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    for round in 0..ROUNDS {
        let email = format!("same{round}@example.com");
        let start = Arc::new(Barrier::new(RACERS as usize));
        let mut tasks = Vec::new();
        for n in 0..RACERS {
            let (store, start, email) = (store.clone(), start.clone(), email.clone());
            tasks.push(tokio::spawn(async move {
                let id = format!("user{round}x{n}");
                start.wait().await;
                let outcome = store
                    .create_user(user(&id, &email, START + n))
                    .await
                    .unwrap();
                (id, outcome)
            }));
        }
        let mut created = Vec::new();
        for task in tasks {
            let (id, outcome) = task.await.unwrap();
            if outcome == CreateUser::Created {
                created.push(id);
            }
        }
        assert_eq!(created.len(), 1, "exactly one signup wins: {created:?}");
        let winner = store.user_by_email(&email).await.unwrap().unwrap();
        assert_eq!(winner.id, created[0]);
    }
    assert_eq!(store.users().await.unwrap().len(), ROUNDS as usize);

    // A later signup with the same e-mail is refused; another e-mail is fine.
    assert_eq!(
        store
            .create_user(user("late", "same0@example.com", START))
            .await
            .unwrap(),
        CreateUser::EmailTaken
    );
    assert_eq!(
        store
            .create_user(user("other", "other@example.com", START))
            .await
            .unwrap(),
        CreateUser::Created
    );
}

async fn users_are_found_by_id_and_email_and_listed_oldest_first(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    for (id, email, at) in [
        ("c", "c@x.io", START + 5),
        ("a", "a@x.io", START + 9),
        ("b", "b@x.io", START + 1),
    ] {
        assert_eq!(
            store.create_user(user(id, email, at)).await.unwrap(),
            CreateUser::Created
        );
    }
    let ids: Vec<String> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids, ["b", "c", "a"]);
    assert_eq!(
        store.user_by_id("a").await.unwrap(),
        Some(user("a", "a@x.io", START + 9))
    );
    assert_eq!(
        store.user_by_email("b@x.io").await.unwrap().map(|u| u.id),
        Some("b".to_owned())
    );
    assert_eq!(store.user_by_id("nobody").await.unwrap(), None);
    assert_eq!(store.user_by_email("nobody@x.io").await.unwrap(), None);
}

async fn a_profile_picture_update_is_stored_and_returned(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    store.create_user(user("a", "a@x.io", START)).await.unwrap();
    let updated = store
        .set_profile_pic("a", "/uploads/abc".to_owned(), START + 10)
        .await
        .unwrap()
        .expect("the user exists");
    assert_eq!(updated.profile_pic, "/uploads/abc");
    assert_eq!(updated.updated_at, START + 10);
    assert_eq!(updated.created_at, START);
    assert_eq!(store.user_by_id("a").await.unwrap(), Some(updated.clone()));
    assert_eq!(store.user_by_email("a@x.io").await.unwrap(), Some(updated));
    assert_eq!(
        store
            .set_profile_pic("nobody", "/x".to_owned(), START)
            .await
            .unwrap(),
        None
    );
}

async fn ids_that_cannot_be_part_of_a_key_are_refused(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    assert!(store
        .create_user(user("a:b", "ab@x.io", START))
        .await
        .is_err());
    assert!(store
        .save_message(message("m1", "a:b", "c", START))
        .await
        .is_err());
    assert!(store.mark_read("a\0", "c", 1).await.is_err());
    assert!(store.history("a:b", "c", ALL).await.unwrap().is_empty());
    assert!(store.conversations("a:b").await.unwrap().is_empty());
    assert_eq!(store.message_count().await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// Messages

async fn saving_a_message_id_twice_stores_it_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    let first = send(&*store, "m1", "a", "b", START).await;
    assert_eq!(first.seq, 1);
    assert_eq!(first.updated_at, first.created_at);
    // A retry (even with other content) returns the stored message.
    let mut retry = message("m1", "a", "b", START + 50);
    retry.text = "changed".to_owned();
    assert_eq!(
        store.save_message(retry).await.unwrap(),
        (first.clone(), false)
    );

    // Many tasks racing to save the same new id: one stores it, all see the same record.
    for round in 0..ROUNDS {
        let id = format!("race{round}");
        let start = Arc::new(Barrier::new(RACERS as usize));
        let mut tasks = Vec::new();
        for _ in 0..RACERS {
            let (store, start, id) = (store.clone(), start.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                store
                    .save_message(message(&id, "b", "a", START + 1))
                    .await
                    .unwrap()
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        assert_eq!(outcomes.iter().filter(|(_, created)| *created).count(), 1);
        let expected_seq = round + 2;
        assert!(outcomes
            .iter()
            .all(|(record, _)| record.seq == expected_seq && record.id == id));
        assert_eq!(
            store.message(&id).await.unwrap(),
            Some(outcomes[0].0.clone())
        );
    }
    assert_eq!(
        seqs(&history(&*store, "a", "b", ALL).await),
        (1..=ROUNDS + 1).collect::<Vec<_>>()
    );
    assert_eq!(store.message_count().await.unwrap(), ROUNDS + 1);
    assert_eq!(store.message("missing").await.unwrap(), None);
}

async fn concurrent_saves_get_every_seq_once_in_each_conversation(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    const TASKS: usize = 8;
    const EACH: usize = 40;
    let start = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut records = Vec::new();
            for n in 0..EACH {
                // Both directions of a↔b, and a second conversation a↔c on the side.
                let (from, to) = match (task + n) % 3 {
                    0 => ("a", "b"),
                    1 => ("b", "a"),
                    _ => ("c", "a"),
                };
                let id = format!("t{task}n{n}");
                records.push(send(&*store, &id, from, to, START + n as u64).await);
            }
            records
        }));
    }
    let mut by_conversation: HashMap<bool, Vec<u64>> = HashMap::new();
    for task in tasks {
        for record in task.await.unwrap() {
            let with_c = record.sender_id == "c" || record.receiver_id == "c";
            by_conversation.entry(with_c).or_default().push(record.seq);
        }
    }
    for (with_c, mut assigned) in by_conversation {
        let stored = history(&*store, "a", if with_c { "c" } else { "b" }, ALL).await;
        assert_eq!(
            seqs(&stored),
            (1..=assigned.len() as u64).collect::<Vec<_>>()
        );
        assigned.sort_unstable();
        assert_eq!(assigned, seqs(&stored), "returned seqs are the stored ones");
    }
    assert_eq!(store.message_count().await.unwrap(), (TASKS * EACH) as u64);
}

async fn history_pages_are_oldest_first_and_cover_both_directions_only(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    for n in 1..=10u64 {
        let (from, to) = if n % 2 == 0 { ("a", "b") } else { ("b", "a") };
        send(&*store, &format!("ab{n}"), from, to, START + n).await;
        send(&*store, &format!("ac{n}"), "a", "c", START + n).await;
    }
    send(&*store, "bc1", "b", "c", START).await;

    let everything = history(&*store, "a", "b", ALL).await;
    assert_eq!(seqs(&everything), (1..=10).collect::<Vec<_>>());
    assert!(everything.iter().all(|m| m.id.starts_with("ab")));
    assert_eq!(
        everything,
        history(&*store, "b", "a", ALL).await,
        "either order names it"
    );

    let page = |page| history(&*store, "a", "b", page);
    assert_eq!(
        seqs(&page(HistoryPage::Latest { limit: 3 }).await),
        [8, 9, 10]
    );
    assert_eq!(
        seqs(&page(HistoryPage::Latest { limit: 0 }).await),
        [] as [u64; 0]
    );
    assert_eq!(
        seqs(&page(HistoryPage::Before { seq: 5, limit: 2 }).await),
        [3, 4]
    );
    assert_eq!(
        seqs(&page(HistoryPage::Before { seq: 5, limit: 10 }).await),
        [1, 2, 3, 4]
    );
    assert_eq!(
        seqs(&page(HistoryPage::Before { seq: 1, limit: 10 }).await),
        [] as [u64; 0]
    );
    assert_eq!(
        seqs(&page(HistoryPage::Before { seq: 0, limit: 10 }).await),
        [] as [u64; 0]
    );
    assert_eq!(
        seqs(&page(HistoryPage::Before { seq: 99, limit: 2 }).await),
        [9, 10]
    );
    assert_eq!(
        seqs(&page(HistoryPage::After { seq: 7, limit: 2 }).await),
        [8, 9]
    );
    assert_eq!(
        seqs(&page(HistoryPage::After { seq: 0, limit: 3 }).await),
        [1, 2, 3]
    );
    assert_eq!(
        seqs(&page(HistoryPage::After { seq: 10, limit: 5 }).await),
        [] as [u64; 0]
    );
    assert_eq!(
        seqs(
            &page(HistoryPage::After {
                seq: u64::MAX,
                limit: 5
            })
            .await
        ),
        [] as [u64; 0]
    );

    assert_eq!(seqs(&history(&*store, "b", "c", ALL).await), [1]);
    assert!(history(&*store, "a", "nobody", ALL).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Read marks, unread counts, conversations

async fn read_marks_never_move_back_and_stop_at_the_last_message(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    assert_eq!(
        store.mark_read("a", "b", 5).await.unwrap(),
        0,
        "nothing to read yet"
    );
    for n in 1..=6u64 {
        send(&*store, &format!("m{n}"), "b", "a", START + n).await;
    }
    assert_eq!(store.mark_read("a", "b", 3).await.unwrap(), 3);
    assert_eq!(
        store.mark_read("a", "b", 2).await.unwrap(),
        3,
        "never backwards"
    );
    assert_eq!(
        store.mark_read("a", "b", 100).await.unwrap(),
        6,
        "clamped to the last seq"
    );
    assert_eq!(
        store.mark_read("b", "a", 1).await.unwrap(),
        1,
        "each reader has their own"
    );
}

async fn conversations_list_the_last_message_and_unread_count(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    send(&*store, "1", "b", "a", START + 1).await;
    send(&*store, "2", "a", "b", START + 2).await;
    send(&*store, "3", "b", "a", START + 3).await;
    send(&*store, "4", "b", "a", START + 4).await;
    send(&*store, "5", "c", "a", START + 5).await;
    send(&*store, "6", "c", "d", START + 6).await;

    let summary =
        |other: &str, last: &str, unread: u64| (other.to_owned(), last.to_owned(), unread);
    let view = |list: Vec<ConversationSummary>| -> Vec<(String, String, u64)> {
        list.into_iter()
            .map(|s| {
                (
                    s.other_id,
                    s.last_message.map(|m| m.id).unwrap_or_default(),
                    s.unread,
                )
            })
            .collect()
    };
    // Newest conversation first; only the other user's messages are unread.
    assert_eq!(
        view(store.conversations("a").await.unwrap()),
        [summary("c", "5", 1), summary("b", "4", 3)]
    );
    assert_eq!(
        view(store.conversations("b").await.unwrap()),
        [summary("a", "4", 1)]
    );
    assert_eq!(
        view(store.conversations("c").await.unwrap()),
        [summary("d", "6", 0), summary("a", "5", 0)]
    );
    assert!(store.conversations("nobody").await.unwrap().is_empty());

    assert_eq!(store.mark_read("a", "b", 2).await.unwrap(), 2);
    assert_eq!(
        view(store.conversations("a").await.unwrap())[1],
        summary("b", "4", 2)
    );
    assert_eq!(store.mark_read("a", "b", 4).await.unwrap(), 4);
    assert_eq!(
        view(store.conversations("a").await.unwrap())[1],
        summary("b", "4", 0)
    );
    let last = store.conversations("a").await.unwrap()[1]
        .last_message
        .clone();
    assert_eq!(last, store.message("4").await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// E-mail claims

async fn an_email_slot_is_claimed_once_per_window(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    const WINDOW: u64 = 60_000;
    assert!(store
        .claim_email_slot("a", "b", START, WINDOW)
        .await
        .unwrap());
    assert!(!store
        .claim_email_slot("a", "b", START + 1, WINDOW)
        .await
        .unwrap());
    assert!(!store
        .claim_email_slot("a", "b", START + WINDOW - 1, WINDOW)
        .await
        .unwrap());
    // Other conversations and the other direction have their own slots.
    assert!(store
        .claim_email_slot("b", "a", START + 1, WINDOW)
        .await
        .unwrap());
    assert!(store
        .claim_email_slot("a", "c", START + 1, WINDOW)
        .await
        .unwrap());
    assert!(store
        .claim_email_slot("a", "b", START + WINDOW, WINDOW)
        .await
        .unwrap());
    assert!(!store
        .claim_email_slot("a", "b", START + WINDOW + 5, WINDOW)
        .await
        .unwrap());

    // Concurrent claims of one slot: exactly one wins.
    for round in 0..ROUNDS {
        let other = format!("e{round}");
        let start = Arc::new(Barrier::new(RACERS as usize));
        let mut tasks = Vec::new();
        for n in 0..RACERS {
            let (store, start, other) = (store.clone(), start.clone(), other.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                store
                    .claim_email_slot("d", &other, START + n, WINDOW)
                    .await
                    .unwrap()
            }));
        }
        let mut wins = 0;
        for task in tasks {
            wins += u32::from(task.await.unwrap());
        }
        assert_eq!(wins, 1);
    }
}

async fn concurrent_read_marks_keep_the_highest(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    for round in 0..ROUNDS {
        let reader = format!("r{round}");
        for n in 1..=RACERS {
            send(&*store, &format!("r{round}m{n}"), "b", &reader, START + n).await;
        }
        let start = Arc::new(Barrier::new(RACERS as usize));
        let mut tasks = Vec::new();
        for n in 1..=RACERS {
            let (store, start, reader) = (store.clone(), start.clone(), reader.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let stored = store.mark_read(&reader, "b", n).await.unwrap();
                assert!(stored >= n, "a mark never goes below what was asked");
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(store.mark_read(&reader, "b", 0).await.unwrap(), RACERS);
        let summaries = store.conversations(&reader).await.unwrap();
        assert_eq!(summaries[0].unread, 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Reopen

/// Durability is sled's alone: the memory store keeps nothing across a restart, by design.
mod sled_only {
    #[tokio::test]
    async fn everything_survives_a_reopen() {
        super::everything_survives_a_reopen().await
    }
}

async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let stores = open_sled(dir.path()).await.unwrap();
        let store = &*stores.chat;
        store.create_user(user("a", "a@x.io", START)).await.unwrap();
        store
            .create_user(user("b", "b@x.io", START + 1))
            .await
            .unwrap();
        store
            .set_profile_pic("b", "/uploads/b".to_owned(), START + 2)
            .await
            .unwrap();
        for n in 1..=5u64 {
            let (from, to) = if n % 2 == 0 { ("a", "b") } else { ("b", "a") };
            send(store, &format!("m{n}"), from, to, START + n).await;
        }
        store.mark_read("a", "b", 3).await.unwrap();
        assert!(store
            .claim_email_slot("a", "b", START, 60_000)
            .await
            .unwrap());
        // The job store shares the database.
        let added = stores
            .jobs
            .add(
                "message",
                vec![NewJob {
                    name: "process-message".to_owned(),
                    data: "{}".to_owned(),
                    opts: JobOptions::default(),
                }],
                START,
            )
            .await
            .unwrap();
        assert_eq!(added.len(), 1);
    }
    let stores = open_sled(dir.path()).await.unwrap();
    let store = &*stores.chat;
    assert_eq!(stores.jobs.counts("message").await.unwrap().waiting, 1);
    assert_eq!(store.message_count().await.unwrap(), 5);
    assert_eq!(store.users().await.unwrap().len(), 2);
    assert_eq!(
        store
            .user_by_email("b@x.io")
            .await
            .unwrap()
            .unwrap()
            .profile_pic,
        "/uploads/b"
    );
    assert_eq!(
        store.create_user(user("z", "a@x.io", START)).await.unwrap(),
        CreateUser::EmailTaken
    );
    assert_eq!(seqs(&history(store, "a", "b", ALL).await), [1, 2, 3, 4, 5]);
    let (again, created) = store
        .save_message(message("m4", "a", "b", START))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.seq, 4);
    assert_eq!(
        send(store, "m6", "a", "b", START + 6).await.seq,
        6,
        "seq continues"
    );
    assert_eq!(store.message_count().await.unwrap(), 6);
    assert_eq!(store.mark_read("a", "b", 1).await.unwrap(), 3, "mark kept");
    let summaries = store.conversations("a").await.unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].unread, 1, "m5 from b is after the mark");
    assert!(!store
        .claim_email_slot("a", "b", START + 10, 60_000)
        .await
        .unwrap());
}

// ---------------------------------------------------------------------------------------------
// Model-based property test

const USERS: [&str; 3] = ["a", "b", "c"];
const WINDOW: u64 = 100;

#[derive(Debug, Clone)]
enum Op {
    Save {
        id: u8,
        from: usize,
        to_offset: usize,
    },
    MarkRead {
        reader: usize,
        other_offset: usize,
        seq: u64,
    },
    Claim {
        user: usize,
        other_offset: usize,
        advance: u64,
    },
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..10, 0..3usize, 1..3usize)
            .prop_map(|(id, from, to_offset)| Op::Save { id, from, to_offset }),
        2 => (0..3usize, 1..3usize, 0u64..14)
            .prop_map(|(reader, other_offset, seq)| Op::MarkRead { reader, other_offset, seq }),
        1 => (0..3usize, 1..3usize, 0u64..80)
            .prop_map(|(user, other_offset, advance)| Op::Claim { user, other_offset, advance }),
        1 => Just(Op::Reopen),
    ]
}

fn pair(first: usize, offset: usize) -> (&'static str, &'static str) {
    (USERS[first], USERS[(first + offset) % USERS.len()])
}

fn conversation(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// The contract, written as plainly as possible.
#[derive(Default)]
struct Model {
    conversations: BTreeMap<(String, String), Vec<MessageRecord>>,
    by_id: BTreeMap<String, MessageRecord>,
    marks: HashMap<((String, String), String), u64>,
    claims: HashMap<((String, String), String), Millis>,
}

impl Model {
    fn save(&mut self, new: NewMessage) -> (MessageRecord, bool) {
        if let Some(stored) = self.by_id.get(&new.id) {
            return (stored.clone(), false);
        }
        let messages = self
            .conversations
            .entry(conversation(&new.sender_id, &new.receiver_id))
            .or_default();
        // Nothing is changed here, so each save's change stamp is its seq.
        let seq = messages.len() as u64 + 1;
        let record = MessageRecord::new_at(new, seq, seq);
        messages.push(record.clone());
        self.by_id.insert(record.id.clone(), record.clone());
        (record, true)
    }

    fn last_seq(&self, a: &str, b: &str) -> u64 {
        self.conversations
            .get(&conversation(a, b))
            .map_or(0, |m| m.len() as u64)
    }

    fn mark_read(&mut self, reader: &str, other: &str, seq: u64) -> u64 {
        let wanted = seq.min(self.last_seq(reader, other));
        let mark = self
            .marks
            .entry((conversation(reader, other), reader.to_owned()))
            .or_insert(0);
        *mark = (*mark).max(wanted);
        *mark
    }

    fn claim(&mut self, user: &str, other: &str, now: Millis) -> bool {
        let key = (conversation(user, other), user.to_owned());
        match self.claims.get(&key) {
            Some(last) if now.saturating_sub(*last) < WINDOW => false,
            _ => {
                self.claims.insert(key, now);
                true
            }
        }
    }

    fn summaries(&self, user: &str) -> Vec<ConversationSummary> {
        let mut list: Vec<ConversationSummary> = self
            .conversations
            .iter()
            .filter(|((a, b), messages)| (a == user || b == user) && !messages.is_empty())
            .map(|((a, b), messages)| {
                let other = if a == user { b } else { a };
                let mark = self
                    .marks
                    .get(&(conversation(a, b), user.to_owned()))
                    .copied()
                    .unwrap_or(0);
                let other_mark = self
                    .marks
                    .get(&(conversation(a, b), other.to_owned()))
                    .copied()
                    .unwrap_or(0);
                ConversationSummary {
                    other_id: other.clone(),
                    last_message: messages.last().cloned(),
                    unread: messages
                        .iter()
                        .filter(|m| m.seq > mark && &m.sender_id == other)
                        .count() as u64,
                    read_by_other: other_mark,
                }
            })
            .collect();
        list.sort_by(|x, y| {
            let x_time = x.last_message.as_ref().map(|m| m.created_at);
            let y_time = y.last_message.as_ref().map(|m| m.created_at);
            y_time
                .cmp(&x_time)
                .then_with(|| x.other_id.cmp(&y.other_id))
        });
        list
    }
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// Compares every observable of the store with the model.
async fn check_agrees(store: &dyn ChatStore, model: &Model) -> Result<(), TestCaseError> {
    let count = store.message_count().await.map_err(fail)?;
    prop_assert_eq!(count, model.by_id.len() as u64);
    for (position, a) in USERS.iter().enumerate() {
        for b in &USERS[position + 1..] {
            let stored = store.history(a, b, ALL).await.map_err(fail)?;
            let expected = model
                .conversations
                .get(&conversation(a, b))
                .cloned()
                .unwrap_or_default();
            prop_assert_eq!(&stored, &expected);
            let latest = store
                .history(b, a, HistoryPage::Latest { limit: 2 })
                .await
                .map_err(fail)?;
            prop_assert_eq!(&latest[..], &expected[expected.len().saturating_sub(2)..]);
            let after = store
                .history(a, b, HistoryPage::After { seq: 1, limit: 3 })
                .await
                .map_err(fail)?;
            prop_assert_eq!(
                &after[..],
                &expected[expected.len().min(1)..expected.len().min(4)]
            );
        }
    }
    for user in USERS {
        let summaries = store.conversations(user).await.map_err(fail)?;
        prop_assert_eq!(summaries, model.summaries(user));
    }
    for (id, record) in &model.by_id {
        prop_assert_eq!(store.message(id).await.map_err(fail)?, Some(record.clone()));
    }
    Ok(())
}

/// Runs `ops` on `backend` and on the model, comparing them after every step. A `Reopen` is a
/// restart on sled and keeps the same store on memory (see [`Backend::reopen`]).
async fn run(backend: Backend, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(fail)?;
    let mut store = Some(backend.open(dir.path()).await);
    let mut model = Model::default();
    let mut now = START;
    for (step, op) in ops.iter().enumerate() {
        now += 1;
        let chat = match store.as_ref() {
            Some(chat) => chat.clone(),
            None => return Err(fail("store missing")),
        };
        match *op {
            Op::Save {
                id,
                from,
                to_offset,
            } => {
                let (from, to) = pair(from, to_offset);
                let new = message(&format!("m{id}"), from, to, now);
                let got = chat.save_message(new.clone()).await.map_err(fail)?;
                prop_assert_eq!(got, model.save(new), "step {} {:?}", step, op);
            }
            Op::MarkRead {
                reader,
                other_offset,
                seq,
            } => {
                let (reader, other) = pair(reader, other_offset);
                let got = chat.mark_read(reader, other, seq).await.map_err(fail)?;
                prop_assert_eq!(
                    got,
                    model.mark_read(reader, other, seq),
                    "step {} {:?}",
                    step,
                    op
                );
            }
            Op::Claim {
                user,
                other_offset,
                advance,
            } => {
                now += advance;
                let (user, other) = pair(user, other_offset);
                let got = chat
                    .claim_email_slot(user, other, now, WINDOW)
                    .await
                    .map_err(fail)?;
                prop_assert_eq!(got, model.claim(user, other, now), "step {} {:?}", step, op);
            }
            Op::Reopen => {
                drop(chat);
                let Some(old) = store.take() else {
                    return Err(fail("store missing"));
                };
                store = Some(backend.reopen(old, dir.path()).await);
                continue;
            }
        }
        check_agrees(&*chat, &model).await?;
    }
    if let Some(chat) = store {
        check_agrees(&*chat, &model).await?;
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Failures print their minimal sequence; keep the source tree free of regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn memory_chat_store_agrees_with_the_model(ops in prop::collection::vec(op_strategy(), 1..=30)) {
        runtime().block_on(run(Backend::Memory, ops))?;
    }

    #[test]
    fn sled_chat_store_agrees_with_the_model(ops in prop::collection::vec(op_strategy(), 1..=30)) {
        runtime().block_on(run(Backend::Sled, ops))?;
    }
}
