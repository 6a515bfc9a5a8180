//! The message search part of the [`ChatStore`] contract, on every backend: words folded for
//! case and accents, each query word a prefix, every word required, newest first, only the
//! conversations the query names, filters on sender, kind and time, pages with a total, and the
//! index following edits, deletes and user deletion (on sled, across a reopen too).

#[macro_use]
mod chat_backends;

use std::sync::Arc;

use chat_backends::Backend;
use courier::queue::model::Millis;
use courier::store::chat::{Attachment, ChatStore, MessageChange, NewMessage};
use courier::store::search::{query_words, MessageKind, SearchQuery};

const START: Millis = 1_700_000_000_000;

on_every_backend! {
    #[tokio::test]
    words_match_by_prefix_whatever_their_case_and_accents;
    #[tokio::test]
    only_the_named_conversations_are_searched;
    #[tokio::test]
    filters_and_pages_narrow_the_hits;
    #[tokio::test]
    edits_and_deletes_change_what_is_found;
    #[tokio::test]
    a_deleted_user_s_conversations_are_not_found;
    #[tokio::test]
    many_candidates_are_narrowed_by_the_other_words_entries;
}

async fn open_with_users(backend: Backend, dir: &std::path::Path) -> Arc<dyn ChatStore> {
    chat_backends::open_with_users(backend, dir, START).await
}

fn direct(id: &str, from: &str, to: &str, text: &str, at: Millis) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        sender_id: from.to_owned(),
        receiver_id: to.to_owned(),
        text: text.to_owned(),
        created_at: at,
        ..NewMessage::default()
    }
}

async fn save(store: &dyn ChatStore, message: NewMessage) {
    let (_, created) = store.save_message(message).await.expect("save");
    assert!(created);
}

fn query(text: &str, conversations: &[&str]) -> SearchQuery {
    SearchQuery {
        words: query_words(text),
        conversations: conversations.iter().map(|c| (*c).to_owned()).collect(),
        limit: 20,
        ..SearchQuery::default()
    }
}

/// The ids found, newest first, and the total.
async fn found(store: &dyn ChatStore, query: SearchQuery) -> (Vec<String>, usize) {
    let page = store.search_messages(&query).await.expect("search");
    (
        page.messages
            .into_iter()
            .map(|message| message.id)
            .collect(),
        page.total,
    )
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|id| (*id).to_owned()).collect()
}

async fn words_match_by_prefix_whatever_their_case_and_accents(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    save(
        &*store,
        direct("m1", "ada", "bob", "Un CAFÉ au lait?", START),
    )
    .await;
    save(
        &*store,
        direct("m2", "bob", "ada", "the cafeteria is closed", START + 1),
    )
    .await;
    save(
        &*store,
        direct("m3", "ada", "bob", "lait d'amande, pas de café", START + 2),
    )
    .await;
    save(
        &*store,
        direct("m4", "ada", "bob", "nothing here", START + 3),
    )
    .await;
    let ab = ["ada:bob"];
    assert_eq!(
        found(&*store, query("cafe", &ab)).await,
        (ids(&["m3", "m2", "m1"]), 3)
    );
    assert_eq!(
        found(&*store, query("CAFÉ", &ab)).await,
        (ids(&["m3", "m2", "m1"]), 3)
    );
    assert_eq!(
        found(&*store, query("caf LAIT", &ab)).await,
        (ids(&["m3", "m1"]), 2)
    );
    assert_eq!(
        found(&*store, query("cafeterias", &ab)).await,
        (ids(&[]), 0)
    );
    assert_eq!(
        found(&*store, query("offee", &ab)).await,
        (ids(&[]), 0),
        "not infixes"
    );
    assert_eq!(found(&*store, query("  ,;  ", &ab)).await, (ids(&[]), 0));

    // A file's name is searchable; a system message is not.
    save(
        &*store,
        NewMessage {
            attachment: Some(Attachment {
                url: format!("/api/files/{}", "ab".repeat(32)),
                name: "Quarterly-Report.pdf".to_owned(),
                size: 10,
                file_type: "document".to_owned(),
                mime_type: "application/pdf".to_owned(),
            }),
            ..direct("m5", "bob", "ada", "", START + 4)
        },
    )
    .await;
    save(
        &*store,
        NewMessage {
            system: true,
            ..direct("m6", "ada", "bob", "quarterly report joined", START + 5)
        },
    )
    .await;
    assert_eq!(
        found(&*store, query("report quart", &ab)).await,
        (ids(&["m5"]), 1)
    );

    let store = backend.reopen(store, dir.path()).await;
    assert_eq!(
        found(&*store, query("cafe", &ab)).await,
        (ids(&["m3", "m2", "m1"]), 3)
    );
}

