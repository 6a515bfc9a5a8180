//! The message life-cycle part of the [`ChatStore`] contract, on every backend: group messages
//! (their own conversation keyed by the group id, found by message id, paged by
//! `group_history`), the new message fields, edits, deletes, reactions (decided atomically on the
//! latest value), the change index behind `HistoryPage::ChangedAfter`, the file references that
//! say when a stored file is no longer used, and (sled) all of it after a reopen.
//!
//! Each test is written once, as `async fn name(backend: Backend)`; `on_every_backend!` (in
//! `chat_backends/mod.rs`) runs it as `memory::name` and `sled::name`.

#[macro_use]
mod chat_backends;

use std::sync::Arc;

use tokio::sync::Barrier;

use chat_backends::Backend;
use courier::queue::model::Millis;
use courier::store::chat::{
    Attachment, ChangeOutcome, ChangeRefused, ChatStore, HistoryPage, MessageChange, MessageRecord,
    NewMessage,
};

const START: Millis = 1_700_000_000_000;
const WINDOW: u64 = 15 * 60 * 1000;
const ALL: HistoryPage = HistoryPage::Latest { limit: usize::MAX };

on_every_backend! {
    #[tokio::test]
    group_messages_live_in_the_group_conversation;
    #[tokio::test]
    replies_attachments_and_system_flags_are_stored;
    #[tokio::test]
    an_edit_keeps_the_old_text_and_follows_the_rules;
    #[tokio::test]
    a_delete_clears_the_message_and_releases_unused_files;
    #[tokio::test]
    reactions_are_added_taken_back_and_bounded;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    concurrent_reactions_all_land;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    an_edit_racing_a_delete_never_brings_the_text_back;
    #[tokio::test]
    changes_are_caught_up_by_stamp_in_direct_and_group_conversations;
    #[tokio::test]
    deleting_a_user_removes_their_change_index;
}

async fn open_with_users(backend: Backend, dir: &std::path::Path) -> Arc<dyn ChatStore> {
    chat_backends::open_with_users(backend, dir, START).await
}

fn direct(id: &str, from: &str, to: &str, at: Millis) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        sender_id: from.to_owned(),
        receiver_id: to.to_owned(),
        text: format!("text of {id}"),
        created_at: at,
        ..NewMessage::default()
    }
}

fn in_group(id: &str, from: &str, group: &str, at: Millis) -> NewMessage {
    NewMessage {
        group_id: Some(group.to_owned()),
        // Whatever a caller puts here, a group message has no receiver.
        receiver_id: "ignored".to_owned(),
        ..direct(id, from, "", at)
    }
}

async fn save(store: &dyn ChatStore, message: NewMessage) -> MessageRecord {
    let id = message.id.clone();
    let (record, created) = store.save_message(message).await.expect("save");
    assert!(created, "{id} was new");
    record
}

async fn change(
    store: &dyn ChatStore,
    id: &str,
    change: MessageChange,
    now: Millis,
) -> ChangeOutcome {
    store.change_message(id, change, now).await.expect("change")
}

fn changed(outcome: ChangeOutcome) -> (MessageRecord, Vec<String>) {
    match outcome {
        ChangeOutcome::Changed { message, released } => (message, released),
        other => panic!("expected a change, got {other:?}"),
    }
}

fn edit(by: &str, text: &str) -> MessageChange {
    MessageChange::Edit {
        by: by.to_owned(),
        text: text.to_owned(),
        window_ms: WINDOW,
    }
}

fn delete(by: &str) -> MessageChange {
    MessageChange::Delete { by: by.to_owned() }
}

fn react(user: &str, reaction: &str, add: bool) -> MessageChange {
    MessageChange::React {
        user: user.to_owned(),
        reaction: reaction.to_owned(),
        add,
        max_reactions: 3,
    }
}

fn ids(messages: &[MessageRecord]) -> Vec<&str> {
    messages.iter().map(|message| message.id.as_str()).collect()
}

