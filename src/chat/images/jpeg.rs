//! JPEG: marker segments after `FF D8`; a frame header (`SOFn`) gives the size, and each scan
//! (`SOS`) is followed by entropy-coded data that runs to the next marker.
//!
//! Kept: everything that decoding needs (tables, frame and scan headers, scan data, restart
//! markers), the JFIF header without its thumbnail (a thumbnail can show what a crop removed),
//! the ICC profile (`APP2 ICC_PROFILE`: without it wide-gamut phone photos look washed out; it
//! describes a colour space, not the photo or its owner) and the `APP14 Adobe` segment (it says
//! whether the colours are RGB, YCbCr or CMYK). EXIF is replaced by a block holding only the
//! orientation (see [`super::exif`]). Dropped: XMP and every other `APP1`..`APP15` use (IPTC and
//! Photoshop in `APP13`, multi-picture indexes in `APP2`), comments (`COM`), and whatever follows
//! the end marker (phones append second pictures and videos there).

use super::clean::{be16, Cleaned, Damaged, Extent};
use super::exif;

const SOI: u8 = 0xd8;
const EOI: u8 = 0xd9;
const SOS: u8 = 0xda;
const APP0: u8 = 0xe0;
const APP1: u8 = 0xe1;
const APP2: u8 = 0xe2;
const APP14: u8 = 0xee;
const COM: u8 = 0xfe;

/// Frame headers: every `C0`..`CF` except `C4` (DHT), `C8` (reserved) and `CC` (DAC).
fn is_frame_header(marker: u8) -> bool {
    matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc)
}

pub(super) fn clean(bytes: &[u8]) -> Result<Cleaned, Damaged> {
    if !bytes.starts_with(&[0xff, SOI]) {
        return Err(Damaged("it is not a jpeg file"));
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&[0xff, SOI]);
    let mut extent = Extent::default();
    let mut has_frame = false;
    let mut exif_seen = false;
    let mut at = 2;
    // Each turn moves `at` forward by at least two bytes.
    while at < bytes.len() {
        if bytes[at] != 0xff {
            // Stray bytes between segments: decoders skip to the next marker (libjpeg warns of
            // "extraneous bytes"), so they are dropped rather than the photo refused.
            at = bytes[at..]
                .iter()
                .position(|&byte| byte == 0xff)
                .map_or(bytes.len(), |offset| at + offset);
            continue;
        }
        // Any number of 0xFF may pad before a marker.
        while bytes.get(at + 1) == Some(&0xff) {
            at += 1;
        }
        let Some(&marker) = bytes.get(at + 1) else {
            return Err(Damaged("a jpeg ends inside a marker"));
        };
        match marker {
            EOI => {
                out.extend_from_slice(&[0xff, EOI]);
                break;
            }
            SOI | 0x00 => return Err(Damaged("a jpeg has a misplaced marker")),
            // Markers without a length: TEM and the restart markers.
            0x01 | 0xd0..=0xd7 => {
                out.extend_from_slice(&[0xff, marker]);
                at += 2;
                continue;
            }
            _ => {}
        }
        let truncated = Damaged("a jpeg segment runs past the end of the file");
        let length = usize::from(be16(bytes, at + 2).ok_or(truncated)?);
        if length < 2 {
            return Err(Damaged("a jpeg segment has an impossible length"));
        }
        let end = at + 2 + length;
        let segment = bytes.get(at..end).ok_or(truncated)?;
        let payload = &segment[4..];
        at = end;
        match marker {
            marker if is_frame_header(marker) => {
                // Precision, then height and width. A height of 0 would be given later (DNL),
                // after the check: refused, as browsers do not support it either.
                let (Some(height @ 1..), Some(width @ 1..)) = (be16(payload, 1), be16(payload, 3))
                else {
                    return Err(Damaged("the jpeg frame header gives no valid size"));
                };
                extent.include(width.into(), height.into());
                has_frame = true;
                out.extend_from_slice(segment);
            }
            SOS => {
                if !has_frame {
                    return Err(Damaged("a jpeg scan comes before its frame header"));
                }
                out.extend_from_slice(segment);
                let data_end = scan_end(bytes, at);
                out.extend_from_slice(&bytes[at..data_end]);
                at = data_end;
            }
            APP0 if payload.starts_with(b"JFIF\0") => {
                // JFIF 1.02: identifier, version, units, densities (12 bytes), then the
                // thumbnail's width and height and its pixels.
                if payload.len() > 14 {
                    out.extend_from_slice(&[0xff, APP0, 0, 16]);
                    out.extend_from_slice(&payload[..12]);
                    out.extend_from_slice(&[0, 0]);
                } else {
                    out.extend_from_slice(segment);
                }
            }
            APP1 if !exif_seen && payload.starts_with(b"Exif\0\0") => {
                exif_seen = true;
                if let Some(orientation) = exif::orientation(&payload[6..]) {
                    out.extend_from_slice(&[0xff, APP1, 0, 34]);
                    out.extend_from_slice(b"Exif\0\0");
                    out.extend_from_slice(&exif::minimal(orientation));
                }
            }
            APP2 if payload.starts_with(b"ICC_PROFILE\0") => out.extend_from_slice(segment),
            APP14 if payload.starts_with(b"Adobe") => out.extend_from_slice(segment),
            APP0..=0xef | COM => {}
            _ => out.extend_from_slice(segment),
        }
    }
    if !has_frame {
        return Err(Damaged("a jpeg has no frame header"));
    }
    extent.finish(out)
}