async fn only_the_named_conversations_are_searched(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    save(&*store, direct("m1", "ada", "bob", "secret plan", START)).await;
    save(
        &*store,
        direct("m2", "bob", "cy", "secret party", START + 1),
    )
    .await;
    save(
        &*store,
        NewMessage {
            group_id: Some("g1".to_owned()),
            ..direct("m3", "cy", "", "secret recipe", START + 2)
        },
    )
    .await;
    assert_eq!(
        found(&*store, query("secret", &["ada:bob"])).await,
        (ids(&["m1"]), 1)
    );
    assert_eq!(
        found(&*store, query("secret", &["bob:cy", "g1"])).await,
        (ids(&["m3", "m2"]), 2)
    );
    assert_eq!(found(&*store, query("secret", &[])).await, (ids(&[]), 0));
    assert_eq!(
        found(&*store, query("secret", &["ada:cy"])).await,
        (ids(&[]), 0)
    );
}

async fn filters_and_pages_narrow_the_hits(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    for n in 0..30u64 {
        let from = if n % 3 == 0 { "bob" } else { "ada" };
        let mut message = direct(&format!("m{n:02}"), from, "bob", "", START + n * 1000);
        message.receiver_id = if from == "bob" { "ada" } else { "bob" }.to_owned();
        message.text = format!("note number {n}");
        if n % 5 == 0 {
            message.image = format!("/uploads/{}", "cd".repeat(32));
        }
        save(&*store, message).await;
    }
    let ab = ["ada:bob"];
    let (first, total) = found(
        &*store,
        SearchQuery {
            limit: 4,
            ..query("note", &ab)
        },
    )
    .await;
    assert_eq!((first, total), (ids(&["m29", "m28", "m27", "m26"]), 30));
    let (second, _) = found(
        &*store,
        SearchQuery {
            limit: 4,
            offset: 4,
            ..query("note", &ab)
        },
    )
    .await;
    assert_eq!(second, ids(&["m25", "m24", "m23", "m22"]));

    let by_bob = SearchQuery {
        sender: Some("bob".to_owned()),
        ..query("note", &ab)
    };
    let (hits, total) = found(&*store, by_bob).await;
    assert_eq!(total, 10);
    assert!(hits
        .iter()
        .all(|id| id[1..].parse::<u64>().unwrap() % 3 == 0));

    let images = SearchQuery {
        kind: Some(MessageKind::Image),
        ..query("note", &ab)
    };
    assert_eq!(
        found(&*store, images).await,
        (ids(&["m25", "m20", "m15", "m10", "m05", "m00"]), 6)
    );
    let window = SearchQuery {
        since: Some(START + 10_000),
        until: Some(START + 13_000),
        ..query("note", &ab)
    };
    assert_eq!(
        found(&*store, window).await,
        (ids(&["m12", "m11", "m10"]), 3)
    );
    let texts_by_bob_early = SearchQuery {
        kind: Some(MessageKind::Text),
        sender: Some("bob".to_owned()),
        until: Some(START + 10_000),
        ..query("number", &ab)
    };
    assert_eq!(
        found(&*store, texts_by_bob_early).await,
        (ids(&["m09", "m06", "m03"]), 3)
    );
}

