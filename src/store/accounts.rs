//! Account records kept beside the user record: what a user has proven and chosen (a verified
//! e-mail address, whether they want notification e-mails), and single-use tokens sent by
//! e-mail (address verification, password reset).
//!
//! They are records of their own rather than fields of `UserRecord`, so that adding one does
//! not change the stored user format. Only a token's SHA-256 is stored: a copy of the database
//! holds no link that works.

use serde::{Deserialize, Serialize};

use crate::store::job::Millis;

/// What a user has proven and chosen about their e-mail. A user with no stored record has the
/// [`Default`]: unverified, notifications on (sent once verified).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The address verified, and when; a changed address is unverified again.
    pub verified_email: Option<(String, Millis)>,
    /// Whether notification e-mails are wanted (the unsubscribe link turns this off).
    pub email_notifications: bool,
}

impl Default for AccountState {
    fn default() -> AccountState {
        AccountState {
            verified_email: None,
            email_notifications: true,
        }
    }
}

impl AccountState {
    /// Whether `email` is the address this user verified.
    pub fn has_verified(&self, email: &str) -> bool {
        self.verified_email
            .as_ref()
            .is_some_and(|(verified, _)| verified == email)
    }
}

/// What a single-use token proves when it comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenPurpose {
    /// The holder reads mail sent to `email`.
    VerifyEmail,
    /// The holder may set a new password for the account.
    ResetPassword,
    /// The holder may create an account while sign-up needs an invitation (`user_id` is
    /// empty; `email`, when not empty, is the only address it may be used for).
    Invite,
}

/// A single-use token, stored under the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneTimeToken {
    pub purpose: TokenPurpose,
    pub user_id: String,
    /// The address the token was sent to.
    pub email: String,
    pub expires_at: Millis,
}

/// A signed-in client: what the session id inside a token refers to. Deleting the record
/// revokes every token that names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// The last request seen, as last written (kept to within a few minutes).
    pub last_seen_at: Millis,
    /// The client's `User-Agent`, shortened.
    pub user_agent: String,
    /// The address it signed in from.
    pub address: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::{decode, encode};

    /// The stored bytes are a format: these must not change without a new format tag.
    #[test]
    fn stored_formats_are_frozen() {
        let state = AccountState {
            verified_email: Some(("a@b.c".to_owned(), 1)),
            email_notifications: false,
        };
        assert_eq!(
            encode(&state).unwrap(),
            [1, 1, 5, b'a', b'@', b'b', b'.', b'c', 1, 0]
        );
        let token = OneTimeToken {
            purpose: TokenPurpose::ResetPassword,
            user_id: "u".to_owned(),
            email: "e".to_owned(),
            expires_at: 300,
        };
        let bytes = encode(&token).unwrap();
        assert_eq!(bytes, [1, 1, 1, b'u', 1, b'e', 0xac, 0x02]);
        assert_eq!(decode::<OneTimeToken>(&bytes).unwrap(), token);
        let session = SessionRecord {
            user_id: "u".to_owned(),
            created_at: 1,
            expires_at: 2,
            last_seen_at: 3,
            user_agent: "b".to_owned(),
            address: "::1".to_owned(),
        };
        let bytes = encode(&session).unwrap();
        assert_eq!(bytes, [1, 1, b'u', 1, 2, 3, 1, b'b', 3, b':', b':', b'1']);
        assert_eq!(decode::<SessionRecord>(&bytes).unwrap(), session);
    }
}