async fn group_messages_live_in_the_group_conversation(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    save(&*store, direct("d1", "ada", "bob", START)).await;
    let g1 = save(&*store, in_group("g1", "ada", "grp", START + 1)).await;
    assert_eq!(g1.seq, 1, "a group numbers its own messages");
    assert_eq!(g1.group_id.as_deref(), Some("grp"));
    assert_eq!(g1.receiver_id, "");
    assert_eq!(g1.conversation_key(), "grp");
    save(&*store, in_group("g2", "bob", "grp", START + 2)).await;
    save(&*store, in_group("g3", "cy", "grp", START + 3)).await;
    save(&*store, in_group("o1", "cy", "other", START + 4)).await;

    // A retry of a group message is the stored one.
    let (again, created) = store
        .save_message(in_group("g1", "ada", "grp", START + 9))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again, g1);

    let store = backend.reopen(store, dir.path()).await;
    assert_eq!(store.message("g2").await.unwrap().unwrap().seq, 2);
    let page = store.group_history("grp", ALL).await.unwrap();
    assert_eq!(ids(&page), ["g1", "g2", "g3"]);
    let page = store
        .group_history("grp", HistoryPage::Before { seq: 3, limit: 1 })
        .await
        .unwrap();
    assert_eq!(ids(&page), ["g2"]);
    let page = store
        .group_history("grp", HistoryPage::After { seq: 1, limit: 5 })
        .await
        .unwrap();
    assert_eq!(ids(&page), ["g2", "g3"]);
    // Direct history and the sidebar know nothing of groups.
    assert_eq!(
        ids(&store.history("ada", "bob", ALL).await.unwrap()),
        ["d1"]
    );
    let partners: Vec<String> = store
        .conversations("cy")
        .await
        .unwrap()
        .into_iter()
        .map(|summary| summary.other_id)
        .collect();
    assert!(partners.is_empty(), "{partners:?}");
    // A group saved after the reopen continues its numbering.
    assert_eq!(
        save(&*store, in_group("g4", "ada", "grp", START + 5))
            .await
            .seq,
        4
    );
    // Group ids that could not be part of a key are refused, and read as nothing.
    assert!(store
        .save_message(in_group("bad", "ada", "a:b", START))
        .await
        .is_err());
    assert!(store.group_history("a:b", ALL).await.unwrap().is_empty());
    assert!(store
        .group_history("nothing", ALL)
        .await
        .unwrap()
        .is_empty());
}

async fn replies_attachments_and_system_flags_are_stored(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    save(&*store, direct("m1", "ada", "bob", START)).await;
    let attachment = Attachment {
        url: format!("/api/files/{}", "ab".repeat(32)),
        name: "notes.pdf".to_owned(),
        size: 12_345,
        file_type: "document".to_owned(),
        mime_type: "application/pdf".to_owned(),
    };
    let reply = save(
        &*store,
        NewMessage {
            reply_to: Some("m1".to_owned()),
            attachment: Some(attachment.clone()),
            ..direct("m2", "bob", "ada", START + 1)
        },
    )
    .await;
    let system = save(
        &*store,
        NewMessage {
            system: true,
            ..in_group("s1", "ada", "grp", START + 2)
        },
    )
    .await;
    let store = backend.reopen(store, dir.path()).await;
    let stored = store.message("m2").await.unwrap().unwrap();
    assert_eq!(stored, reply);
    assert_eq!(stored.reply_to.as_deref(), Some("m1"));
    assert_eq!(stored.attachment, Some(attachment.clone()));
    assert!(store.file_referenced(&attachment.url).await.unwrap());
    assert!(!store.file_referenced("/api/files/none").await.unwrap());
    assert!(store.message("s1").await.unwrap().unwrap().system);
    assert_eq!(store.message("s1").await.unwrap().unwrap(), system);
    let plain = store.message("m1").await.unwrap().unwrap();
    assert_eq!(
        (plain.reply_to, plain.attachment, plain.system),
        (None, None, false)
    );
}

