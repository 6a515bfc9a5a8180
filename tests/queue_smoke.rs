use std::sync::Arc;
use std::time::Duration;

use courier::queue::model::JobOptions;
use courier::queue::{LocalHub, QueueConfig, QueueManager};
use courier::store::{self, StoreConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&StoreConfig::sled(dir.path()))
        .map(|stores| stores.jobs)
        .unwrap();
    let manager = QueueManager::new(store, Arc::new(LocalHub::default()));
    let mut config = QueueConfig::new("message");
    config.concurrency = 4;
    let queue = manager.register(config).await.unwrap();
    queue.process("*", |job: courier::queue::JobContext| async move {
        Ok(json!({"echo": job.data}))
    });
    manager.start();
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(
            queue
                .add("x", &json!({"n": n}), JobOptions::default())
                .await
                .unwrap()
                .id,
        );
    }
    for _ in 0..200 {
        if queue.counts().await.unwrap().completed == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let counts = queue.counts().await.unwrap();
    assert_eq!(counts.completed, 100, "{counts:?}");
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}
