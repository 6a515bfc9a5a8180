//! Wire types shared by HTTP and WebSocket: the MERN chat app's JSON shapes.
//!
//! Field names (`_id`, `fullName`, `profilePic`, `senderId`, ...) and ISO-8601 timestamps match
//! the app Courier replaces, so its front ends work unchanged. Never a password hash.

use serde::Serialize;

use crate::chat::{names, SidebarEntry};
use crate::store::chat::{MessageRecord, UserRecord};

/// Epoch milliseconds as ISO-8601 UTC with milliseconds (`2026-11-28T08:12:38.123Z`).
pub fn iso_time(millis: u64) -> String {
    let seconds = (millis / 1000) as i64;
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        millis % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[derive(Debug, Clone, Serialize)]
pub struct UserJson {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "fullName")]
    pub full_name: String,
    pub email: String,
    #[serde(rename = "profilePic")]
    pub profile_pic: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
}

impl From<&UserRecord> for UserJson {
    fn from(user: &UserRecord) -> UserJson {
        UserJson {
            id: user.id.clone(),
            // Names saved before bidi controls were refused still display safely.
            full_name: names::clean(&user.full_name),
            email: user.email.clone(),
            profile_pic: user.profile_pic.clone(),
            created_at: iso_time(user.created_at),
            updated_at: iso_time(user.updated_at),
        }
    }
}

/// Another user as anyone may see them: no e-mail address.
#[derive(Debug, Clone, Serialize)]
pub struct PublicUserJson {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "fullName")]
    pub full_name: String,
    #[serde(rename = "profilePic")]
    pub profile_pic: String,
}

impl From<&UserRecord> for PublicUserJson {
    fn from(user: &UserRecord) -> PublicUserJson {
        PublicUserJson {
            id: user.id.clone(),
            full_name: names::clean(&user.full_name),
            profile_pic: user.profile_pic.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageJson {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "senderId")]
    pub sender_id: String,
    #[serde(rename = "receiverId")]
    pub receiver_id: String,
    pub text: String,
    pub image: String,
    pub seq: u64,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
}

impl From<&MessageRecord> for MessageJson {
    fn from(message: &MessageRecord) -> MessageJson {
        MessageJson {
            id: message.id.clone(),
            sender_id: message.sender_id.clone(),
            receiver_id: message.receiver_id.clone(),
            text: message.text.clone(),
            image: message.image.clone(),
            seq: message.seq,
            created_at: iso_time(message.created_at),
            updated_at: iso_time(message.updated_at),
        }
    }
}

/// A sidebar row: the user (without their e-mail address) plus presence, unread count and last
/// message.
#[derive(Debug, Clone, Serialize)]
pub struct SidebarUserJson {
    #[serde(flatten)]
    pub user: PublicUserJson,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    pub online: bool,
    #[serde(rename = "unreadCount")]
    pub unread_count: u64,
    /// The `seq` this user has read up to in the conversation with the caller (read receipts).
    #[serde(rename = "readByOtherUpTo")]
    pub read_by_other_up_to: u64,
    #[serde(rename = "lastMessage")]
    pub last_message: Option<MessageJson>,
    /// Whether the caller blocks this user.
    #[serde(rename = "isBlocked")]
    pub is_blocked: bool,
    /// Present when another listed user's name looks the same: shown beside the name.
    #[serde(rename = "nameTag", skip_serializing_if = "Option::is_none")]
    pub name_tag: Option<String>,
}

impl From<&SidebarEntry> for SidebarUserJson {
    fn from(entry: &SidebarEntry) -> SidebarUserJson {
        SidebarUserJson {
            user: PublicUserJson::from(&entry.user),
            created_at: iso_time(entry.user.created_at),
            online: entry.online,
            unread_count: entry.unread,
            read_by_other_up_to: entry.read_by_other,
            last_message: entry.last_message.as_ref().map(MessageJson::from),
            is_blocked: entry.blocked,
            name_tag: entry.name_tag.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_8601_utc_with_milliseconds() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso_time(1_795_853_558_007), "2026-11-28T08:12:38.007Z");
    }
}
