//! The message queue keeps each conversation in send order through its job group: a burst of
//! messages sent while many workers run is saved (`seq`) and listed in the order it was sent,
//! while another conversation's messages interleave freely. (Backlogs, paused and left across a
//! restart, are covered in `chat_api.rs`.)

mod common;

use common::{eventually, texts, TestServer, User};

#[tokio::test]
async fn a_burst_in_one_conversation_is_saved_in_send_order_with_many_workers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    let alice = User::signup(&server, "Alice").await;
    let bob = User::signup(&server, "Bob").await;
    let carol = User::signup(&server, "Carol").await;
    let mut sent = Vec::new();
    let mut sent_to_carol = Vec::new();
    // Both directions of one conversation, and a second conversation in between.
    for n in 0..60 {
        let text = format!("burst {n:02}");
        match n % 4 {
            0 | 1 => alice.send(&bob, &text).await,
            2 => bob.send(&alice, &text).await,
            _ => {
                alice.send(&carol, &text).await;
                sent_to_carol.push(text);
                continue;
            }
        };
        sent.push(text);
    }
    eventually("the whole burst in the history", || async {
        alice.history(&bob, "").await.len() == sent.len()
            && alice.history(&carol, "").await.len() == sent_to_carol.len()
    })
    .await;
    let history = alice.history(&bob, "").await;
    assert_eq!(texts(&history), sent);
    let seqs: Vec<u64> = history
        .iter()
        .map(|message| message["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=sent.len() as u64).collect::<Vec<_>>());
    assert_eq!(alice.history_texts(&carol, "").await, sent_to_carol);
    server.stop().await;
}
