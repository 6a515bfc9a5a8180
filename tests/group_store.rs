//! The group methods of [`ChatStore`], checked on every backend (memory, and sled on a real
//! database in a temp dir): create and read, every change and its refusals, the system message
//! saved with a change, the admin handed over and the group deleted by the last one to leave,
//! each user's groups with unread counts and last messages, read marks, accent-insensitive
//! search, a deleted user leaving their groups, and (sled) all of it again after a reopen.

#[macro_use]
mod chat_backends;

use std::sync::Arc;

use chat_backends::Backend;
use courier::queue::model::Millis;
use courier::store::chat::{ChatStore, CreateUser, HistoryPage, NewMessage, UserRecord};
use courier::store::chat_groups::{GroupChange, GroupRecord, GroupUpdate, GroupUpdated};

const START: Millis = 1_700_000_000_000;

on_every_backend! {
    #[tokio::test]
    a_group_is_created_once_and_read_back;
    #[tokio::test]
    changes_apply_to_the_latest_record_and_refusals_write_nothing;
    #[tokio::test]
    a_change_and_its_system_message_are_saved_together;
    #[tokio::test]
    the_admin_who_leaves_hands_over_and_the_last_member_deletes_the_group;
    #[tokio::test]
    a_users_groups_list_latest_activity_first_with_unread_counts;
    #[tokio::test]
    group_read_marks_never_move_back_and_stop_at_the_last_message;
    #[tokio::test]
    search_ignores_case_and_accents_and_skips_the_viewers_groups;
    #[tokio::test]
    a_deleted_user_leaves_every_group;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    concurrent_joins_all_land;
}

fn user(id: &str) -> UserRecord {
    chat_backends::user(id, START)
}

async fn users(store: &Arc<dyn ChatStore>, ids: &[&str]) {
    for id in ids {
        assert_eq!(
            store.create_user(user(id)).await.unwrap(),
            CreateUser::Created
        );
    }
}

fn group(id: &str, name: &str, members: &[&str]) -> GroupRecord {
    GroupRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        description: "about it".to_owned(),
        profile_pic: String::new(),
        admin: members[0].to_owned(),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        created_at: START,
        updated_at: START,
    }
}

fn system(id: &str, group: &str, by: &str, text: &str, at: Millis) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        sender_id: by.to_owned(),
        text: text.to_owned(),
        created_at: at,
        group_id: Some(group.to_owned()),
        system: true,
        ..NewMessage::default()
    }
}

fn said(id: &str, group: &str, by: &str, at: Millis) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        sender_id: by.to_owned(),
        text: format!("text of {id}"),
        created_at: at,
        group_id: Some(group.to_owned()),
        ..NewMessage::default()
    }
}

fn change(group: &str, change: GroupChange, admin: Option<&str>, at: Millis) -> GroupUpdate {
    GroupUpdate {
        group_id: group.to_owned(),
        change,
        only_if_admin: admin.map(str::to_owned),
        system_message: None,
        now: at,
    }
}

async fn members(store: &Arc<dyn ChatStore>, id: &str) -> Vec<String> {
    store
        .group(id)
        .await
        .unwrap()
        .expect("the group")
        .members
        .clone()
}

async fn texts(store: &Arc<dyn ChatStore>, group: &str) -> Vec<String> {
    store
        .group_history(group, HistoryPage::Latest { limit: 100 })
        .await
        .unwrap()
        .into_iter()
        .map(|message| message.text)
        .collect()
}

async fn a_group_is_created_once_and_read_back(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    users(&store, &["a", "b"]).await;
    let created = group("g1", "Team", &["a", "b"]);
    let first = system("s1", "g1", "a", "a created the group", START);
    assert!(store
        .create_group(created.clone(), Some(first))
        .await
        .unwrap());
    assert_eq!(*store.group("g1").await.unwrap().unwrap(), created);
    // The same id again writes nothing.
    let other = group("g1", "Other", &["b"]);
    assert!(!store.create_group(other, None).await.unwrap());
    assert_eq!(*store.group("g1").await.unwrap().unwrap(), created);
    assert!(store.group("nope").await.unwrap().is_none());
    assert!(store.group("bad:id").await.unwrap().is_none());
    let history = store
        .group_history("g1", HistoryPage::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].system);
    assert_eq!(history[0].seq, 1);
    assert_eq!(history[0].group_id.as_deref(), Some("g1"));

    let store = backend.reopen(store, dir.path()).await;
    assert_eq!(*store.group("g1").await.unwrap().unwrap(), created);
    assert_eq!(texts(&store, "g1").await, ["a created the group"]);
}

