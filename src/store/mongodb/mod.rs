//! The MongoDB chat store (cargo feature `mongodb`): users and messages in the MERN app's
//! collections, shared by several Courier instances.
//!
//! Not written yet: asking for it stops start-up with a clear message rather than falling back
//! to sled behind the operator's back.

use std::sync::Arc;

use super::chat::ChatStore;
use super::StoreError;

/// Opens the chat store on the MongoDB deployment at `uri`.
pub fn open(uri: &str) -> Result<Arc<dyn ChatStore>, StoreError> {
    let _ = uri;
    Err(StoreError::Unsupported(
        "CHAT_BACKEND=mongodb: this courier has the `mongodb` feature, but its MongoDB chat \
         store is not implemented yet; use CHAT_BACKEND=sled"
            .to_owned(),
    ))
}
