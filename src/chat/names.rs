//! Display names: what a name may contain, and how two names that a person would read as the
//! same are told apart.
//!
//! A name is shown to other people, so characters that change how the text around them is
//! displayed are removed: bidirectional controls (a right-to-left override makes "Alice" display
//! as "ecilA" and can reverse what follows it), invisible spaces and joiners that make two
//! identical-looking names different strings, and control characters. The zero-width joiner stays:
//! emoji sequences need it.

/// Longest display name, in characters.
pub const MAX_NAME_LEN: usize = 100;

/// Characters that are never kept in a name.
fn is_hidden(c: char) -> bool {
    matches!(
        c,
        // Bidirectional embeddings, overrides and isolates; the marks.
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        // Zero-width space and non-joiner, word joiner and invisible operators, byte-order mark.
        | '\u{200B}' | '\u{200C}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
        // Soft hyphen, Hangul fillers, the Mongolian vowel separator: invisible on their own.
        | '\u{00AD}' | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{180E}'
    ) || c.is_control()
}

/// The name as it is stored and shown: hidden characters removed, runs of white space made one
/// space, trimmed. Applied to stored names on the way out too, so a name saved before this rule
/// displays safely.
pub fn clean(name: &str) -> String {
    let mut cleaned = String::with_capacity(name.len());
    let mut pending_space = false;
    for c in name.chars().filter(|&c| !is_hidden(c) || c.is_whitespace()) {
        if c.is_whitespace() {
            pending_space = !cleaned.is_empty();
        } else {
            if pending_space {
                cleaned.push(' ');
                pending_space = false;
            }
            cleaned.push(c);
        }
    }
    cleaned
}

/// The cleaned name, or why it was refused (for the client).
pub fn check(name: &str) -> Result<String, String> {
    let cleaned = clean(name);
    if cleaned.is_empty() {
        return Err("Full name is required".to_owned());
    }
    if cleaned.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "Full name must be at most {MAX_NAME_LEN} characters"
        ));
    }
    Ok(cleaned)
}

/// What two names share when a person would read them as the same: case, spacing and
/// punctuation ignored. Used to find names that need telling apart, never to refuse one.
pub fn likeness(name: &str) -> String {
    clean(name)
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A short tag that tells apart two users whose names look the same: four characters derived
/// from the user's id, stable for the life of the account and revealing nothing about it.
pub fn tag(user_id: &str) -> String {
    // FNV-1a: tiny, stable across versions and platforms (unlike std's hasher).
    let mut hash: u32 = 0x811c_9dc5;
    for byte in user_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // Crockford's base32 without I, L, O, U: no letter reads as a digit.
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    (0..4)
        .map(|i| char::from(ALPHABET[((hash >> (i * 5)) & 31) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_overrides_and_invisible_characters_are_removed() {
        assert_eq!(clean("\u{202E}ecilA\u{202C} Martin"), "ecilA Martin");
        assert_eq!(clean("Al\u{200B}ice\u{2067}"), "Alice");
        assert_eq!(clean("  Alice \t\n  Martin "), "Alice Martin");
        assert_eq!(clean("Bob\u{0007}"), "Bob");
        // Emoji sequences keep their joiner.
        assert_eq!(
            clean("Ana \u{1F469}\u{200D}\u{1F4BB}"),
            "Ana \u{1F469}\u{200D}\u{1F4BB}"
        );
        assert!(check("\u{202E}\u{200B} ").is_err());
        assert!(check(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert_eq!(check(" Zoë ").unwrap(), "Zoë");
    }

    #[test]
    fn look_alike_names_share_a_likeness_and_tags_differ() {
        assert_eq!(likeness("Alice Martin"), likeness("alice  martin."));
        assert_eq!(likeness("Alice\u{200B}Martin"), likeness("ALICE-MARTIN"));
        assert_ne!(likeness("Alice Martin"), likeness("Alice Marti"));
        let first = tag("65f0c0a1b2c3d4e5f6a7b8c9");
        assert_eq!(first.len(), 4);
        assert_eq!(first, tag("65f0c0a1b2c3d4e5f6a7b8c9"), "stable");
        assert_ne!(first, tag("65f0c0a1b2c3d4e5f6a7b8ca"));
    }
}
