//! The dashboard's cookie: a signed, expiring session instead of the admin key.
//!
//! A value reads `v1.<expiry>.<nonce>.<mac>`: the Unix second it stops working, 16 random bytes
//! (hex) that name this sign-in, and the HMAC-SHA256 (hex) of `v1.<expiry>.<nonce>` under a key
//! derived from the admin key. The key itself is never in the cookie, so a copy of the cookie
//! (a browser profile, a proxy log) is worth at most one session, and changing the admin key
//! ends every session at once.
//!
//! Knows nothing of HTTP: it makes and checks values; `key.rs` carries them.

use std::collections::HashMap;

use hmac::{Hmac, Mac as _};
use parking_lot::Mutex;
use sha2::Sha256;

/// The format tag; a new format takes the next one, and old values are refused.
const VERSION: &str = "v1";
/// Signed-out sessions remembered at most; the list only takes sessions that verified, so
/// reaching it takes as many sign-ins with the key.
const REVOKED_LIMIT: usize = 10_000;

type HmacSha256 = Hmac<Sha256>;

/// Makes and checks dashboard sessions for one admin key, and remembers the ones signed out.
///
/// A signed value cannot be recalled, so signing out is kept in memory: the nonces of sessions
/// signed out before their expiry, each dropped once it would have expired anyway. After a
/// restart that memory is gone, and a copy of a signed-out cookie taken earlier would work again
/// until its expiry (12 hours at most). The browser has deleted its own copy by then; to end
/// every session for certain, change the admin key.
pub struct DashboardSessions {
    key: [u8; 32],
    /// Nonce → expiry of each session signed out early.
    revoked: Mutex<HashMap<[u8; 16], u64>>,
}

/// A session whose signature and expiry were checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    nonce: [u8; 16],
    expires_at: u64,
}

