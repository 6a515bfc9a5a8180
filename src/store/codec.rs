//! The one codec for stored records: a format tag byte followed by a postcard body.
//!
//! Every value Courier writes to disk goes through [`encode`] and comes back through [`decode`]
//! (or, for a record whose layout changed, [`encode_versioned`] and [`decode_versioned`]), so a
//! layout change adds a tag and keeps reading the old one; no other module knows how bytes are
//! laid out.

use serde::{de::DeserializeOwned, Serialize};

use super::chat::{self, MessageRecord};
use super::job::{v1, JobSpec, JobStatus};
use super::StoreError;

/// Tag of the first record layout: postcard 1.x of the record's serde shape. Every record type
/// that has not changed since is still written with it.
pub const FORMAT_V1: u8 = 1;

/// Tag of the second layout, for the records whose shape grew after format 1 (job specs and
/// statuses gained a group; messages gained groups, replies, attachments, edits, deletes,
/// reactions and a change stamp): postcard 1.x of the current shape.
pub const FORMAT_V2: u8 = 2;

/// A record whose layout changed after format 1: written with [`FORMAT_V2`], and read from
/// either tag (format 1 through its frozen old shape).
pub trait Versioned: Serialize + DeserializeOwned {
    /// The record's format-1 shape.
    type V1: DeserializeOwned + Into<Self>;
}

impl Versioned for JobSpec {
    type V1 = v1::JobSpec;
}

impl Versioned for JobStatus {
    type V1 = v1::JobStatus;
}

impl Versioned for MessageRecord {
    type V1 = chat::v1::MessageRecord;
}

fn body<T: DeserializeOwned>(body: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(body).map_err(|err| StoreError::Codec(err.to_string()))
}

pub fn encode_versioned<T: Versioned>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![FORMAT_V2];
    let body = postcard::to_stdvec(value).map_err(|err| StoreError::Codec(err.to_string()))?;
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

