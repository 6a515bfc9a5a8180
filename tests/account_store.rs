//! Account states and single-use tokens in the chat store, on every backend: defaults, changes
//! that race, tokens consumed exactly once (even by concurrent takers), expiry, sessions, blocks,
//! disabled accounts, deleting a user, and all of it after a reopen (a real restart on sled; on
//! memory, which keeps nothing across a restart, the same store: see `Backend::reopen`).
//!
//! Each test is written once, as `async fn name(backend: Backend)`; `on_every_backend!` (in
//! `chat_backends/mod.rs`) runs it as `memory::name` and `sled::name`.

#[macro_use]
mod chat_backends;

use std::sync::Arc;

use chat_backends::Backend;

use courier::store::accounts::{AccountState, OneTimeToken, SessionRecord, TokenPurpose};
use courier::store::chat::{AccountChange, ChatStore};

const NOW: u64 = 1_700_000_000_000;

on_every_backend! {
    #[tokio::test]
    account_states_default_change_together_and_survive_a_reopen;
    #[tokio::test]
    a_token_is_consumed_once_even_by_concurrent_takers;
    #[tokio::test]
    expired_tokens_are_refused_and_swept_and_used_ones_stay_used_after_a_reopen;
    #[tokio::test]
    concurrent_changes_to_one_user_all_land;
    #[tokio::test]
    sessions_are_listed_per_user_ended_for_good_and_swept_when_expired;
    #[tokio::test]
    blocks_are_kept_both_ways_and_listed_in_id_order;
    #[tokio::test]
    an_account_is_disabled_and_enabled_again;
    #[tokio::test]
    deleting_a_user_removes_everything_theirs_and_refuses_later_messages;
}

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn token(purpose: TokenPurpose, expires_at: u64) -> OneTimeToken {
    OneTimeToken {
        purpose,
        user_id: "65f0c0a1b2c3d4e5f6a7b8c9".to_owned(),
        email: "ana@example.com".to_owned(),
        expires_at,
    }
}

async fn account_states_default_change_together_and_survive_a_reopen(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let chat = backend.open(dir.path()).await;
    let user = "65f0c0a1b2c3d4e5f6a7b8c9";
    assert_eq!(
        chat.account_state(user).await.unwrap(),
        AccountState::default()
    );

    // Two changes at once: both land, whichever goes first.
    let (a, b) = tokio::join!(
        chat.update_account_state(
            user,
            AccountChange::EmailVerified("ana@example.com".to_owned(), NOW)
        ),
        chat.update_account_state(user, AccountChange::EmailNotifications(false)),
    );
    a.unwrap();
    b.unwrap();
    let expected = AccountState {
        verified_email: Some(("ana@example.com".to_owned(), NOW)),
        email_notifications: false,
    };
    assert_eq!(chat.account_state(user).await.unwrap(), expected);
    assert!(expected.has_verified("ana@example.com"));
    assert!(!expected.has_verified("other@example.com"));

    let chat = backend.reopen(chat, dir.path()).await;
    assert_eq!(chat.account_state(user).await.unwrap(), expected);
    assert!(chat.account_state("bad:id").await.is_err());
}

