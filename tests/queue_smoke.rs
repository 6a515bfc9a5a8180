//! A hundred jobs through the engine, on every job store backend.

use std::sync::Arc;
use std::time::Duration;

use courier::queue::model::JobOptions;
use courier::queue::{LocalHub, QueueConfig, QueueManager};
use serde_json::json;

#[macro_use]
mod job_backends;

use job_backends::Backend;

on_every_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn smoke;
}

async fn smoke(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
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
