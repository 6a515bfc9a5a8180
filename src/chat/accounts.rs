//! Accounts: sign-up, login, session tokens and profiles.
//!
//! Passwords are hashed with argon2id on the blocking pool. A login for an unknown email still
//! verifies a (dummy) hash, so timing does not reveal which emails exist, and every failure is the
//! same `Invalid credentials`. Failed logins are throttled per (account, address) and per address
//! (see [`lockout`](super::lockout)), so a guesser is slowed down without locking the owner out;
//! each failure and each wait that starts is logged with the account and the address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::error::ChatError;
use super::ids;
use super::images::{self, ImageHost, Uploads};
use super::lockout::{whole_seconds, LoginThrottle};
use super::sessions::{check_new_password, ClientInfo, SessionCache};
use crate::queue::clock::Clock;
use crate::store::accounts::{OneTimeToken, TokenPurpose};
use crate::store::chat::{ChatStore, CreateUser, UserRecord};

/// How long a session token (and its cookie) lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MIN_PASSWORD_LEN: usize = 6;
pub const MAX_PASSWORD_LEN: usize = 1024;
pub use super::names::MAX_NAME_LEN;
pub const MAX_EMAIL_LEN: usize = 254;

/// argon2id cost. Production defaults follow OWASP (19 MiB, 2 passes); tests use tiny values.
#[derive(Debug, Clone, Copy)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    /// The session the token belongs to (see `sessions`); a token without one is refused.
    sid: String,
    exp: u64,
    iat: u64,
}

/// A caller whose token and session checked out.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: UserRecord,
    pub session_id: String,
}

/// Input of a sign-up, as received (fields may be missing).
#[derive(Debug, Default)]
pub struct Signup {
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
}

pub struct Accounts {
    store: Arc<dyn ChatStore>,
    argon: Argon2<'static>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    failures: LoginThrottle,
    /// Tokens whose signature was checked: token → (user id, session id, expiry in seconds
    /// since the epoch). Every request carries its token; checking the HMAC and parsing the
    /// token each time was a few percent of the server's work per message.
    verified: Mutex<HashMap<String, VerifiedToken>>,
    sessions: SessionCache,
    uploads: Uploads,
    host: ImageHost,
    clock: Clock,
}

#[derive(Debug, Clone)]
struct VerifiedToken {
    user_id: String,
    session_id: String,
    expires: u64,
}

/// Most verified tokens remembered.
const VERIFIED_TOKENS: usize = 10_000;

/// Trims and lowercases an email; `None` when it cannot be an address.
pub fn normalise_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let plausible = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@');
    plausible.then_some(email)
}

impl Accounts {
    pub fn new(
        store: Arc<dyn ChatStore>,
        jwt_secret: &str,
        cost: HashCost,
        login_max_failures: u32,
        uploads: Uploads,
        host: ImageHost,
    ) -> Result<Accounts, ChatError> {
        let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
            .map_err(|err| ChatError::Internal(format!("bad argon2 parameters: {err}")))?;
        let failures = LoginThrottle::new(login_max_failures);
        Ok(Accounts {
            sessions: SessionCache::new(store.clone()),
            store,
            argon: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            encoding: EncodingKey::from_secret(jwt_secret.as_bytes()),
            decoding: DecodingKey::from_secret(jwt_secret.as_bytes()),
            failures,
            verified: Mutex::new(HashMap::new()),
            uploads,
            host,
            clock: Clock::new(),
        })
    }

