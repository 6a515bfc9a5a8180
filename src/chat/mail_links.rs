//! The links Courier puts in e-mails: address verification, password reset and unsubscribe.
//!
//! A single-use link's secret is never stored or queued. The e-mail job carries a random token
//! id; the secret is an HMAC of that id under a key derived from the JWT secret, computed when the
//! e-mail is written; the store keeps only the secret's SHA-256. So neither the job data the admin
//! dashboard shows nor a copy of the database holds a link that works. Unsubscribe links are
//! stateless (an HMAC of the user id), so they keep working for every e-mail ever sent.
//!
//! Secrets travel in the URL's fragment (`#token=`), which browsers never send to a server, so
//! they stay out of access logs and `Referer` headers; the page posts them back.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Makes and checks the links of e-mails, for one public address.
pub struct MailLinks {
    public_url: String,
    key: [u8; 32],
}

impl MailLinks {
    /// `public_url` is where people reach Courier (`scheme://host[:port]`, no trailing slash).
    pub fn new(public_url: &str, jwt_secret: &str) -> MailLinks {
        let key: [u8; 32] = Sha256::new()
            .chain_update(b"courier mail links\0")
            .chain_update(jwt_secret.as_bytes())
            .finalize()
            .into();
        MailLinks {
            public_url: public_url.trim_end_matches('/').to_owned(),
            key,
        }
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// A fresh random token id, safe to queue and show.
    pub fn new_token_id() -> String {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    fn mac(&self, label: &str, data: &str) -> Vec<u8> {
        // A key of any length is accepted by HMAC; this cannot fail.
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
        mac.update(label.as_bytes());
        mac.update(b"\0");
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The secret a link made for `token_id` carries.
    pub fn secret(&self, token_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("one-time token", token_id))
    }

    /// What the store keeps of a secret (SHA-256, hex).
    pub fn hash(secret: &str) -> String {
        hex::encode(Sha256::digest(secret.as_bytes()))
    }

    /// The page that confirms an address, with the secret for `token_id`.
    pub fn verify_email_url(&self, token_id: &str) -> String {
        format!(
            "{}/verify-email#token={}",
            self.public_url,
            self.secret(token_id)
        )
    }

    /// The page that sets a new password, with the secret for `token_id`.
    pub fn reset_password_url(&self, token_id: &str) -> String {
        format!(
            "{}/reset-password#token={}",
            self.public_url,
            self.secret(token_id)
        )
    }

    /// A conversation in the web client.
    pub fn chat_url(&self, other_id: &str) -> String {
        format!("{}/chat/{other_id}", self.public_url)
    }

    /// The token of `user_id`'s unsubscribe links.
    pub fn unsubscribe_token(&self, user_id: &str) -> String {
        format!(
            "{user_id}.{}",
            URL_SAFE_NO_PAD.encode(self.mac("unsubscribe", user_id))
        )
    }

    /// The page a person opens to stop notification e-mails.
    pub fn unsubscribe_page(&self, user_id: &str) -> String {
        format!(
            "{}/unsubscribe#token={}",
            self.public_url,
            self.unsubscribe_token(user_id)
        )
    }

    /// The one-click address mail clients post to (RFC 8058 `List-Unsubscribe-Post`).
    pub fn unsubscribe_one_click(&self, user_id: &str) -> String {
        format!(
            "{}/api/auth/unsubscribe?token={}",
            self.public_url,
            self.unsubscribe_token(user_id)
        )
    }

    /// The user an unsubscribe token was made for, if it is genuine.
    pub fn check_unsubscribe(&self, token: &str) -> Option<String> {
        let (user_id, signature) = token.trim().split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.key).ok()?;
        mac.update(b"unsubscribe\0");
        mac.update(user_id.as_bytes());
        // Constant time: `verify_slice` compares without an early exit.
        mac.verify_slice(&signature).ok()?;
        Some(user_id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_follow_from_the_id_and_the_key_only() {
        let links = MailLinks::new("https://chat.example.com/", "jwt-secret");
        let id = MailLinks::new_token_id();
        assert_eq!(id.len(), 32);
        assert_eq!(links.secret(&id), links.secret(&id));
        assert_ne!(links.secret(&id), links.secret(&MailLinks::new_token_id()));
        let other_key = MailLinks::new("https://chat.example.com", "another secret");
        assert_ne!(links.secret(&id), other_key.secret(&id));
        let url = links.verify_email_url(&id);
        assert!(
            url.starts_with("https://chat.example.com/verify-email#token="),
            "{url}"
        );
        assert!(!url.contains(&id), "the id is not the secret");
        assert_eq!(MailLinks::hash(&links.secret(&id)).len(), 64);
    }

    #[test]
    fn unsubscribe_tokens_cannot_be_forged_or_moved_to_another_user() {
        let links = MailLinks::new("http://localhost:5000", "jwt-secret");
        let token = links.unsubscribe_token("65f0c0a1b2c3d4e5f6a7b8c9");
        assert_eq!(
            links.check_unsubscribe(&token).as_deref(),
            Some("65f0c0a1b2c3d4e5f6a7b8c9")
        );
        let (_, signature) = token.split_once('.').unwrap();
        assert_eq!(
            links.check_unsubscribe(&format!("65f0c0a1b2c3d4e5f6a7b8ca.{signature}")),
            None
        );
        assert_eq!(
            links.check_unsubscribe("65f0c0a1b2c3d4e5f6a7b8c9.AAAA"),
            None
        );
        assert_eq!(links.check_unsubscribe("garbage"), None);
        let elsewhere = MailLinks::new("http://localhost:5000", "other");
        assert_eq!(elsewhere.check_unsubscribe(&token), None);
    }
}