async fn changes_apply_to_the_latest_record_and_refusals_write_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    users(&store, &["a", "b", "c"]).await;
    store
        .create_group(group("g1", "Team", &["a"]), None)
        .await
        .unwrap();
    let added = store
        .update_group(change(
            "g1",
            GroupChange::AddMember("b".into()),
            Some("a"),
            START + 1,
        ))
        .await
        .unwrap();
    let GroupUpdated::Changed {
        group: Some(after),
        previous_members,
        system_message: None,
    } = added
    else {
        panic!("{added:?}");
    };
    assert_eq!(after.members, ["a", "b"]);
    assert_eq!(after.updated_at, START + 1);
    assert_eq!(previous_members, ["a"]);
    let details = GroupChange::Details {
        name: Some("Renamed".into()),
        description: None,
        profile_pic: Some("/uploads/x".into()),
    };
    store
        .update_group(change("g1", details, Some("a"), START + 2))
        .await
        .unwrap();
    let stored = store.group("g1").await.unwrap().unwrap();
    assert_eq!(stored.name, "Renamed");
    assert_eq!(stored.description, "about it");
    assert_eq!(stored.profile_pic, "/uploads/x");
    assert_eq!(stored.members, ["a", "b"]);

    let refusals = [
        (
            change(
                "g1",
                GroupChange::AddMember("c".into()),
                Some("b"),
                START + 3,
            ),
            GroupUpdated::NotAdmin,
        ),
        (
            change(
                "g1",
                GroupChange::AddMember("b".into()),
                Some("a"),
                START + 3,
            ),
            GroupUpdated::AlreadyMember,
        ),
        (
            change("g1", GroupChange::RemoveMember("c".into()), None, START + 3),
            GroupUpdated::NotMember,
        ),
        (
            change(
                "g1",
                GroupChange::SetAdmin("c".into()),
                Some("a"),
                START + 3,
            ),
            GroupUpdated::NotMember,
        ),
        (
            change("nope", GroupChange::AddMember("c".into()), None, START + 3),
            GroupUpdated::NoGroup,
        ),
    ];
    for (mut request, refusal) in refusals {
        request.system_message = Some(system("refused", "g1", "a", "never", START + 3));
        assert_eq!(store.update_group(request).await.unwrap(), refusal);
    }
    assert_eq!(*store.group("g1").await.unwrap().unwrap(), *stored);
    assert!(texts(&store, "g1").await.is_empty());
    assert!(store.message("refused").await.unwrap().is_none());

    store
        .update_group(change(
            "g1",
            GroupChange::SetAdmin("b".into()),
            Some("a"),
            START + 4,
        ))
        .await
        .unwrap();
    assert_eq!(store.group("g1").await.unwrap().unwrap().admin, "b");
    let store = backend.reopen(store, dir.path()).await;
    let reopened = store.group("g1").await.unwrap().unwrap();
    assert_eq!(reopened.admin, "b");
    assert_eq!(reopened.name, "Renamed");
}