impl DashboardSessions {
    /// Sessions signed with a key derived from `admin_key` (HMAC-SHA256 keyed by the admin key
    /// over a fixed label), so the signing key is the admin key's alone and no other use of the
    /// admin key yields it.
    pub fn new(admin_key: &str) -> DashboardSessions {
        let mut derive = hmac_with(admin_key.as_bytes());
        derive.update(b"courier admin session");
        DashboardSessions {
            key: derive.finalize().into_bytes().into(),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    /// A new session that ends `lifetime_secs` after `now_secs`.
    pub fn sign_in(&self, now_secs: u64, lifetime_secs: u64) -> String {
        self.value(now_secs.saturating_add(lifetime_secs), rand::random())
    }

    /// The session `value` carries, if its signature is right, it has not expired at
    /// `now_secs` and it was not signed out.
    pub fn check(&self, value: &str, now_secs: u64) -> Option<Session> {
        let session = self.verify(value, now_secs)?;
        let revoked = self.revoked.lock().contains_key(&session.nonce);
        (!revoked).then_some(session)
    }

    /// Remembers that `value`'s session was signed out (nothing happens when it does not
    /// verify, so this cannot be used to fill memory).
    pub fn sign_out(&self, value: &str, now_secs: u64) {
        let Some(session) = self.verify(value, now_secs) else {
            return;
        };
        let mut revoked = self.revoked.lock();
        revoked.retain(|_, expires_at| *expires_at > now_secs);
        if revoked.len() >= REVOKED_LIMIT {
            tracing::warn!(
                limit = REVOKED_LIMIT,
                "too many dashboard sessions signed out; this one stays valid until it expires"
            );
            return;
        }
        revoked.insert(session.nonce, session.expires_at);
    }

    fn value(&self, expires_at: u64, nonce: [u8; 16]) -> String {
        let signed = format!("{VERSION}.{expires_at}.{}", hex::encode(nonce));
        let mut mac = hmac_with(&self.key);
        mac.update(signed.as_bytes());
        format!("{signed}.{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Signature and expiry only.
    fn verify(&self, value: &str, now_secs: u64) -> Option<Session> {
        let (signed, mac_hex) = value.rsplit_once('.')?;
        let mut parts = signed.split('.');
        let (version, expiry, nonce_hex) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != VERSION {
            return None;
        }
        let tag = decode_hex::<32>(mac_hex)?;
        let mut mac = hmac_with(&self.key);
        mac.update(signed.as_bytes());
        // Constant time: `verify_slice` compares every byte, without an early exit.
        mac.verify_slice(&tag).ok()?;
        // The signature covers these exact bytes, so they are as they were signed.
        let expires_at: u64 = expiry.parse().ok()?;
        let nonce = decode_hex::<16>(nonce_hex)?;
        (now_secs < expires_at).then_some(Session { nonce, expires_at })
    }
}

fn hmac_with(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"))
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef-admin";
    const NOW: u64 = 1_800_000_000;
    const HOUR: u64 = 3600;

    #[test]
    fn a_session_works_until_it_expires_and_holds_no_key() {
        let sessions = DashboardSessions::new(KEY);
        let value = sessions.sign_in(NOW, 12 * HOUR);
        assert!(
            value.starts_with(&format!("v1.{}.", NOW + 12 * HOUR)),
            "{value}"
        );
        assert!(!value.contains(KEY) && !value.contains(&hex::encode(KEY)));
        let session = sessions.check(&value, NOW).unwrap();
        assert_eq!(session.expires_at, NOW + 12 * HOUR);
        assert!(sessions.check(&value, NOW + 12 * HOUR - 1).is_some());
        assert_eq!(sessions.check(&value, NOW + 12 * HOUR), None, "expired");
        // Two sign-ins are two sessions.
        assert_ne!(sessions.sign_in(NOW, HOUR), sessions.sign_in(NOW, HOUR));
    }

    #[test]
    fn a_session_signed_with_a_past_expiry_is_refused() {
        let sessions = DashboardSessions::new(KEY);
        let expired = sessions.value(NOW - 1, [7; 16]);
        assert_eq!(sessions.check(&expired, NOW), None);
        let current = sessions.value(NOW + 1, [7; 16]);
        assert!(sessions.check(&current, NOW).is_some());
    }

    #[test]
    fn tampered_and_malformed_values_are_refused() {
        let sessions = DashboardSessions::new(KEY);
        let value = sessions.value(NOW + HOUR, [9; 16]);
        let (signed, mac) = value.rsplit_once('.').unwrap();
        let later = value.replacen(
            &format!(".{}.", NOW + HOUR),
            &format!(".{}.", NOW + 99 * HOUR),
            1,
        );
        let other_nonce = format!("v1.{}.{}.{mac}", NOW + HOUR, hex::encode([8u8; 16]));
        let flipped = format!(
            "{signed}.{}{}",
            if mac.starts_with('0') { '1' } else { '0' },
            &mac[1..]
        );
        let v2 = value.replacen("v1.", "v2.", 1);
        let plus = value.replacen(
            &format!(".{}.", NOW + HOUR),
            &format!(".+{}.", NOW + HOUR),
            1,
        );
        for bad in [
            later.as_str(),
            other_nonce.as_str(),
            flipped.as_str(),
            v2.as_str(),
            plus.as_str(),
            signed,
            &value[..value.len() - 2],
            &format!("{value}.extra"),
            "",
            "v1...",
            &hex::encode(KEY),
            KEY,
        ] {
            assert_eq!(sessions.check(bad, NOW), None, "{bad:?}");
        }
        assert!(sessions.check(&value, NOW).is_some());
    }

    #[test]
    fn another_admin_key_refuses_every_session() {
        let value = DashboardSessions::new(KEY).sign_in(NOW, HOUR);
        let rotated = DashboardSessions::new("another key of at least thirty-two characters");
        assert_eq!(rotated.check(&value, NOW), None);
    }

    #[test]
    fn a_signed_out_session_stays_refused_until_it_would_have_expired() {
        let sessions = DashboardSessions::new(KEY);
        let kept = sessions.sign_in(NOW, HOUR);
        let ended = sessions.sign_in(NOW, HOUR);
        sessions.sign_out(&ended, NOW + 1);
        assert_eq!(sessions.check(&ended, NOW + 2), None);
        assert!(sessions.check(&kept, NOW + 2).is_some());
        // Values that do not verify are not remembered; expired entries are swept.
        sessions.sign_out("v1.1.00.00", NOW);
        assert_eq!(sessions.revoked.lock().len(), 1);
        let next = sessions.sign_in(NOW + 2 * HOUR, HOUR);
        sessions.sign_out(&next, NOW + 2 * HOUR);
        assert_eq!(
            sessions.revoked.lock().len(),
            1,
            "the expired one was dropped"
        );
    }
}
