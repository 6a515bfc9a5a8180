//! The one EXIF field kept: a photo's orientation.
//!
//! Phones store a photo as the sensor saw it and say in EXIF how to turn it (tag 0x0112);
//! browsers honour that tag. Dropping EXIF whole would show portrait photos sideways, so a
//! photo whose orientation is not the default gets a minimal EXIF block holding that tag alone,
//! and everything else (GPS position, camera serial, time, thumbnail) is left behind.

use super::clean::array;

const ORIENTATION: u16 = 0x0112;
const SHORT: u16 = 3;

/// The orientation (2 to 8) in a TIFF-structured EXIF block, when one is there and is not the
/// default (1, "as stored").
pub(super) fn orientation(tiff: &[u8]) -> Option<u16> {
    let big_endian = match array::<4>(tiff, 0)? {
        [b'M', b'M', 0, 42] => true,
        [b'I', b'I', 42, 0] => false,
        _ => return None,
    };
    let u16_at = |at: usize| {
        array::<2>(tiff, at).map(|bytes| {
            if big_endian {
                u16::from_be_bytes(bytes)
            } else {
                u16::from_le_bytes(bytes)
            }
        })
    };
    let u32_at = |at: usize| {
        array::<4>(tiff, at).map(|bytes| {
            if big_endian {
                u32::from_be_bytes(bytes)
            } else {
                u32::from_le_bytes(bytes)
            }
        })
    };
    let directory = usize::try_from(u32_at(4)?).ok()?;
    let entries = u16_at(directory)?;
    // At most 65,535 entries, and the walk stops at the first one past the end.
    for index in 0..usize::from(entries) {
        let entry = directory.checked_add(2)?.checked_add(index * 12)?;
        if u16_at(entry)? != ORIENTATION {
            continue;
        }
        if u16_at(entry + 2)? != SHORT || u32_at(entry + 4)? != 1 {
            return None;
        }
        let value = u16_at(entry + 8)?;
        return (2..=8).contains(&value).then_some(value);
    }
    None
}

/// A big-endian TIFF block whose only directory holds one entry: the orientation.
pub(super) fn minimal(orientation: u16) -> [u8; 26] {
    let [high, low] = orientation.to_be_bytes();
    [
        b'M', b'M', 0, 42, 0, 0, 0, 8, // header: big-endian, first directory at 8
        0, 1, // one entry
        0x01, 0x12, 0, 3, 0, 0, 0, 1, high, low, 0, 0, // Orientation, SHORT, count 1
        0, 0, 0, 0, // no further directory
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_orientation_is_found_in_either_byte_order() {
        assert_eq!(orientation(&minimal(6)), Some(6));
        let little: [u8; 26] = [
            b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0,
            0,
        ];
        assert_eq!(orientation(&little), Some(8));
    }

    #[test]
    fn no_default_or_broken_orientation_is_kept() {
        assert_eq!(orientation(&minimal(1)), None);
        assert_eq!(orientation(&minimal(9)), None);
        assert_eq!(orientation(&minimal(6)[..19]), None);
        assert_eq!(orientation(b"not tiff at all"), None);
        // A directory offset far past the end.
        let mut far = minimal(6);
        far[4] = 0xff;
        assert_eq!(orientation(&far), None);
    }
}
