//! Tests of the commit thread and its handles.

use super::*;
use crate::store::sled::open_db;

fn put(key: &str, value: &str) -> Write {
    Write::Put(key.as_bytes().to_vec(), value.as_bytes().to_vec())
}

async fn durable(committer: &Committer, writes: Vec<Write>) {
    committer
        .submit_durable(writes, 0, None)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn each_tree_gets_its_own_writes_even_beside_an_empty_commit() {
    let dir = tempfile::tempdir().unwrap();
    let database = open_db(dir.path()).unwrap();
    let db = database.sled().clone();
    let jobs = Committer::start(
        database.sled(),
        database.take_log().unwrap(),
        db.open_tree("jobs").unwrap(),
        b"c".to_vec(),
        0,
        true,
    )
    .unwrap();
    let chat = jobs.share(db.open_tree("chat").unwrap(), b"c".to_vec(), 0, false);
    for round in 0..50 {
        // An empty durable commit of one tree queued just before another tree's writes:
        // they usually share a cycle.
        let flushed = jobs.submit_durable(Vec::new(), 0, None);
        let key = format!("k{round}");
        durable(&chat, vec![put(&key, "chat")]).await;
        flushed.await.unwrap().unwrap();
        assert_eq!(
            chat.get(key.as_bytes()).unwrap().as_deref(),
            Some(&b"chat"[..])
        );
        assert_eq!(jobs.get(key.as_bytes()).unwrap(), None, "round {round}");
    }
    jobs.close();
}

#[tokio::test]
async fn the_overlay_serves_reads_and_a_short_lived_key_never_reaches_sled() {
    let dir = tempfile::tempdir().unwrap();
    {
        let database = open_db(dir.path()).unwrap();
        let tree = database.sled().open_tree("jobs").unwrap();
        let jobs = Committer::start(
            database.sled(),
            database.take_log().unwrap(),
            tree.clone(),
            b"c".to_vec(),
            0,
            true,
        )
        .unwrap();
        durable(&jobs, vec![put("kept", "1"), put("gone", "1")]).await;
        jobs.close();
        assert_eq!(tree.get("kept").unwrap().as_deref(), Some(&b"1"[..]));
    }
    let database = open_db(dir.path()).unwrap();
    let tree = database.sled().open_tree("jobs").unwrap();
    let jobs = Committer::start(
        database.sled(),
        database.take_log().unwrap(),
        tree.clone(),
        b"c".to_vec(),
        0,
        true,
    )
    .unwrap();
    durable(
        &jobs,
        vec![
            Write::PutNew(b"new".to_vec(), b"1".to_vec()),
            put("kept", "2"),
            Write::Delete(b"gone".to_vec()),
        ],
    )
    .await;
    // Read through the overlay; sled has not seen any of it yet.
    assert_eq!(jobs.get(b"new").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(jobs.get(b"kept").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(jobs.get(b"gone").unwrap(), None);
    assert_eq!(tree.get("kept").unwrap().as_deref(), Some(&b"1"[..]));
    assert!(tree.get("gone").unwrap().is_some());
    // A new key deleted in the same window leaves no trace, not even a tombstone.
    durable(&jobs, vec![Write::Delete(b"new".to_vec())]).await;
    let overlay = jobs.target.overlay.as_ref().unwrap();
    assert!(!overlay.slots.read().contains_key(&b"new"[..]));
    assert!(overlay.slots.read().contains_key(&b"gone"[..]));
    // The checkpoint at close folds the rest into sled.
    jobs.close();
    assert_eq!(tree.get("kept").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(tree.get("gone").unwrap(), None);
    assert_eq!(tree.get("new").unwrap(), None);
}

#[test]
fn a_checkpoint_moves_only_the_slots_that_arrived_before_it_a_chunk_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let database = open_db(dir.path()).unwrap();
    let tree = database.sled().open_tree("jobs").unwrap();
    tree.insert("old", "sled").unwrap();
    let overlay = Overlay::default();
    let some = |value: &str| Some(value.as_bytes().to_vec());
    let before: Vec<KeyWrite> = (0..40)
        .map(|n| (format!("a{n:02}").into_bytes(), some("1")))
        .chain([(b"old".to_vec(), None), (b"brief".to_vec(), some("1"))])
        .collect();
    let mut fresh = vec![true; 40];
    fresh.extend([false, true]);
    overlay.apply(before, fresh);
    let boundary = overlay.boundary();
    // After the checkpoint: a new key, an update of an older slot, and a short-lived key gone.
    overlay.apply(
        vec![
            (b"b".to_vec(), some("1")),
            (b"a05".to_vec(), some("2")),
            (b"brief".to_vec(), None),
        ],
        vec![true, false, false],
    );
    let mut steps = 1;
    while !overlay.fold_step(&tree, boundary, 16).unwrap() {
        steps += 1;
        assert!(steps < 10, "the fold never finishes");
    }
    // 42 arrivals before the boundary, 16 at a time.
    assert_eq!(steps, 3);
    for n in 0..40 {
        let expected: &[u8] = if n == 5 { b"2" } else { b"1" };
        assert_eq!(
            tree.get(format!("a{n:02}")).unwrap().as_deref(),
            Some(expected)
        );
    }
    assert_eq!(tree.get("old").unwrap(), None);
    assert_eq!(tree.get("brief").unwrap(), None);
    // What arrived after the checkpoint stays in memory, for the next log to cover.
    assert_eq!(tree.get("b").unwrap(), None);
    let slots = overlay.slots.read();
    assert_eq!(slots.len(), 1);
    assert!(slots.contains_key(&b"b"[..]));
}

#[tokio::test]
async fn a_checkpoint_completes_while_no_commit_comes() {
    let dir = tempfile::tempdir().unwrap();
    let policy = CheckpointPolicy {
        bytes: 1,
        age: Duration::from_secs(60),
    };
    let database = open_db(dir.path()).unwrap();
    let tree = database.sled().open_tree("jobs").unwrap();
    let jobs = Committer::start_with(
        database.sled(),
        database.take_log().unwrap(),
        tree.clone(),
        b"c".to_vec(),
        0,
        true,
        policy,
    )
    .unwrap();
    let writes = (0..500)
        .map(|n| Write::PutNew(format!("k{n:03}").into_bytes(), b"1".to_vec()))
        .collect();
    // One cycle, then silence: the checkpoint it starts moves its 500 slots while idle.
    durable(&jobs, writes).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while jobs.checkpoint_count() == 0 {
        assert!(Instant::now() < deadline, "the checkpoint never completed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tree.len(), 500, "every slot is in sled");
    assert!(jobs
        .target
        .overlay
        .as_ref()
        .unwrap()
        .slots
        .read()
        .is_empty());
    jobs.close();
}

#[tokio::test]
async fn writes_survive_many_checkpoints_taken_while_commits_go_on() {
    let dir = tempfile::tempdir().unwrap();
    // A checkpoint after every cycle, whenever the previous one is done.
    let policy = CheckpointPolicy {
        bytes: 1,
        age: Duration::from_secs(5),
    };
    let rounds = 300;
    {
        let database = open_db(dir.path()).unwrap();
        let db = database.sled().clone();
        let jobs = Arc::new(
            Committer::start_with(
                database.sled(),
                database.take_log().unwrap(),
                db.open_tree("jobs").unwrap(),
                b"c".to_vec(),
                0,
                true,
                policy,
            )
            .unwrap(),
        );
        let chat = Arc::new(jobs.share(db.open_tree("chat").unwrap(), b"c".to_vec(), 0, false));
        let mut tasks = Vec::new();
        for writer in 0..4 {
            let (jobs, chat) = (jobs.clone(), chat.clone());
            tasks.push(tokio::spawn(async move {
                for round in 0..rounds {
                    let key = format!("w{writer}-{round}");
                    durable(
                        &jobs,
                        vec![Write::PutNew(key.clone().into_bytes(), b"1".to_vec())],
                    )
                    .await;
                    durable(&chat, vec![put(&key, "chat")]).await;
                    // Every other job goes away again, as finished jobs do.
                    let value = if round % 2 == 0 { "2" } else { "gone" };
                    let write = if value == "gone" {
                        Write::Delete(key.clone().into_bytes())
                    } else {
                        put(&key, value)
                    };
                    durable(&jobs, vec![write]).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert!(
            jobs.checkpoint_count() >= 5,
            "only {} checkpoints",
            jobs.checkpoint_count()
        );
        drop(chat);
        jobs.close();
    }
    let database = open_db(dir.path()).unwrap();
    let jobs = database.sled().open_tree("jobs").unwrap();
    let chat = database.sled().open_tree("chat").unwrap();
    for writer in 0..4 {
        for round in 0..rounds {
            let key = format!("w{writer}-{round}");
            let expected = (round % 2 == 0).then_some(&b"2"[..]);
            assert_eq!(jobs.get(&key).unwrap().as_deref(), expected, "{key}");
            assert_eq!(chat.get(&key).unwrap().as_deref(), Some(&b"chat"[..]));
        }
    }
}
