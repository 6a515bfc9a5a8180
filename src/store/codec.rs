//! The one codec for stored records: a format tag byte followed by a postcard body.
//!
//! Every value Courier writes to disk goes through [`encode`] and comes back through [`decode`], so
//! a future layout change bumps [`FORMAT_V1`] to a new tag and teaches `decode` the old one; no other
//! module knows how bytes are laid out.

use serde::{de::DeserializeOwned, Serialize};

use super::StoreError;

/// Tag of the first (current) record layout: postcard 1.x of the record's serde shape.
pub const FORMAT_V1: u8 = 1;

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
            &JobOptions::default(),
            42,
            1_700_000_000_000,
        );
        let bytes = encode(&status).unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(decode::<JobStatus>(&bytes).unwrap(), status);
    }

    #[test]
    fn unknown_tags_and_garbage_are_errors_not_panics() {
        assert!(decode::<JobStatus>(&[]).is_err());
        assert!(decode::<JobStatus>(&[9, 1, 2, 3]).is_err());
        assert!(decode::<JobStatus>(&[FORMAT_V1, 0xff]).is_err());
    }
}
