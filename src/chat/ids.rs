//! ObjectId-style identifiers: 4-byte seconds, 5 random bytes, 3-byte counter, as 24 hex digits.
//!
//! They sort by creation time, are unique without coordination, and are valid MongoDB `_id`s, so
//! data can move between the embedded and MongoDB backends unchanged.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

fn process_random() -> &'static [u8; 5] {
    static RANDOM: OnceLock<[u8; 5]> = OnceLock::new();
    RANDOM.get_or_init(rand::random)
}

static COUNTER: OnceLock<AtomicU32> = OnceLock::new();

/// A new 24-hex-digit id.
pub fn new_id() -> String {
    let seconds = crate::time::now_secs() as u32;
    let counter = COUNTER
        .get_or_init(|| AtomicU32::new(rand::random::<u32>()))
        .fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&seconds.to_be_bytes());
    bytes[4..9].copy_from_slice(process_random());
    bytes[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
    hex::encode(bytes)
}

/// Whether `text` looks like an id made by [`new_id`] (24 lowercase hex digits).
pub fn is_id(text: &str) -> bool {
    text.len() == 24
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_well_formed_and_time_ordered() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        assert!(ids.iter().all(|id| is_id(id)));
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids[0][..8] <= ids[999][..8]);
        assert!(!is_id("not-an-id"));
        assert!(!is_id("ABCDEF0123456789ABCDEF01"));
    }
}