pub fn decode_versioned<T: Versioned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V2, rest)) => body(rest),
        Some((&FORMAT_V1, rest)) => body::<T::V1>(rest).map(Into::into),
        Some((tag, _)) => Err(StoreError::Codec(format!(
            "unknown record format tag {tag}"
        ))),
        None => Err(StoreError::Codec("empty record".to_owned())),
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![FORMAT_V1];
    let body = postcard::to_stdvec(value).map_err(|err| StoreError::Codec(err.to_string()))?;
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => {
            postcard::from_bytes(body).map_err(|err| StoreError::Codec(err.to_string()))
        }
        Some((tag, _)) => Err(StoreError::Codec(format!(
            "unknown record format tag {tag}"
        ))),
        None => Err(StoreError::Codec("empty record".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::job::{JobOptions, JobState, JobStatus};

    #[test]
    fn records_round_trip_with_their_tag() {
        let status = JobStatus::new(
            JobState::Delayed,
            &JobOptions {
                group: Some("a:b".to_owned()),
                ..JobOptions::default()
            },
            42,
            1_700_000_000_000,
        );
        let bytes = encode_versioned(&status).unwrap();
        assert_eq!(bytes[0], FORMAT_V2);
        assert_eq!(decode_versioned::<JobStatus>(&bytes).unwrap(), status);
        let bytes = encode(&"text").unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(decode::<String>(&bytes).unwrap(), "text");
    }

    #[test]
    fn unknown_tags_and_garbage_are_errors_not_panics() {
        assert!(decode::<String>(&[]).is_err());
        assert!(decode::<String>(&[9, 1, 2, 3]).is_err());
        assert!(decode::<String>(&[FORMAT_V1, 0xff]).is_err());
        assert!(decode_versioned::<JobStatus>(&[]).is_err());
        assert!(decode_versioned::<JobStatus>(&[9, 1, 2, 3]).is_err());
        assert!(decode_versioned::<JobStatus>(&[FORMAT_V1, 0xff]).is_err());
        assert!(decode_versioned::<JobStatus>(&[FORMAT_V2, 0xff]).is_err());
    }
}

/// Golden bytes: one representative value of every record type Courier writes to disk, with its
/// frozen encoding.
///
/// If one of these tests fails, a change to a type (or to postcard) changed what is on disk, and
/// data written by earlier releases would no longer open. Do not edit the hex: keep the type's
/// old shape decodable (freeze it in a `v1`-style module, make the type [`super::Versioned`] or
/// add a new format tag next to [`super::FORMAT_V2`]), then add a new golden test for the new
/// tag. Format-1 job records are checked through their frozen shapes (`job::v1`) and through
/// their upgrade into the current types.
#[cfg(test)]
pub(crate) mod golden {
    use std::fmt::Debug;

    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::{decode, decode_versioned, encode, encode_versioned, Versioned};
    use crate::store::accounts::{AccountState, OneTimeToken, SessionRecord, TokenPurpose};
    use crate::store::chat::{self, Attachment, Edit, MessageRecord, Reaction, UserRecord};
    use crate::store::job::{
        v1, Backoff, BackoffKind, JobOptions, JobSpec, JobState, JobStatus, KeepJobs,
    };

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `value` encodes to exactly `frozen`, and `frozen` decodes to `value`.
    pub(crate) fn golden<T>(value: &T, frozen: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug,
    {
        let bytes = encode(value).unwrap();
        assert_eq!(hex(&bytes), frozen, "encoding of {value:?} changed");
        assert_eq!(&decode::<T>(&unhex(frozen)).unwrap(), value);
    }

    /// A versioned record encodes to exactly `frozen` (format 2), and `frozen` decodes to it.
    fn golden_versioned<T>(value: &T, frozen: &str)
    where
        T: Versioned + PartialEq + Debug,
    {
        let bytes = encode_versioned(value).unwrap();
        assert_eq!(hex(&bytes), frozen, "encoding of {value:?} changed");
        assert_eq!(&decode_versioned::<T>(&unhex(frozen)).unwrap(), value);
    }

    /// `frozen` (format 1) still decodes, into the current type, as `value`.
    fn upgrades<T>(frozen: &str, value: &T)
    where
        T: Versioned + PartialEq + Debug,
    {
        assert_eq!(&decode_versioned::<T>(&unhex(frozen)).unwrap(), value);
    }

    fn options() -> v1::JobOptions {
        v1::JobOptions {
            priority: Some(3),
            delay_ms: 1_500,
            attempts: 4,
            backoff: Some(Backoff {
                kind: BackoffKind::Exponential,
                delay: 250,
                jitter: 0.5,
            }),
            timeout_ms: Some(30_000),
            job_id: Some("invoice-7".to_owned()),
            lifo: true,
            remove_on_complete: Some(KeepJobs {
                count: Some(100),
                age_ms: Some(86_400_000),
            }),
            remove_on_fail: Some(KeepJobs {
                count: None,
                age_ms: Some(3_600_000),
            }),
        }
    }

    const JOB_SPEC_V1: &str = "0105656d61696c187b22746f223a22616461406578616d706c652e636f6d227d0103dc0b040101fa01000000000000e03f01b0ea010109696e766f6963652d37010101640180b8992901000180dddb0180d095ffbc31";

    fn spec_v1() -> v1::JobSpec {
        v1::JobSpec {
            name: "email".to_owned(),
            data: r#"{"to":"ada@example.com"}"#.to_owned(),
            opts: options(),
            created_at: 1_700_000_000_000,
        }
    }

    #[test]
    fn job_spec() {
        golden(&spec_v1(), JOB_SPEC_V1);
        upgrades::<JobSpec>(JOB_SPEC_V1, &spec_v1().into());
        assert_eq!(JobSpec::from(spec_v1()).opts.group, None);
    }

    #[test]
    fn job_spec_v2_with_a_group() {
        let mut spec = JobSpec::from(spec_v1());
        spec.opts.group = Some("u-ada:u-bob".to_owned());
        golden_versioned(
            &spec,
            "0205656d61696c187b22746f223a22616461406578616d706c652e636f6d227d0103dc0b040101fa01000000000000e03f01b0ea010109696e766f6963652d37010101640180b8992901000180dddb01010b752d6164613a752d626f6280d095ffbc31",
        );
        spec.opts.group = None;
        golden_versioned(
            &spec,
            "0205656d61696c187b22746f223a22616461406578616d706c652e636f6d227d0103dc0b040101fa01000000000000e03f01b0ea010109696e766f6963652d37010101640180b8992901000180dddb010080d095ffbc31",
        );
    }

    #[test]
    fn job_options_with_fixed_backoff_and_nothing_set() {
        let mut opts = options();
        opts.backoff = Some(Backoff {
            kind: BackoffKind::Fixed,
            delay: 1_000,
            jitter: 0.0,
        });
        golden(&opts, "010103dc0b040100e807000000000000000001b0ea010109696e766f6963652d37010101640180b8992901000180dddb01");
        let nothing_set = v1::JobOptions {
            priority: None,
            delay_ms: 0,
            attempts: 1,
            backoff: None,
            timeout_ms: None,
            job_id: None,
            lifo: false,
            remove_on_complete: None,
            remove_on_fail: None,
        };
        golden(&nothing_set, "01000001000000000000");
        assert_eq!(JobOptions::from(nothing_set), JobOptions::default());
    }

    const JOB_STATUS_V1: &str = "01042a0301e8d795ffbc31020102373501d0df95ffbc3101b8e795ffbc31010974696d6564206f7574020e66697273743a2072656675736564117365636f6e643a2074696d6564206f7574010c7b226f6b223a66616c73657d0902b8e795ffbc31";

    #[test]
    fn job_status() {
        golden(&status_v1(), JOB_STATUS_V1);
        upgrades::<JobStatus>(JOB_STATUS_V1, &status_v1().into());
        assert_eq!(JobStatus::from(status_v1()).group, None);
    }

    #[test]
    fn job_status_v2_with_a_group() {
        let mut status = JobStatus::from(status_v1());
        status.group = Some("u-ada:u-bob".to_owned());
        golden_versioned(
            &status,
            "02042a0301e8d795ffbc31020102373501d0df95ffbc3101b8e795ffbc31010974696d6564206f7574020e66697273743a2072656675736564117365636f6e643a2074696d6564206f7574010c7b226f6b223a66616c73657d0902b8e795ffbc31010b752d6164613a752d626f62",
        );
        status.group = None;
        golden_versioned(
            &status,
            "02042a0301e8d795ffbc31020102373501d0df95ffbc3101b8e795ffbc31010974696d6564206f7574020e66697273743a2072656675736564117365636f6e643a2074696d6564206f7574010c7b226f6b223a66616c73657d0902b8e795ffbc3100",
        );
    }

    fn status_v1() -> v1::JobStatus {
        {
            v1::JobStatus {
                state: JobState::Failed,
                order: 42,
                priority: 3,
                lifo: true,
                ready_at: 1_700_000_001_000,
                attempts_made: 2,
                stalled_count: 1,
                progress: "75".to_owned(),
                processed_at: Some(1_700_000_002_000),
                finished_at: Some(1_700_000_003_000),
                failed_reason: Some("timed out".to_owned()),
                stacktrace: vec!["first: refused".to_owned(), "second: timed out".to_owned()],
                return_value: Some(r#"{"ok":false}"#.to_owned()),
                token: 9,
                log_count: 2,
                entered_at: 1_700_000_003_000,
            }
        }
    }

    #[test]
    fn job_states() {
        for (state, frozen) in [
            (JobState::Waiting, "0100"),
            (JobState::Delayed, "0101"),
            (JobState::Active, "0102"),
            (JobState::Completed, "0103"),
            (JobState::Failed, "0104"),
        ] {
            golden(&state, frozen);
        }
    }

    /// Job log lines, user ids under the e-mail index and ids in general are plain strings.
    #[test]
    fn strings() {
        golden(
            &"started step 2".to_owned(),
            "010e7374617274656420737465702032",
        );
    }

    /// Read marks (`u64` seq), disabled-at and e-mail claim times (`Millis`) are plain `u64`s.
    #[test]
    fn numbers() {
        golden(&7_u64, "0107");
        golden(&1_700_000_000_000_u64, "0180d095ffbc31");
    }

    #[test]
    fn user_record() {
        golden(
            &UserRecord {
                id: "u-ada".to_owned(),
                full_name: "Ada Lovelace".to_owned(),
                email: "ada@example.com".to_owned(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
                profile_pic: "https://img.example.com/ada.png".to_owned(),
                created_at: 1_700_000_000_000,
                updated_at: 1_700_000_500_000,
            },
            "0105752d6164610c416461204c6f76656c6163650f616461406578616d706c652e636f6d2c246172676f6e32696424763d3139246d3d31393435362c743d322c703d3124633246736441246147467a61411f68747470733a2f2f696d672e6578616d706c652e636f6d2f6164612e706e6780d095ffbc31a092b4ffbc31",
        );
    }

    const MESSAGE_RECORD_V1: &str = "01036d2d3105752d61646105752d626f620a68656c6c6f2c20426f621d68747470733a2f2f696d672e6578616d706c652e636f6d2f312e706e6701909e96ffbc31f8a596ffbc31";

    fn message_v1() -> chat::v1::MessageRecord {
        chat::v1::MessageRecord {
            id: "m-1".to_owned(),
            sender_id: "u-ada".to_owned(),
            receiver_id: "u-bob".to_owned(),
            text: "hello, Bob".to_owned(),
            image: "https://img.example.com/1.png".to_owned(),
            seq: 1,
            created_at: 1_700_000_010_000,
            updated_at: 1_700_000_011_000,
        }
    }

    #[test]
    fn message_record() {
        golden(&message_v1(), MESSAGE_RECORD_V1);
        let upgraded = MessageRecord::from(message_v1());
        upgrades::<MessageRecord>(MESSAGE_RECORD_V1, &upgraded);
        assert_eq!(upgraded.change, 0);
        assert_eq!(upgraded.group_id, None);
        assert!(upgraded.reactions.is_empty() && upgraded.edit_history.is_empty());
    }

    #[test]
    fn message_record_v2_with_everything_set() {
        let mut message = MessageRecord::from(message_v1());
        message.group_id = Some("g-1".to_owned());
        message.receiver_id = String::new();
        message.reply_to = Some("m-0".to_owned());
        message.attachment = Some(Attachment {
            url: "/api/files/ab/notes.pdf".to_owned(),
            name: "notes.pdf".to_owned(),
            size: 1_234,
            file_type: "document".to_owned(),
            mime_type: "application/pdf".to_owned(),
        });
        message.edit_history = vec![Edit {
            text: "helo".to_owned(),
            edited_at: 1_700_000_012_000,
        }];
        message.edited_at = Some(1_700_000_012_000);
        message.deleted_at = Some(1_700_000_013_000);
        message.reactions = vec![Reaction {
            emoji: "👍".to_owned(),
            users: vec!["u-bob".to_owned(), "u-cy".to_owned()],
        }];
        message.system = true;
        message.change = 7;
        golden_versioned(
            &message,
            "02036d2d3105752d616461000a68656c6c6f2c20426f621d68747470733a2f2f696d672e6578616d706c652e636f6d2f312e706e6701909e96ffbc31f8a596ffbc310103672d3101036d2d3001172f6170692f66696c65732f61622f6e6f7465732e706466096e6f7465732e706466d20908646f63756d656e740f6170706c69636174696f6e2f706466010468656c6fe0ad96ffbc3101e0ad96ffbc3101c8b596ffbc310104f09f918d0205752d626f6204752d63790107",
        );
    }

    #[test]
    fn message_record_v2_with_nothing_set() {
        let mut message = MessageRecord::from(message_v1());
        message.change = 1;
        golden_versioned(
            &message,
            "02036d2d3105752d61646105752d626f620a68656c6c6f2c20426f621d68747470733a2f2f696d672e6578616d706c652e636f6d2f312e706e6701909e96ffbc31f8a596ffbc31000000000000000001",
        );
    }

    #[test]
    fn account_state() {
        golden(
            &AccountState {
                verified_email: Some(("ada@example.com".to_owned(), 1_700_000_020_000)),
                email_notifications: false,
            },
            "01010f616461406578616d706c652e636f6da0ec96ffbc3100",
        );
        golden(&AccountState::default(), "010001");
    }

    #[test]
    fn one_time_tokens() {
        for (purpose, frozen) in [
            (
                TokenPurpose::VerifyEmail,
                "010005752d6164610f616461406578616d706c652e636f6d8088afa8bd31",
            ),
            (
                TokenPurpose::ResetPassword,
                "010105752d6164610f616461406578616d706c652e636f6d8088afa8bd31",
            ),
            (
                TokenPurpose::Invite,
                "010205752d6164610f616461406578616d706c652e636f6d8088afa8bd31",
            ),
        ] {
            golden(
                &OneTimeToken {
                    purpose,
                    user_id: "u-ada".to_owned(),
                    email: "ada@example.com".to_owned(),
                    expires_at: 1_700_086_400_000,
                },
                frozen,
            );
        }
    }

    #[test]
    fn session_record() {
        golden(
            &SessionRecord {
                user_id: "u-ada".to_owned(),
                created_at: 1_700_000_000_000,
                expires_at: 1_702_592_000_000,
                last_seen_at: 1_700_000_300_000,
                user_agent: "Mozilla/5.0 (X11; Linux x86_64)".to_owned(),
                address: "203.0.113.7".to_owned(),
            },
            "0105752d61646180d095ffbc3180e090d3c631e0f7a7ffbc311f4d6f7a696c6c612f352e3020285831313b204c696e7578207838365f3634290b3230332e302e3131332e37",
        );
    }
}