async fn a_change_and_its_system_message_are_saved_together(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    users(&store, &["a", "b"]).await;
    store
        .create_group(
            group("g1", "Team", &["a"]),
            Some(system("s1", "g1", "a", "created", START)),
        )
        .await
        .unwrap();
    store
        .save_message(said("m1", "g1", "a", START + 1))
        .await
        .unwrap();
    let mut request = change(
        "g1",
        GroupChange::AddMember("b".into()),
        Some("a"),
        START + 2,
    );
    request.system_message = Some(system("s2", "g1", "a", "a added b", START + 2));
    let GroupUpdated::Changed {
        system_message: Some(saved),
        ..
    } = store.update_group(request).await.unwrap()
    else {
        panic!("not changed");
    };
    assert_eq!(saved.seq, 3);
    assert!(saved.system);
    assert_eq!(store.message("s2").await.unwrap().unwrap(), *saved);
    store
        .save_message(said("m2", "g1", "b", START + 3))
        .await
        .unwrap();
    let history = store
        .group_history("g1", HistoryPage::Latest { limit: 10 })
        .await
        .unwrap();
    let seqs: Vec<u64> = history.iter().map(|message| message.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(
        texts(&store, "g1").await,
        ["created", "text of m1", "a added b", "text of m2"]
    );
    let store = backend.reopen(store, dir.path()).await;
    assert_eq!(members(&store, "g1").await, ["a", "b"]);
    assert_eq!(store.message("s2").await.unwrap().unwrap().seq, 3);
    // The numbering goes on after a reopen.
    let (next, _) = store
        .save_message(said("m3", "g1", "a", START + 4))
        .await
        .unwrap();
    assert_eq!(next.seq, 5);
}

async fn the_admin_who_leaves_hands_over_and_the_last_member_deletes_the_group(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    users(&store, &["a", "b", "c"]).await;
    store
        .create_group(group("g1", "Team", &["a", "b", "c"]), None)
        .await
        .unwrap();
    store
        .save_message(said("m1", "g1", "b", START + 1))
        .await
        .unwrap();
    store
        .update_group(change(
            "g1",
            GroupChange::RemoveMember("a".into()),
            None,
            START + 2,
        ))
        .await
        .unwrap();
    let after = store.group("g1").await.unwrap().unwrap();
    assert_eq!(after.admin, "b", "the oldest remaining member");
    assert_eq!(after.members, ["b", "c"]);
    assert!(store.groups_of("a").await.unwrap().is_empty());
    store.mark_group_read("g1", "c", 1).await.unwrap();

    store
        .update_group(change(
            "g1",
            GroupChange::RemoveMember("b".into()),
            None,
            START + 3,
        ))
        .await
        .unwrap();
    let last = store
        .update_group(change(
            "g1",
            GroupChange::RemoveMember("c".into()),
            None,
            START + 4,
        ))
        .await
        .unwrap();
    assert!(
        matches!(&last, GroupUpdated::Changed { group: None, previous_members, .. } if previous_members == &["c"]),
        "{last:?}"
    );
    assert!(store.group("g1").await.unwrap().is_none());
    assert!(store.message("m1").await.unwrap().is_none());
    assert!(texts(&store, "g1").await.is_empty());
    for user in ["a", "b", "c"] {
        assert!(store.groups_of(user).await.unwrap().is_empty());
    }
    let store = backend.reopen(store, dir.path()).await;
    assert!(store.group("g1").await.unwrap().is_none());
    assert!(store.message("m1").await.unwrap().is_none());
    assert!(store
        .search_groups("team", "x", 10)
        .await
        .unwrap()
        .is_empty());
}

async fn a_users_groups_list_latest_activity_first_with_unread_counts(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    users(&store, &["a", "b", "c"]).await;
    store
        .create_group(group("g1", "One", &["a", "b"]), None)
        .await
        .unwrap();
    let mut quiet = group("g2", "Two", &["b", "a"]);
    quiet.created_at = START + 5;
    store.create_group(quiet, None).await.unwrap();
    store
        .create_group(group("g3", "Three", &["c"]), None)
        .await
        .unwrap();
    store
        .save_message(said("m1", "g1", "b", START + 10))
        .await
        .unwrap();
    store
        .save_message(said("m2", "g1", "b", START + 11))
        .await
        .unwrap();
    store
        .save_message(said("m3", "g1", "a", START + 12))
        .await
        .unwrap();

    let listed = store.groups_of("a").await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.group.id.as_str()).collect();
    assert_eq!(ids, ["g1", "g2"], "latest activity first");
    assert_eq!(listed[0].unread, 2, "b's two messages, not a's own");
    assert_eq!(listed[0].last_message.as_ref().unwrap().id, "m3");
    assert_eq!(listed[1].unread, 0);
    assert!(listed[1].last_message.is_none());
    let for_b = store.groups_of("b").await.unwrap();
    assert_eq!(for_b[0].unread, 1);
    assert_eq!(store.mark_group_read("g1", "a", 2).await.unwrap(), 2);
    assert_eq!(store.groups_of("a").await.unwrap()[0].unread, 0);
    // A newer message in the quiet group moves it up.
    store
        .save_message(said("m4", "g2", "b", START + 20))
        .await
        .unwrap();
    let listed = store.groups_of("a").await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.group.id.as_str()).collect();
    assert_eq!(ids, ["g2", "g1"]);
    assert_eq!(listed[0].unread, 1);

    let store = backend.reopen(store, dir.path()).await;
    let listed = store.groups_of("a").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].unread, 0, "the read mark survives");
    assert_eq!(store.groups_of("c").await.unwrap().len(), 1);
}

async fn group_read_marks_never_move_back_and_stop_at_the_last_message(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    users(&store, &["a", "b"]).await;
    store
        .create_group(group("g1", "One", &["a", "b"]), None)
        .await
        .unwrap();
    assert_eq!(store.mark_group_read("g1", "a", 5).await.unwrap(), 0);
    for (n, id) in ["m1", "m2", "m3"].iter().enumerate() {
        store
            .save_message(said(id, "g1", "b", START + n as u64))
            .await
            .unwrap();
    }
    assert_eq!(store.mark_group_read("g1", "a", u64::MAX).await.unwrap(), 3);
    assert_eq!(store.mark_group_read("g1", "a", 1).await.unwrap(), 3);
    assert!(store.mark_group_read("bad:id", "a", 1).await.is_err());
    let store = backend.reopen(store, dir.path()).await;
    assert_eq!(store.mark_group_read("g1", "a", 0).await.unwrap(), 3);
}