async fn an_edit_keeps_the_old_text_and_follows_the_rules(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    let original = save(&*store, direct("m1", "ada", "bob", START)).await;

    let (first, _) = changed(change(&*store, "m1", edit("ada", "second"), START + 10).await);
    assert_eq!(first.text, "second");
    assert_eq!(first.edited_at, Some(START + 10));
    assert_eq!(first.updated_at, START + 10);
    assert!(first.change > original.change);
    let (second, _) = changed(change(&*store, "m1", edit("ada", "third"), START + 20).await);
    let history: Vec<(&str, Millis)> = second
        .edit_history
        .iter()
        .map(|edit| (edit.text.as_str(), edit.edited_at))
        .collect();
    assert_eq!(
        history,
        [("text of m1", START + 10), ("second", START + 20)]
    );

    // The same text again changes nothing.
    assert_eq!(
        change(&*store, "m1", edit("ada", "third"), START + 30).await,
        ChangeOutcome::Unchanged(second.clone())
    );
    // Only the sender, only within the window.
    assert_eq!(
        change(&*store, "m1", edit("bob", "mine now"), START + 30).await,
        ChangeOutcome::Refused(ChangeRefused::NotSender, second.clone())
    );
    assert_eq!(
        change(&*store, "m1", edit("ada", "late"), START + WINDOW + 1).await,
        ChangeOutcome::Refused(ChangeRefused::EditWindowOver, second.clone())
    );
    assert_eq!(
        change(&*store, "nope", edit("ada", "x"), START).await,
        ChangeOutcome::NotFound
    );

    let store = backend.reopen(store, dir.path()).await;
    assert_eq!(store.message("m1").await.unwrap().unwrap(), second);
    assert_eq!(
        store.history("ada", "bob", ALL).await.unwrap(),
        vec![second.clone()]
    );
    // Deleted: no more edits.
    changed(change(&*store, "m1", delete("ada"), START + 40).await);
    assert!(matches!(
        change(&*store, "m1", edit("ada", "back"), START + 41).await,
        ChangeOutcome::Refused(ChangeRefused::Deleted, _)
    ));
}

async fn a_delete_clears_the_message_and_releases_unused_files(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    let image = format!("/uploads/{}", "cd".repeat(32));
    // One stored file under two names: one reference.
    let file = format!("/api/files/{}", "ef".repeat(32));
    let with_files = |id: &str, at| NewMessage {
        image: image.clone(),
        attachment: Some(Attachment {
            url: format!("{file}/{id}.txt"),
            name: "a.txt".to_owned(),
            size: 3,
            file_type: "document".to_owned(),
            mime_type: "text/plain".to_owned(),
        }),
        ..direct(id, "ada", "bob", at)
    };
    save(&*store, with_files("m1", START)).await;
    save(&*store, with_files("m2", START + 1)).await;
    changed(change(&*store, "m1", react("bob", "👍", true), START + 2).await);
    changed(change(&*store, "m1", edit("ada", "edited"), START + 3).await);

    assert!(matches!(
        change(&*store, "m1", delete("bob"), START + 4).await,
        ChangeOutcome::Refused(ChangeRefused::NotSender, _)
    ));
    // m2 still refers to both files: nothing is released.
    let (deleted, released) = changed(change(&*store, "m1", delete("ada"), START + 5).await);
    assert!(released.is_empty(), "{released:?}");
    assert_eq!(deleted.deleted_at, Some(START + 5));
    assert_eq!((deleted.text.as_str(), deleted.image.as_str()), ("", ""));
    assert_eq!(deleted.attachment, None);
    assert!(deleted.edit_history.is_empty(), "old texts go with it");
    assert!(deleted.reactions.is_empty());
    // Deleting again changes nothing.
    assert_eq!(
        change(&*store, "m1", delete("ada"), START + 6).await,
        ChangeOutcome::Unchanged(deleted.clone())
    );
    assert!(store.file_referenced(&image).await.unwrap());
    assert!(store
        .file_referenced(&format!("{file}/any.txt"))
        .await
        .unwrap());

    let store = backend.reopen(store, dir.path()).await;
    assert_eq!(store.message("m1").await.unwrap().unwrap(), deleted);
    let (_, mut released) = changed(change(&*store, "m2", delete("ada"), START + 7).await);
    released.sort();
    let mut expected = vec![image.clone(), file.clone()];
    expected.sort();
    assert_eq!(released, expected);
    assert!(!store.file_referenced(&image).await.unwrap());
    assert!(!store.file_referenced(&file).await.unwrap());
    // Still listed, as deleted, in place.
    let history = store.history("ada", "bob", ALL).await.unwrap();
    assert_eq!(ids(&history), ["m1", "m2"]);
    assert!(history.iter().all(MessageRecord::is_deleted));
}

