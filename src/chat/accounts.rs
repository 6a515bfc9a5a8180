//! Accounts: sign-up, login, session tokens and profiles.
//!
//! Passwords are hashed with argon2id on the blocking pool. A login for an unknown email still
//! verifies a (dummy) hash, so timing does not reveal which emails exist, and every failure is the
//! same `Invalid credentials`. Failed logins are counted per account; past the limit the account
//! refuses logins for the rest of a 15-minute window whatever the password.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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
use crate::queue::clock::Clock;
use crate::store::chat::{ChatStore, CreateUser, UserRecord};

/// How long a session token (and its cookie) lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MIN_PASSWORD_LEN: usize = 6;
pub const MAX_PASSWORD_LEN: usize = 1024;
pub use super::names::MAX_NAME_LEN;
pub const MAX_EMAIL_LEN: usize = 254;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// argon2id cost. Production defaults follow OWASP (19 MiB, 2 passes); tests use tiny values.
#[derive(Debug, Clone, Copy)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
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
    failures: FailedLogins,
    /// Tokens whose signature was checked: token → (user id, expiry in seconds since the epoch).
    /// Every request carries its token; checking the HMAC and parsing the token each time was a
    /// few percent of the server's work per message.
    verified: Mutex<HashMap<String, (String, u64)>>,
    uploads: Uploads,
    host: ImageHost,
    clock: Clock,
}

/// Most verified tokens remembered.
const VERIFIED_TOKENS: usize = 10_000;

fn epoch_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

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
        let failures = FailedLogins {
            max: login_max_failures,
            accounts: Mutex::new(HashMap::new()),
        };
        Ok(Accounts {
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

    pub async fn signup(&self, input: Signup) -> Result<UserRecord, ChatError> {
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
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(ChatError::Invalid(format!(
                "Password must be at least {MIN_PASSWORD_LEN} characters"
            )));
        }
        if password.len() > MAX_PASSWORD_LEN {
            return Err(ChatError::Invalid(format!(
                "Password must be at most {MAX_PASSWORD_LEN} bytes"
            )));
        }
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
        match self.store.create_user(user.clone()).await? {
            CreateUser::Created => Ok(user),
            CreateUser::EmailTaken => Err(ChatError::EmailTaken),
        }
    }

    pub async fn login(
        &self,
        email: Option<String>,
        password: Option<String>,
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
        if let Some(wait) = self.failures.blocked(&email) {
            return Err(ChatError::TooManyAttempts {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let user = self.store.user_by_email(&email).await?;
        let hash = match &user {
            Some(user) => user.password_hash.clone(),
            None => self.dummy_hash().await?,
        };
        let matches = self.verify(password, hash).await?;
        match user {
            Some(user) if matches => Ok(user),
            _ => {
                self.failures.record(&email);
                Err(ChatError::InvalidCredentials)
            }
        }
    }

    /// Issues a session token for a user.
    pub fn issue_token(&self, user_id: &str) -> Result<String, ChatError> {
        let now = epoch_secs();
        let claims = Claims {
            sub: user_id.to_owned(),
            iat: now,
            exp: now + SESSION_TTL.as_secs(),
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.encoding)
            .map_err(|err| ChatError::Internal(format!("cannot sign token: {err}")))
    }

    /// The user a session token belongs to, if it is valid, unexpired and the user exists.
    pub async fn authenticate(&self, token: &str) -> Result<UserRecord, ChatError> {
        let now = epoch_secs();
        let known = self
            .verified
            .lock()
            .get(token)
            .filter(|(_, expires)| now < *expires)
            .map(|(user_id, _)| user_id.clone());
        let user_id = match known {
            Some(user_id) => user_id,
            None => {
                let data =
                    jsonwebtoken::decode::<Claims>(token, &self.decoding, &Validation::default())
                        .map_err(|_| ChatError::Unauthorized)?;
                let mut verified = self.verified.lock();
                if verified.len() >= VERIFIED_TOKENS {
                    // Forgetting all is simple and bounded; they are checked again on next use.
                    verified.clear();
                }
                verified.insert(token.to_owned(), (data.claims.sub.clone(), data.claims.exp));
                data.claims.sub
            }
        };
        self.store
            .user_by_id(&user_id)
            .await?
            .ok_or(ChatError::Unauthorized)
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

/// Failed logins per account in fixed 15-minute windows. Only failures count, so a user who
/// logs in correctly is never slowed down by the limit.
struct FailedLogins {
    /// 0 turns the limit off.
    max: u32,
    accounts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl FailedLogins {
    /// How long the account stays locked, if it is.
    fn blocked(&self, email: &str) -> Option<Duration> {
        if self.max == 0 {
            return None;
        }
        let accounts = self.accounts.lock();
        let (since, count) = accounts.get(email)?;
        let elapsed = since.elapsed();
        (*count >= self.max && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    fn record(&self, email: &str) {
        if self.max == 0 {
            return;
        }
        let mut accounts = self.accounts.lock();
        // Bound memory under a spray of made-up emails: forget windows that are over.
        if accounts.len() >= 100_000 {
            accounts.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = accounts
            .entry(email.to_owned())
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}