async fn edits_and_deletes_change_what_is_found(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    save(
        &*store,
        direct("m1", "ada", "bob", "meet at the station", START),
    )
    .await;
    save(
        &*store,
        direct("m2", "ada", "bob", "bring the tickets", START + 1),
    )
    .await;
    let edit = MessageChange::Edit {
        by: "ada".to_owned(),
        text: "meet at the harbour".to_owned(),
        window_ms: u64::MAX,
    };
    store.change_message("m1", edit, START + 2).await.unwrap();
    let react = MessageChange::React {
        user: "bob".to_owned(),
        reaction: "👍".to_owned(),
        add: true,
        max_reactions: 3,
    };
    store.change_message("m1", react, START + 3).await.unwrap();
    let delete = MessageChange::Delete {
        by: "ada".to_owned(),
    };
    store.change_message("m2", delete, START + 4).await.unwrap();
    check_edited(&*store).await;
    let store = backend.reopen(store, dir.path()).await;
    check_edited(&*store).await;
}

async fn check_edited(store: &dyn ChatStore) {
    let ab = ["ada:bob"];
    assert_eq!(found(store, query("station", &ab)).await, (ids(&[]), 0));
    assert_eq!(
        found(store, query("harb meet", &ab)).await,
        (ids(&["m1"]), 1)
    );
    assert_eq!(found(store, query("tickets", &ab)).await, (ids(&[]), 0));
    assert_eq!(found(store, query("the", &ab)).await, (ids(&["m1"]), 1));
}

async fn a_deleted_user_s_conversations_are_not_found(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    save(&*store, direct("m1", "ada", "bob", "hello bob", START)).await;
    save(&*store, direct("m2", "bob", "cy", "hello cy", START + 1)).await;
    assert_eq!(store.delete_user("ada").await.unwrap(), Some(1));
    let store = backend.reopen(store, dir.path()).await;
    assert_eq!(
        found(&*store, query("hello", &["ada:bob"])).await,
        (ids(&[]), 0)
    );
    assert_eq!(
        found(&*store, query("hello", &["bob:cy"])).await,
        (ids(&["m2"]), 1)
    );
}

/// Past `VERIFY_AT_MOST` candidates the second word is read from its entries, not from the
/// messages: both ways must find the same.
async fn many_candidates_are_narrowed_by_the_other_words_entries(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    let many = courier::store::search::VERIFY_AT_MOST + 40;
    for n in 0..many {
        let text = match n % 30 {
            0 => format!("alphabet soup {n} beta"),
            1 => format!("alphabet {n} betamax"),
            _ => format!("alphabet {n}"),
        };
        save(
            &*store,
            direct(&format!("m{n:04}"), "ada", "bob", &text, START + n as u64),
        )
        .await;
    }
    let ab = ["ada:bob"];
    let (all, total) = found(
        &*store,
        SearchQuery {
            limit: 50,
            ..query("alphabet", &ab)
        },
    )
    .await;
    assert_eq!((all.len(), total), (50, many));
    let expected: Vec<String> = (0..many)
        .rev()
        .filter(|n| n % 30 < 2)
        .map(|n| format!("m{n:04}"))
        .collect();
    let (hits, total) = found(
        &*store,
        SearchQuery {
            limit: 50,
            ..query("alphabet bet", &ab)
        },
    )
    .await;
    assert_eq!((hits, total), (expected.clone(), expected.len()));
    // A longer, rarer word first: few candidates, and "alpha" is checked on the messages.
    let betamax: Vec<String> = (0..many)
        .rev()
        .filter(|n| n % 30 == 1)
        .map(|n| format!("m{n:04}"))
        .collect();
    let (hits, _) = found(
        &*store,
        SearchQuery {
            limit: 50,
            ..query("betamax alpha", &ab)
        },
    )
    .await;
    assert_eq!(hits, betamax);
}
