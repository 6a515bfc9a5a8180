//! Errors of the queue layer.

use crate::store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    #[error("unknown queue {0}")]
    UnknownQueue(String),
    #[error("invalid job options: {0}")]
    InvalidOptions(String),
    #[error("job data is {size} bytes, over the limit of {limit}")]
    DataTooLarge { size: usize, limit: usize },
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("job {0} is active: cancel it first")]
    JobActive(String),
    #[error("job {id} is {state}, not {expected}")]
    WrongState {
        id: String,
        state: String,
        expected: &'static str,
    },
    #[error("queue {0} is already registered")]
    AlreadyRegistered(String),
    #[error("the queue engine is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}
