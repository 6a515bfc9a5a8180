//! Account states and single-use tokens in the sled chat store: defaults, changes that race,
//! tokens consumed exactly once (even by concurrent takers), expiry, sessions, and all of it
//! after a reopen.

mod common;

use std::sync::Arc;

use courier::store::accounts::{AccountState, OneTimeToken, SessionRecord, TokenPurpose};
use courier::store::chat::{AccountChange, ChatStore};

const NOW: u64 = 1_700_000_000_000;

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

#[tokio::test]
async fn account_states_default_change_together_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, chat) = common::open_stores(dir.path()).await;
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

    drop((jobs, chat));
    let (_jobs, chat) = common::open_stores(dir.path()).await;
    assert_eq!(chat.account_state(user).await.unwrap(), expected);
    assert!(chat.account_state("bad:id").await.is_err());
}

#[tokio::test]
async fn a_token_is_consumed_once_even_by_concurrent_takers() {
    let dir = tempfile::tempdir().unwrap();
    let (_jobs, chat) = common::open_stores(dir.path()).await;
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

#[tokio::test]
async fn expired_tokens_are_refused_and_swept_and_used_ones_stay_used_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, chat) = common::open_stores(dir.path()).await;
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

    drop((jobs, chat));
    let (_jobs, chat) = common::open_stores(dir.path()).await;
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

#[tokio::test]
async fn concurrent_changes_to_one_user_all_land() {
    use courier::store::chat::{CreateUser, UserChange, UserRecord};

    let dir = tempfile::tempdir().unwrap();
    let (jobs, chat) = common::open_stores(dir.path()).await;
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
    drop((jobs, chat));
    let (_jobs, chat) = common::open_stores(dir.path()).await;
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

#[tokio::test]
async fn sessions_are_listed_per_user_ended_for_good_and_swept_when_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, chat) = common::open_stores(dir.path()).await;
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
    drop((jobs, chat));
    let (_jobs, chat) = common::open_stores(dir.path()).await;
    assert_eq!(ids(chat.sessions_of(ana).await.unwrap()), ["s4"]);
    assert_eq!(
        chat.session("s2").await.unwrap(),
        None,
        "an ended session stays ended"
    );
    assert_eq!(ids(chat.sessions_of(bo).await.unwrap()), ["s3"]);
}