/// Where the entropy-coded data starting at `at` ends: at the first marker that is neither a
/// stuffed zero (`FF 00`) nor a restart marker, or at the end of the file.
fn scan_end(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() {
        if bytes[at] != 0xff {
            at += 1;
            continue;
        }
        match bytes.get(at + 1) {
            Some(0x00 | 0xd0..=0xd7) => at += 2,
            // Padding: the marker starts at the last 0xFF.
            Some(0xff) => at += 1,
            Some(_) => return at,
            None => return bytes.len(),
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::super::test_images::{self, contains, jpeg, jpeg_segment};
    use super::*;

    #[test]
    fn the_frame_header_gives_the_size() {
        let image = jpeg(30_000, 20_000, &[test_images::jfif(b"")]);
        let cleaned = clean(&image).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (30_000, 20_000));
        assert_eq!(cleaned.bytes, image, "a clean jpeg is unchanged");
        // A progressive frame header counts the same.
        let progressive: Vec<u8> = image
            .iter()
            .copied()
            .enumerate()
            .map(|(index, byte)| {
                let at_frame = image[..index].ends_with(&[0xff]) && byte == 0xc0;
                if at_frame {
                    0xc2
                } else {
                    byte
                }
            })
            .collect();
        assert_eq!(clean(&progressive).unwrap().width, 30_000);
    }

    #[test]
    fn exif_gps_xmp_iptc_and_comments_go_and_the_scan_stays() {
        let image = test_images::jpeg_with_metadata();
        let cleaned = clean(&image).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (2, 1));
        for gone in [
            &b"GPS"[..],
            b"Secret",
            b"THM",
            b"http://ns.adobe.com",
            b"MPF",
        ] {
            assert!(
                !contains(&cleaned.bytes, gone),
                "{}",
                String::from_utf8_lossy(gone)
            );
        }
        assert!(contains(&cleaned.bytes, test_images::JPEG_SCAN));
        assert!(contains(
            &cleaned.bytes,
            b"ICC_PROFILE\0\x01\x01-colour-profile-"
        ));
        assert!(contains(&cleaned.bytes, b"Adobe"));
        assert!(contains(&cleaned.bytes, &test_images::jfif(b"")));
        let orientation = [&b"Exif\0\0"[..], &exif::minimal(6)].concat();
        assert!(contains(&cleaned.bytes, &jpeg_segment(APP1, &orientation)));
        assert!(cleaned.bytes.ends_with(&[0xff, EOI]));
    }

    #[test]
    fn a_photo_without_orientation_loses_exif_whole() {
        let exif = [&b"Exif\0\0"[..], &exif::minimal(1)].concat();
        let image = jpeg(4, 4, &[jpeg_segment(APP1, &exif)]);
        assert_eq!(clean(&image).unwrap().bytes, jpeg(4, 4, &[]));
    }

    #[test]
    fn broken_structure_is_refused() {
        let image = jpeg(4, 4, &[]);
        assert!(clean(&jpeg(4, 0, &[])).is_err(), "height from a later DNL");
        assert!(clean(&jpeg(0, 4, &[])).is_err());
        assert!(clean(&image[..10]).is_err(), "a cut segment");
        assert!(clean(&[0xff, SOI, 0xff]).is_err());
        assert!(
            clean(&[0xff, SOI, 0xff, 0xe1, 0, 1]).is_err(),
            "length below 2"
        );
        assert!(clean(&[0xff, SOI, 0xff, EOI]).is_err(), "no frame");
        let scan_first = [
            &[0xff, SOI][..],
            &jpeg_segment(SOS, &[1, 1, 0, 0, 63, 0]),
            &[0xff, EOI],
        ]
        .concat();
        assert!(clean(&scan_first).is_err());
        // A file cut inside its scan data is kept as far as it goes, as browsers show it.
        let cut = &image[..image.len() - 4];
        assert_eq!(clean(cut).unwrap().bytes, cut);
    }

    #[test]
    fn padding_and_stray_bytes_before_markers_are_tolerated() {
        let image = jpeg(4, 4, &[]);
        let padded = [&image[..2], &[0xff, 0xff][..], &image[2..]].concat();
        assert_eq!(clean(&padded).unwrap().bytes, image);
        let stray = [&image[..2], b"Secret", &image[2..]].concat();
        assert_eq!(clean(&stray).unwrap().bytes, image);
    }
}
