use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Golden bytes of the chat tree's key layouts and of its private record. If this fails,
/// stored keys would no longer be found: never edit the hex (see `store::codec`'s golden
/// tests for what to do instead).
#[test]
fn key_layouts_are_frozen() {
    assert_eq!(hex(&key(USER, "u1")), "757531");
    assert_eq!(hex(&key(EMAIL, "a@b.c")), "656140622e63");
    assert_eq!(
        hex(&message_key("u1:u2", 258)),
        "6375313a7532000000000000000102"
    );
    assert_eq!(hex(&key(MESSAGE_ID, "m1")), "696d31");
    assert_eq!(hex(&pair_key(PARTNER, "u1", "u2")), "707531007532");
    assert_eq!(
        hex(&pair_key(READ_MARK, "u1:u2", "u1")),
        "7275313a7532007531"
    );
    assert_eq!(hex(&key(EMAIL_CLAIM, "a@b.c")), "786140622e63");
    assert_eq!(hex(COUNT_KEY), "6d3a636f756e74");
    assert_eq!(hex(&key(accounts::ACCOUNT, "u1")), "617531");
    assert_eq!(hex(&pair_key(accounts::BLOCK, "u1", "u2")), "627531007532");
    assert_eq!(
        hex(&pair_key(accounts::BLOCKED_BY, "u2", "u1")),
        "427532007531"
    );
    assert_eq!(hex(&key(sessions::SESSION, "s1")), "737331");
    assert_eq!(
        hex(&pair_key(sessions::USER_SESSION, "u1", "s1")),
        "537531007331"
    );
}

#[test]
fn message_ref_is_frozen() {
    crate::store::codec::golden::golden(
        &MessageRef {
            conversation: "u1:u2".to_owned(),
            seq: 300,
        },
        "010575313a7532ac02",
    );
}

#[test]
fn message_keys_sort_by_conversation_then_seq() {
    let conversation = conversation_id("b", "a");
    assert_eq!(conversation, "a:b");
    assert!(message_key(&conversation, 2) < message_key(&conversation, 10));
    assert!(message_key(&conversation, u64::MAX) < message_key("a:c", 0));
    assert_eq!(seq_of(&message_key(&conversation, 258)).unwrap(), 258);
    assert!(seq_of(b"short").is_err());
}

#[test]
fn ids_that_would_break_keys_are_refused() {
    assert!(check_id("65a1b2c3d4e5f60718293a4b").is_ok());
    assert!(check_id("a:b").is_err());
    assert!(check_id("a\0b").is_err());
}

#[test]
fn lifecycle_key_layouts_are_frozen() {
    use super::keys::{FILE_REF, FILE_REFS_MARK};
    assert_eq!(
        hex(&change_key("u1:u2", 258)),
        "6b75313a7532000000000000000102"
    );
    assert_eq!(hex(&change_key("g1", 1)), "6b6731000000000000000001");
    assert_eq!(hex(&file_ref_key("/u/x", "m1")), "682f752f78006d31");
    assert_eq!(hex(&key(FILE_REF, "a")), "6861");
    assert_eq!(hex(FILE_REFS_MARK), "6d3a66696c652d72656673");
}

/// Data from before format 2 has messages with images and no file references: the first open
/// indexes them (once), so deleting a new message with the same image does not release a file
/// an old message still shows.
#[test]
fn the_first_open_indexes_the_files_of_old_messages() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("plain")).unwrap();
    let tree = db.open_tree("chat").unwrap();
    let old = crate::store::chat::v1::MessageRecord {
        id: "m1".to_owned(),
        sender_id: "a".to_owned(),
        receiver_id: "b".to_owned(),
        text: String::new(),
        image: "/uploads/old".to_owned(),
        seq: 1,
        created_at: 1,
        updated_at: 1,
    };
    tree.insert(message_key("a:b", 1), encode(&old).unwrap())
        .unwrap();
    changes::index_file_refs(&tree).unwrap();
    assert!(tree
        .contains_key(file_ref_key("/uploads/old", "m1"))
        .unwrap());
    assert!(tree.contains_key(keys::FILE_REFS_MARK).unwrap());
    // Once marked, it does not run again (a removed reference stays removed).
    tree.remove(file_ref_key("/uploads/old", "m1")).unwrap();
    changes::index_file_refs(&tree).unwrap();
    assert!(!tree
        .contains_key(file_ref_key("/uploads/old", "m1"))
        .unwrap());
}