async fn reactions_are_added_taken_back_and_bounded(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    save(&*store, direct("m1", "ada", "bob", START)).await;
    changed(change(&*store, "m1", react("bob", "👍", true), START + 1).await);
    let (record, _) = changed(change(&*store, "m1", react("ada", "👍", true), START + 2).await);
    assert_eq!(record.reactions.len(), 1);
    assert_eq!(record.reactions[0].users, ["bob", "ada"]);
    // The same reaction twice is one.
    assert!(matches!(
        change(&*store, "m1", react("ada", "👍", true), START + 3).await,
        ChangeOutcome::Unchanged(_)
    ));
    changed(change(&*store, "m1", react("bob", "🎉", true), START + 4).await);
    changed(change(&*store, "m1", react("bob", "ok", true), START + 5).await);
    // At most three different reactions.
    assert!(matches!(
        change(&*store, "m1", react("cy", "😀", true), START + 6).await,
        ChangeOutcome::Refused(ChangeRefused::TooManyReactions, _)
    ));
    // An existing one can still be joined.
    changed(change(&*store, "m1", react("cy", "ok", true), START + 7).await);
    // Taking back: the last user's removal drops the reaction; an absent one changes nothing.
    let (record, _) = changed(change(&*store, "m1", react("bob", "🎉", false), START + 8).await);
    let emojis: Vec<&str> = record.reactions.iter().map(|r| r.emoji.as_str()).collect();
    assert_eq!(emojis, ["👍", "ok"]);
    assert!(matches!(
        change(&*store, "m1", react("bob", "🎉", false), START + 9).await,
        ChangeOutcome::Unchanged(_)
    ));
    let store = backend.reopen(store, dir.path()).await;
    assert_eq!(store.message("m1").await.unwrap().unwrap(), record);
    // None on a deleted message.
    changed(change(&*store, "m1", delete("ada"), START + 10).await);
    assert!(matches!(
        change(&*store, "m1", react("bob", "👍", true), START + 11).await,
        ChangeOutcome::Refused(ChangeRefused::Deleted, _)
    ));
}

async fn concurrent_reactions_all_land(backend: Backend) {
    const RACERS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    for round in 0..5 {
        let id = format!("m{round}");
        save(&*store, direct(&id, "ada", "bob", START + round)).await;
        let start = Arc::new(Barrier::new(RACERS));
        let mut tasks = Vec::new();
        for n in 0..RACERS {
            let (store, start, id) = (store.clone(), start.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let change = MessageChange::React {
                    user: format!("user{n}"),
                    reaction: "👍".to_owned(),
                    add: true,
                    max_reactions: 3,
                };
                store
                    .change_message(&id, change, START + 100)
                    .await
                    .unwrap()
            }));
        }
        let mut stamps = Vec::new();
        for task in tasks {
            let (message, _) = changed(task.await.unwrap());
            stamps.push(message.change);
        }
        stamps.sort_unstable();
        stamps.dedup();
        assert_eq!(stamps.len(), RACERS, "every change took its own stamp");
        let stored = store.message(&id).await.unwrap().unwrap();
        let mut users = stored.reactions[0].users.clone();
        users.sort();
        let mut expected: Vec<String> = (0..RACERS).map(|n| format!("user{n}")).collect();
        expected.sort();
        assert_eq!(users, expected, "no reaction was lost");
        // The index holds the message once, under its latest stamp.
        let changes = store
            .history(
                "ada",
                "bob",
                HistoryPage::ChangedAfter {
                    change: 0,
                    limit: 1000,
                },
            )
            .await
            .unwrap();
        assert_eq!(changes.last(), Some(&stored));
        assert_eq!(changes.iter().filter(|message| message.id == id).count(), 1);
    }
}