async fn a_token_is_consumed_once_even_by_concurrent_takers(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let chat = backend.open(dir.path()).await;
    let stored = token(TokenPurpose::VerifyEmail, NOW + 60_000);
    chat.put_token(&hash(1), stored.clone(), NOW).await.unwrap();

    // Another purpose does not consume it.
    let wrong = chat
        .take_token(&hash(1), TokenPurpose::ResetPassword, NOW)
        .await
        .unwrap();
    assert_eq!(wrong, None);

    let takers: Vec<_> = (0..16)
        .map(|_| {
            let chat: Arc<dyn ChatStore> = chat.clone();
            tokio::spawn(async move {
                chat.take_token(&hash(1), TokenPurpose::VerifyEmail, NOW)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut taken = Vec::new();
    for taker in takers {
        taken.extend(taker.await.unwrap());
    }
    assert_eq!(taken, vec![stored], "exactly one taker gets the token");
    assert!(chat
        .take_token(&hash(9), TokenPurpose::VerifyEmail, NOW)
        .await
        .unwrap()
        .is_none());
    assert!(chat
        .take_token("short", TokenPurpose::VerifyEmail, NOW)
        .await
        .is_err());
}

async fn expired_tokens_are_refused_and_swept_and_used_ones_stay_used_after_a_reopen(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let chat = backend.open(dir.path()).await;
    chat.put_token(&hash(1), token(TokenPurpose::ResetPassword, NOW), NOW)
        .await
        .unwrap();
    // Expired (expiry is not after now): refused, and gone.
    assert_eq!(
        chat.take_token(&hash(1), TokenPurpose::ResetPassword, NOW)
            .await
            .unwrap(),
        None
    );
    // Never used and expired: a token stored later sweeps it; one still valid is kept.
    chat.put_token(&hash(2), token(TokenPurpose::VerifyEmail, NOW + 1), NOW)
        .await
        .unwrap();
    chat.put_token(
        &hash(3),
        token(TokenPurpose::VerifyEmail, NOW + 10_000),
        NOW,
    )
    .await
    .unwrap();
    chat.put_token(
        &hash(4),
        token(TokenPurpose::VerifyEmail, NOW + 20_000),
        NOW + 5,
    )
    .await
    .unwrap();
    assert!(chat
        .take_token(&hash(4), TokenPurpose::VerifyEmail, NOW)
        .await
        .unwrap()
        .is_some());

    let chat = backend.reopen(chat, dir.path()).await;
    assert_eq!(
        chat.take_token(&hash(2), TokenPurpose::VerifyEmail, NOW)
            .await
            .unwrap(),
        None,
        "swept when a later token was stored"
    );
    assert!(chat
        .take_token(&hash(3), TokenPurpose::VerifyEmail, NOW)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        chat.take_token(&hash(4), TokenPurpose::VerifyEmail, NOW)
            .await
            .unwrap(),
        None,
        "a used token stays used"
    );
}

async fn concurrent_changes_to_one_user_all_land(backend: Backend) {
    use courier::store::chat::{CreateUser, UserChange, UserRecord};

    let dir = tempfile::tempdir().unwrap();
    let chat = backend.open(dir.path()).await;
    let id = "65f0c0a1b2c3d4e5f6a7b8c9";
    let created = chat
        .create_user(UserRecord {
            id: id.to_owned(),
            full_name: "Ana".to_owned(),
            email: "ana@example.com".to_owned(),
            password_hash: "old-hash".to_owned(),
            profile_pic: String::new(),
            created_at: NOW,
            updated_at: NOW,
        })
        .await
        .unwrap();
    assert_eq!(created, CreateUser::Created);
    // Each change reads the record while the others are still on their way to disk.
    let (a, b, c) = tokio::join!(
        chat.update_user(id, UserChange::ProfilePic("/uploads/p".to_owned()), NOW + 1),
        chat.update_user(id, UserChange::FullName("Ana Lima".to_owned()), NOW + 2),
        chat.update_user(id, UserChange::PasswordHash("new-hash".to_owned()), NOW + 3),
    );
    for result in [a, b, c] {
        assert!(result.unwrap().is_some());
    }
    let check = |user: UserRecord| {
        assert_eq!(user.profile_pic, "/uploads/p");
        assert_eq!(user.full_name, "Ana Lima");
        assert_eq!(user.password_hash, "new-hash");
    };
    check(chat.user_by_id(id).await.unwrap().unwrap());
    assert!(chat
        .update_user(
            "65f0c0a1b2c3d4e5f6a7b8ca",
            UserChange::FullName("x".to_owned()),
            NOW
        )
        .await
        .unwrap()
        .is_none());
    let chat = backend.reopen(chat, dir.path()).await;
    check(chat.user_by_id(id).await.unwrap().unwrap());
}

fn session(user: &str, expires_at: u64) -> SessionRecord {
    SessionRecord {
        user_id: user.to_owned(),
        created_at: NOW,
        expires_at,
        last_seen_at: NOW,
        user_agent: "test".to_owned(),
        address: "127.0.0.1".to_owned(),
    }
}

async fn sessions_are_listed_per_user_ended_for_good_and_swept_when_expired(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let chat = backend.open(dir.path()).await;
    let ana = "65f0c0a1b2c3d4e5f6a7b8c9";
    let bo = "65f0c0a1b2c3d4e5f6a7b8ca";
    chat.put_session("s1", session(ana, NOW + 10), NOW)
        .await
        .unwrap();
    chat.put_session("s2", session(ana, NOW + 1_000_000), NOW)
        .await
        .unwrap();
    chat.put_session("s3", session(bo, NOW + 1_000_000), NOW)
        .await
        .unwrap();
    let ids = |sessions: Vec<(String, SessionRecord)>| {
        sessions.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
    };
    assert_eq!(ids(chat.sessions_of(ana).await.unwrap()), ["s1", "s2"]);

    // Only the owner's sessions are deleted, in one write.
    let removed = chat
        .delete_sessions(ana, &["s2".to_owned(), "s3".to_owned(), "nope".to_owned()])
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(chat.session("s3").await.unwrap().is_some());
    // A late "last seen" write does not bring an ended session back.
    assert!(!chat.touch_session("s2", NOW + 5).await.unwrap());
    assert_eq!(chat.session("s2").await.unwrap(), None);
    assert!(chat.touch_session("s1", NOW + 5).await.unwrap());
    assert_eq!(
        chat.session("s1").await.unwrap().unwrap().last_seen_at,
        NOW + 5
    );

    // A new session of the same user sweeps the ones that expired.
    chat.put_session("s4", session(ana, NOW + 1_000_000), NOW + 20)
        .await
        .unwrap();
    let chat = backend.reopen(chat, dir.path()).await;
    assert_eq!(ids(chat.sessions_of(ana).await.unwrap()), ["s4"]);
    assert_eq!(
        chat.session("s2").await.unwrap(),
        None,
        "an ended session stays ended"
    );
    assert_eq!(ids(chat.sessions_of(bo).await.unwrap()), ["s3"]);
}

async fn blocks_are_kept_both_ways_and_listed_in_id_order(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let chat = backend.open(dir.path()).await;
    assert!(chat.set_blocked("a", "c", true).await.unwrap());
    assert!(chat.set_blocked("a", "b", true).await.unwrap());
    assert!(
        !chat.set_blocked("a", "b", true).await.unwrap(),
        "already blocked: nothing changed"
    );
    assert!(chat.set_blocked("c", "b", true).await.unwrap());
    assert!(chat.is_blocked("a", "b").await.unwrap());
    assert!(
        !chat.is_blocked("b", "a").await.unwrap(),
        "a block is one way"
    );
    assert_eq!(chat.blocked_users("a").await.unwrap(), ["b", "c"]);
    assert_eq!(chat.blockers_of("b").await.unwrap(), ["a", "c"]);
    assert!(chat.blockers_of("a").await.unwrap().is_empty());

    assert!(chat.set_blocked("a", "b", false).await.unwrap());
    assert!(!chat.set_blocked("a", "b", false).await.unwrap());
    assert!(!chat.is_blocked("a", "b").await.unwrap());
    assert_eq!(chat.blocked_users("a").await.unwrap(), ["c"]);
    assert_eq!(chat.blockers_of("b").await.unwrap(), ["c"]);
    assert!(chat.set_blocked("a:x", "b", true).await.is_err());
    assert!(chat.blocked_users("a\0").await.is_err());

    let chat = backend.reopen(chat, dir.path()).await;
    assert_eq!(chat.blocked_users("a").await.unwrap(), ["c"]);
    assert_eq!(chat.blockers_of("b").await.unwrap(), ["c"]);
    assert!(chat.is_blocked("c", "b").await.unwrap());
}

async fn an_account_is_disabled_and_enabled_again(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let chat = backend.open(dir.path()).await;
    let ana = "65f0c0a1b2c3d4e5f6a7b8c9";
    assert_eq!(chat.disabled_at(ana).await.unwrap(), None);
    chat.set_disabled(ana, Some(NOW)).await.unwrap();
    assert_eq!(chat.disabled_at(ana).await.unwrap(), Some(NOW));
    chat.set_disabled(ana, None).await.unwrap();
    assert_eq!(chat.disabled_at(ana).await.unwrap(), None);
    chat.set_disabled(ana, Some(NOW + 1)).await.unwrap();
    assert!(chat.set_disabled("a:b", Some(NOW)).await.is_err());
    assert!(chat.disabled_at("a:b").await.is_err());

    let chat = backend.reopen(chat, dir.path()).await;
    assert_eq!(chat.disabled_at(ana).await.unwrap(), Some(NOW + 1));
}

async fn deleting_a_user_removes_everything_theirs_and_refuses_later_messages(backend: Backend) {
    use courier::store::chat::{CreateUser, NewMessage, UserRecord};
    use courier::store::StoreError;

    let dir = tempfile::tempdir().unwrap();
    let chat = backend.open(dir.path()).await;
    let account = |id: &str, at: u64| UserRecord {
        id: id.to_owned(),
        full_name: id.to_owned(),
        email: format!("{id}@example.com"),
        password_hash: "hash".to_owned(),
        profile_pic: String::new(),
        created_at: at,
        updated_at: at,
    };
    let text = |id: &str, from: &str, to: &str| NewMessage {
        id: id.to_owned(),
        sender_id: from.to_owned(),
        receiver_id: to.to_owned(),
        text: format!("text of {id}"),
        image: String::new(),
        created_at: NOW,
        ..NewMessage::default()
    };
    for (n, id) in ["ana", "bo", "cy"].into_iter().enumerate() {
        let created = chat.create_user(account(id, NOW + n as u64)).await.unwrap();
        assert_eq!(created, CreateUser::Created);
    }
    for (id, from, to) in [
        ("m1", "ana", "bo"),
        ("m2", "bo", "ana"),
        ("m3", "ana", "cy"),
        ("m4", "bo", "cy"),
    ] {
        assert!(chat.save_message(text(id, from, to)).await.unwrap().1);
    }
    assert_eq!(chat.mark_read("bo", "ana", 2).await.unwrap(), 2);
    assert!(chat
        .claim_email_slot("bo", "ana", NOW, 60_000)
        .await
        .unwrap());
    chat.update_account_state("ana", AccountChange::EmailNotifications(false))
        .await
        .unwrap();
    chat.put_session("s1", session("ana", NOW + 1_000), NOW)
        .await
        .unwrap();
    chat.put_session("s2", session("bo", NOW + 1_000), NOW)
        .await
        .unwrap();
    chat.set_blocked("ana", "bo", true).await.unwrap();
    chat.set_blocked("cy", "ana", true).await.unwrap();
    chat.set_blocked("cy", "bo", true).await.unwrap();
    chat.set_disabled("ana", Some(NOW)).await.unwrap();

    assert_eq!(
        chat.delete_user("ana").await.unwrap(),
        Some(3),
        "both sides of both of ana's conversations"
    );
    assert_eq!(chat.delete_user("ana").await.unwrap(), None, "already gone");
    assert_eq!(chat.delete_user("nobody").await.unwrap(), None);
    assert!(chat.delete_user("a:b").await.is_err());

    // Later messages naming ana are refused, a retry of one of hers included.
    for (id, from, to) in [("m5", "bo", "ana"), ("m1", "ana", "bo")] {
        match chat.save_message(text(id, from, to)).await {
            Err(StoreError::Deleted(who)) => assert_eq!(who, "ana"),
            other => panic!("a message naming a deleted user was not refused: {other:?}"),
        }
    }
    // Ana's conversation marks and claims went with them.
    assert_eq!(chat.mark_read("bo", "ana", 5).await.unwrap(), 0);
    assert!(chat
        .claim_email_slot("bo", "ana", NOW + 1, 60_000)
        .await
        .unwrap());

    let check = |chat: Arc<dyn ChatStore>| async move {
        use courier::store::chat::HistoryPage;
        let all = HistoryPage::Latest { limit: usize::MAX };
        assert_eq!(chat.user_by_id("ana").await.unwrap(), None);
        assert_eq!(chat.user_by_email("ana@example.com").await.unwrap(), None);
        let ids: Vec<String> = chat
            .users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(ids, ["bo", "cy"]);
        assert!(chat.history("ana", "bo", all).await.unwrap().is_empty());
        assert!(chat.history("cy", "ana", all).await.unwrap().is_empty());
        assert_eq!(chat.history("bo", "cy", all).await.unwrap().len(), 1);
        assert_eq!(chat.message("m1").await.unwrap(), None);
        assert_eq!(chat.message("m4").await.unwrap().map(|m| m.seq), Some(1));
        assert_eq!(
            chat.message_count().await.unwrap(),
            4,
            "messages ever stored"
        );
        assert!(chat.conversations("ana").await.unwrap().is_empty());
        for (user, other) in [("bo", "cy"), ("cy", "bo")] {
            let others: Vec<String> = chat
                .conversations(user)
                .await
                .unwrap()
                .into_iter()
                .map(|summary| summary.other_id)
                .collect();
            assert_eq!(others, [other], "{user}'s conversations");
        }
        assert_eq!(
            chat.account_state("ana").await.unwrap(),
            AccountState::default()
        );
        assert!(chat.sessions_of("ana").await.unwrap().is_empty());
        assert_eq!(chat.session("s1").await.unwrap(), None);
        assert!(chat.session("s2").await.unwrap().is_some());
        assert!(chat.blocked_users("ana").await.unwrap().is_empty());
        assert!(chat.blockers_of("ana").await.unwrap().is_empty());
        assert_eq!(chat.blocked_users("cy").await.unwrap(), ["bo"]);
        assert_eq!(chat.blockers_of("bo").await.unwrap(), ["cy"]);
        assert_eq!(chat.disabled_at("ana").await.unwrap(), None);
        chat
    };
    let chat = check(chat).await;
    let chat = backend.reopen(chat, dir.path()).await;
    let chat = check(chat).await;
    // The e-mail address is free again.
    let again = UserRecord {
        id: "dee".to_owned(),
        ..account("ana", NOW + 9)
    };
    assert_eq!(chat.create_user(again).await.unwrap(), CreateUser::Created);
}
