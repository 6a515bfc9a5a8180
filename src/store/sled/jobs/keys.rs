//! The job tree's key layouts: `d<queue>\0<id>` spec, `s<queue>\0<id>` status,
//! `l<queue>\0<id>\0<n BE>` log line, `p<queue>` paused, `m:order` the id counter. Frozen by
//! the golden test below: a stored key that changes is a job that is no longer found.

pub(super) const SPEC: u8 = b'd';
pub(super) const STATUS: u8 = b's';
pub(super) const LOG: u8 = b'l';
pub(super) const PAUSED: u8 = b'p';
pub(super) const COUNTER_KEY: &[u8] = b"m:order";

pub(super) fn key(kind: u8, queue: &str, id: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(2 + queue.len() + id.len());
    bytes.push(kind);
    bytes.extend_from_slice(queue.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(id.as_bytes());
    bytes
}

pub(super) fn log_key(queue: &str, id: &str, n: u32) -> Vec<u8> {
    let mut bytes = key(LOG, queue, id);
    bytes.push(0);
    bytes.extend_from_slice(&n.to_be_bytes());
    bytes
}

pub(super) fn paused_key(queue: &str) -> Vec<u8> {
    let mut bytes = vec![PAUSED];
    bytes.extend_from_slice(queue.as_bytes());
    bytes
}

/// Splits a spec or status key into (queue, id).
pub(super) fn split_key(bytes: &[u8]) -> Option<(String, String)> {
    let rest = bytes.get(1..)?;
    let zero = rest.iter().position(|&b| b == 0)?;
    let queue = std::str::from_utf8(&rest[..zero]).ok()?;
    let id = std::str::from_utf8(&rest[zero + 1..]).ok()?;
    Some((queue.to_owned(), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Golden bytes of the job tree's key layouts, one per kind. If this fails, stored jobs would
    /// no longer be found: never edit the hex (see `store::codec`'s golden tests for what to do
    /// instead).
    #[test]
    fn key_layouts_are_frozen() {
        assert_eq!(hex(&key(SPEC, "mail", "7")), "646d61696c0037");
        assert_eq!(hex(&key(STATUS, "mail", "7")), "736d61696c0037");
        assert_eq!(hex(&log_key("mail", "7", 258)), "6c6d61696c00370000000102");
        assert_eq!(hex(&paused_key("mail")), "706d61696c");
        assert_eq!(hex(COUNTER_KEY), "6d3a6f72646572");
    }

    #[test]
    fn spec_and_status_keys_split_back_into_queue_and_id() {
        let stored = key(STATUS, "mail", "invoice-7");
        assert_eq!(
            split_key(&stored),
            Some(("mail".to_owned(), "invoice-7".to_owned()))
        );
        assert_eq!(split_key(b"s"), None);
        assert_eq!(split_key(b"smail"), None);
    }
}