async fn an_edit_racing_a_delete_never_brings_the_text_back(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    for round in 0..20 {
        let id = format!("m{round}");
        save(&*store, direct(&id, "ada", "bob", START)).await;
        let start = Arc::new(Barrier::new(2));
        let racer = |change: MessageChange| {
            let (store, start, id) = (store.clone(), start.clone(), id.clone());
            tokio::spawn(async move {
                start.wait().await;
                store.change_message(&id, change, START + 1).await.unwrap()
            })
        };
        let editing = racer(edit("ada", "edited"));
        let deleting = racer(delete("ada"));
        let edited = editing.await.unwrap();
        changed(deleting.await.unwrap());
        let stored = store.message(&id).await.unwrap().unwrap();
        assert!(stored.is_deleted());
        assert_eq!(stored.text, "", "round {round}: {edited:?}");
        assert!(stored.edit_history.is_empty());
    }
}

async fn changes_are_caught_up_by_stamp_in_direct_and_group_conversations(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    let changed_after = |change| HistoryPage::ChangedAfter { change, limit: 100 };
    for n in 1..=3 {
        let id = format!("m{n}");
        let record = save(&*store, direct(&id, "ada", "bob", START + n)).await;
        assert_eq!(record.change, n, "a save takes the next stamp");
        save(&*store, in_group(&format!("g{n}"), "bob", "grp", START + n)).await;
    }
    // What a client that has seen everything up to stamp 3 missed: m1 edited, then m2 reacted to.
    let (m1, _) = changed(change(&*store, "m1", edit("ada", "better"), START + 10).await);
    let (m2, _) = changed(change(&*store, "m2", react("ada", "👍", true), START + 11).await);
    assert_eq!((m1.change, m2.change), (4, 5));
    let missed = store.history("bob", "ada", changed_after(3)).await.unwrap();
    assert_eq!(missed, vec![m1.clone(), m2.clone()]);
    // A message appears once, at its latest change.
    let (m1, _) = changed(change(&*store, "m1", edit("ada", "best"), START + 12).await);
    let everything = store.history("ada", "bob", changed_after(0)).await.unwrap();
    assert_eq!(ids(&everything), ["m3", "m2", "m1"]);
    let limited = store
        .history(
            "ada",
            "bob",
            HistoryPage::ChangedAfter {
                change: 0,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&limited), ["m3", "m2"]);
    assert!(store
        .history("ada", "bob", changed_after(m1.change))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .history("ada", "bob", changed_after(u64::MAX))
        .await
        .unwrap()
        .is_empty());

    // Groups have their own stamps and index.
    let (g2, _) = changed(change(&*store, "g2", delete("bob"), START + 13).await);
    assert_eq!(g2.change, 4);
    assert_eq!(
        store.group_history("grp", changed_after(3)).await.unwrap(),
        vec![g2.clone()]
    );

    // Stamps are never handed out twice, across a restart too.
    let store = backend.reopen(store, dir.path()).await;
    let m4 = save(&*store, direct("m4", "bob", "ada", START + 20)).await;
    assert_eq!(m4.change, m1.change + 1);
    assert_eq!(
        store
            .history("ada", "bob", changed_after(m1.change))
            .await
            .unwrap(),
        vec![m4]
    );
    let (g1, _) = changed(change(&*store, "g1", react("ada", "ok", true), START + 21).await);
    assert_eq!(g1.change, 5);
}

async fn deleting_a_user_removes_their_change_index(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_users(backend, dir.path()).await;
    let image = format!("/uploads/{}", "aa".repeat(32));
    save(
        &*store,
        NewMessage {
            image: image.clone(),
            ..direct("m1", "ada", "bob", START)
        },
    )
    .await;
    changed(change(&*store, "m1", edit("ada", "edited"), START + 1).await);
    save(&*store, direct("m2", "bob", "cy", START + 2)).await;
    assert_eq!(store.delete_user("ada").await.unwrap(), Some(1));
    let store = backend.reopen(store, dir.path()).await;
    let changes = HistoryPage::ChangedAfter {
        change: 0,
        limit: 100,
    };
    assert!(store
        .history("ada", "bob", changes)
        .await
        .unwrap()
        .is_empty());
    assert!(!store.file_referenced(&image).await.unwrap());
    assert_eq!(
        change(&*store, "m1", edit("ada", "ghost"), START + 3).await,
        ChangeOutcome::NotFound
    );
    assert_eq!(
        ids(&store.history("bob", "cy", changes).await.unwrap()),
        ["m2"]
    );
}