async fn search_ignores_case_and_accents_and_skips_the_viewers_groups(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    users(&store, &["a", "b"]).await;
    for (id, name, members) in [
        ("g1", "Équipe Café", &["a"][..]),
        ("g2", "Les cafés du coin", &["b"][..]),
        ("g3", "Rust", &["a"][..]),
        ("g4", "CAFE RACERS", &["a", "b"][..]),
    ] {
        store
            .create_group(group(id, name, members), None)
            .await
            .unwrap();
    }
    let names = |found: Vec<Arc<GroupRecord>>| -> Vec<String> {
        found.iter().map(|group| group.name.clone()).collect()
    };
    assert_eq!(
        names(store.search_groups("CAFÉ", "x", 10).await.unwrap()),
        ["CAFE RACERS", "Équipe Café", "Les cafés du coin"]
    );
    assert_eq!(
        names(store.search_groups("cafe", "b", 10).await.unwrap()),
        ["Équipe Café"],
        "b's own groups are not offered to b"
    );
    assert_eq!(store.search_groups("cafe", "x", 2).await.unwrap().len(), 2);
    assert!(store
        .search_groups("nothing", "x", 10)
        .await
        .unwrap()
        .is_empty());
    // A rename moves the group in the index.
    let rename = GroupChange::Details {
        name: Some("Tea".into()),
        description: None,
        profile_pic: None,
    };
    store
        .update_group(change("g1", rename, None, START + 1))
        .await
        .unwrap();
    assert_eq!(
        names(store.search_groups("cafe", "x", 10).await.unwrap()),
        ["CAFE RACERS", "Les cafés du coin"]
    );
    let store = backend.reopen(store, dir.path()).await;
    assert_eq!(
        names(store.search_groups("tea", "x", 10).await.unwrap()),
        ["Tea"]
    );
}

async fn a_deleted_user_leaves_every_group(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    users(&store, &["a", "b", "c"]).await;
    store
        .create_group(group("g1", "Shared", &["a", "b", "c"]), None)
        .await
        .unwrap();
    store
        .create_group(group("g2", "Alone", &["a"]), None)
        .await
        .unwrap();
    store
        .save_message(said("m1", "g2", "a", START + 1))
        .await
        .unwrap();
    store
        .save_message(said("m2", "g1", "b", START + 2))
        .await
        .unwrap();
    store.mark_group_read("g1", "a", 1).await.unwrap();

    assert!(store.delete_user("a").await.unwrap().is_some());
    let shared = store.group("g1").await.unwrap().unwrap();
    assert_eq!(shared.members, ["b", "c"]);
    assert_eq!(shared.admin, "b", "the oldest remaining member");
    assert!(
        store.group("g2").await.unwrap().is_none(),
        "an empty group goes"
    );
    assert!(store.message("m1").await.unwrap().is_none());
    assert!(store.message("m2").await.unwrap().is_some());
    assert!(store.groups_of("a").await.unwrap().is_empty());
    let store = backend.reopen(store, dir.path()).await;
    assert_eq!(members(&store, "g1").await, ["b", "c"]);
    assert!(store.group("g2").await.unwrap().is_none());
    assert_eq!(store.groups_of("b").await.unwrap().len(), 1);
}

async fn concurrent_joins_all_land(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).await;
    let ids: Vec<String> = (0..20).map(|n| format!("u{n:02}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    users(&store, &refs).await;
    store
        .create_group(group("g1", "Busy", &["u00"]), None)
        .await
        .unwrap();
    let mut joins = Vec::new();
    for (n, id) in ids.iter().enumerate().skip(1) {
        let store = Arc::clone(&store);
        let id = id.clone();
        joins.push(tokio::spawn(async move {
            let mut request = change("g1", GroupChange::AddMember(id.clone()), None, START);
            request.system_message = Some(system(&format!("s{n}"), "g1", &id, "joined", START));
            store.update_group(request).await.unwrap()
        }));
    }
    for join in joins {
        assert!(matches!(join.await.unwrap(), GroupUpdated::Changed { .. }));
    }
    let mut joined = members(&store, "g1").await;
    joined.sort();
    assert_eq!(joined, ids);
    let history = store
        .group_history("g1", HistoryPage::Latest { limit: 100 })
        .await
        .unwrap();
    let seqs: Vec<u64> = history.iter().map(|message| message.seq).collect();
    assert_eq!(
        seqs,
        (1..=19).collect::<Vec<u64>>(),
        "one seq each, no gaps"
    );
}
