//! Errors of the chat domain. `http/` maps each to a status; messages are safe to show users.

use crate::queue::QueueError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Bad input; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// Login failed. Never says whether the email or the password was wrong.
    #[error("Invalid credentials")]
    InvalidCredentials,
    #[error("Email already exists")]
    EmailTaken,
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    /// Not allowed between these users (a block); the message says why.
    #[error("{0}")]
    Refused(String),
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    #[error("{0}")]
    UnsupportedImage(String),
    /// An image whose canvas (as its header declares it) is past the pixel limit.
    #[error("image is {width}x{height} pixels, more than the limit of {limit} pixels")]
    TooManyPixels { width: u64, height: u64, limit: u64 },
    #[error("too many attempts, try again in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    /// Asked again too soon (another e-mail, say); the wait is in the variant.
    #[error("please wait {retry_after_secs} s before asking again")]
    TooSoon { retry_after_secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Internal(String),
}