    async fn hash(&self, password: String) -> Result<String, ChatError> {
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|err| ChatError::Internal(format!("cannot hash password: {err}")))
        })
        .await
        .map_err(|err| ChatError::Internal(format!("hash task failed: {err}")))?
    }

    async fn verify(&self, password: String, hash: String) -> Result<bool, ChatError> {
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash)
                .map_err(|err| ChatError::Internal(format!("stored hash is unreadable: {err}")))?;
            Ok(argon.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await
        .map_err(|err| ChatError::Internal(format!("verify task failed: {err}")))?
    }

    /// A hash of a random password, computed once, verified when the email is unknown so that
    /// unknown and known emails take the same time.
    async fn dummy_hash(&self) -> Result<String, ChatError> {
        static DUMMY: OnceLock<String> = OnceLock::new();
        if let Some(hash) = DUMMY.get() {
            return Ok(hash.clone());
        }
        let hash = self.hash(ids::new_id()).await?;
        Ok(DUMMY.get_or_init(|| hash).clone())
    }

    /// Creates an account. With `invite` (the hash of an invitation's secret, and now), the
    /// invitation is used up by the sign-up, once the input is known to be good.
    pub async fn signup(
        &self,
        input: Signup,
        invite: Option<(&str, u64)>,
    ) -> Result<UserRecord, ChatError> {
        let (Some(full_name), Some(email), Some(password)) =
            (input.full_name, input.email, input.password)
        else {
            return Err(ChatError::Invalid("All fields are required".to_owned()));
        };
        if full_name.trim().is_empty() || email.trim().is_empty() || password.is_empty() {
            return Err(ChatError::Invalid("All fields are required".to_owned()));
        }
        // Direction overrides and invisible characters are removed (see `names`).
        let full_name = super::names::check(&full_name).map_err(ChatError::Invalid)?;
        let email = normalise_email(&email)
            .ok_or_else(|| ChatError::Invalid("Invalid email address".to_owned()))?;
        check_new_password(&password)?;
        // Cheap pre-check so a taken email does not cost a hash; the store re-checks atomically.
        if self.store.user_by_email(&email).await?.is_some() {
            return Err(ChatError::EmailTaken);
        }
        let now = self.clock.now();
        let user = UserRecord {
            id: ids::new_id(),
            full_name,
            email,
            password_hash: self.hash(password).await?,
            profile_pic: String::new(),
            created_at: now,
            updated_at: now,
        };
        let invitation = match invite {
            Some((hash, now)) => Some((hash, self.take_invitation(hash, &user.email, now).await?)),
            None => None,
        };
        let created = self.store.create_user(user.clone()).await;
        let given_back = match (&created, invitation) {
            (Ok(CreateUser::Created), _) | (_, None) => None,
            (_, Some(invitation)) => Some(invitation),
        };
        if let Some((hash, token)) = given_back {
            // The account was not created: the invitation still works.
            self.store.put_token(hash, token, now).await?;
        }
        match created? {
            CreateUser::Created => Ok(user),
            CreateUser::EmailTaken => Err(ChatError::EmailTaken),
        }
    }

    /// Uses up the invitation stored under `hash`, if it works for `email`.
    async fn take_invitation(
        &self,
        hash: &str,
        email: &str,
        now: u64,
    ) -> Result<OneTimeToken, ChatError> {
        let invalid = || ChatError::Refused("This invitation is invalid or has expired".to_owned());
        let token = self
            .store
            .take_token(hash, TokenPurpose::Invite, now)
            .await?
            .ok_or_else(invalid)?;
        if !token.email.is_empty() && token.email != email {
            self.store.put_token(hash, token, now).await?;
            return Err(ChatError::Refused(
                "This invitation is for another e-mail address".to_owned(),
            ));
        }
        Ok(token)
    }

    pub async fn login(
        &self,
        email: Option<String>,
        password: Option<String>,
        address: IpAddr,
    ) -> Result<UserRecord, ChatError> {
        let (Some(email), Some(password)) = (email, password) else {
            return Err(ChatError::InvalidCredentials);
        };
        let Some(email) = normalise_email(&email) else {
            return Err(ChatError::InvalidCredentials);
        };
        if password.len() > MAX_PASSWORD_LEN {
            return Err(ChatError::InvalidCredentials);
        }
        if let Some(wait) = self.failures.wait(&email, address) {
            tracing::debug!(account = %email, %address, "login refused: still waiting");
            return Err(ChatError::TooManyAttempts {
                retry_after_secs: whole_seconds(wait),
            });
        }
        let user = self.store.user_by_email(&email).await?;
        let hash = match &user {
            Some(user) => user.password_hash.clone(),
            None => self.dummy_hash().await?,
        };
        let matches = self.verify(password, hash).await?;
        match user {
            Some(user) if matches => {
                self.failures.record_success(&email, address);
                // Only someone with the password learns that the account is disabled.
                if self.store.disabled_at(&user.id).await?.is_some() {
                    tracing::warn!(user = %user.id, %address, "login to a disabled account refused");
                    return Err(ChatError::Refused(
                        "This account is disabled: ask the administrator".to_owned(),
                    ));
                }
                Ok(user)
            }
            user => {
                let failure = self.failures.record_failure(&email, address);
                let known = user.is_some();
                tracing::warn!(account = %email, %address, known, failures = failure.count, "failed login");
                if !failure.wait.is_zero() {
                    tracing::warn!(
                        account = %email,
                        %address,
                        wait_secs = whole_seconds(failure.wait),
                        "login throttled for this account and address"
                    );
                }
                Err(ChatError::InvalidCredentials)
            }
        }
    }

    /// Starts a session for `user_id` and issues the token that names it.
    pub async fn start_session(
        &self,
        user_id: &str,
        client: &ClientInfo,
    ) -> Result<String, ChatError> {
        let (session_id, expires) = self
            .sessions
            .create(user_id, client, self.clock.now())
            .await?;
        let claims = Claims {
            sub: user_id.to_owned(),
            sid: session_id,
            iat: crate::time::now_secs(),
            exp: expires,
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.encoding)
            .map_err(|err| ChatError::Internal(format!("cannot sign token: {err}")))
    }

    pub(super) fn sessions(&self) -> &SessionCache {
        &self.sessions
    }

    /// The user and session a token belongs to, if it is valid, unexpired, its session still
    /// exists and the user exists.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, ChatError> {
        let now = crate::time::now_secs();
        let known = self
            .verified
            .lock()
            .get(token)
            .filter(|verified| now < verified.expires)
            .cloned();
        let verified = match known {
            Some(verified) => verified,
            None => {
                let data =
                    jsonwebtoken::decode::<Claims>(token, &self.decoding, &Validation::default())
                        .map_err(|_| ChatError::Unauthorized)?;
                let verified = VerifiedToken {
                    user_id: data.claims.sub,
                    session_id: data.claims.sid,
                    expires: data.claims.exp,
                };
                let mut table = self.verified.lock();
                if table.len() >= VERIFIED_TOKENS {
                    // Forgetting all is simple and bounded; they are checked again on next use.
                    table.clear();
                }
                table.insert(token.to_owned(), verified.clone());
                verified
            }
        };
        if !self
            .sessions
            .is_live(&verified.session_id, &verified.user_id, self.clock.now())
            .await?
        {
            return Err(ChatError::Unauthorized);
        }
        let user = self
            .store
            .user_by_id(&verified.user_id)
            .await?
            .ok_or(ChatError::Unauthorized)?;
        Ok(Authenticated {
            user,
            session_id: verified.session_id,
        })
    }

    /// Whether `password` is `user`'s, throttled like a login from `address` (a wrong one counts
    /// as a failed login).
    pub async fn check_password(
        &self,
        user: &UserRecord,
        password: String,
        address: IpAddr,
    ) -> Result<bool, ChatError> {
        if password.len() > MAX_PASSWORD_LEN {
            return Ok(false);
        }
        if let Some(wait) = self.failures.wait(&user.email, address) {
            return Err(ChatError::TooManyAttempts {
                retry_after_secs: whole_seconds(wait),
            });
        }
        let matches = self.verify(password, user.password_hash.clone()).await?;
        if matches {
            self.failures.record_success(&user.email, address);
        } else {
            let failure = self.failures.record_failure(&user.email, address);
            tracing::warn!(account = %user.email, %address, failures = failure.count, "wrong current password");
        }
        Ok(matches)
    }

    /// An argon2id hash of `password` (already checked by the caller).
    pub(super) async fn hash_password(&self, password: String) -> Result<String, ChatError> {
        self.hash(password).await
    }

    pub async fn user(&self, id: &str) -> Result<Option<UserRecord>, ChatError> {
        Ok(self.store.user_by_id(id).await?)
    }

    /// Sets a profile picture from image bytes (already size-checked by the caller's limits).
    pub async fn update_profile_pic(
        &self,
        user_id: &str,
        bytes: Vec<u8>,
    ) -> Result<UserRecord, ChatError> {
        images::check_image(&bytes)?;
        let hash = self.uploads.put(bytes).await?;
        let url = self.host.publish(&self.uploads, &hash).await?;
        self.store
            .set_profile_pic(user_id, url, self.clock.now())
            .await?
            .ok_or(ChatError::Unauthorized)
    }
}
