//! PNG: chunks after an 8-byte signature; the first is `IHDR` (width, height).
//!
//! Critical chunks (an upper-case first letter: `IHDR`, `PLTE`, `IDAT`, `IEND`) are kept, and of
//! the ancillary ones only those that change how pixels look or move (colour, transparency,
//! animation). Text (`tEXt`, `zTXt`, `iTXt`, where XMP lives too), `tIME`, `eXIf` and editors'
//! private chunks go: the format lets any decoder ignore an ancillary chunk, so none is needed
//! to show the image. Bytes after `IEND` go too.

use super::clean::{be32, Cleaned, Damaged, Extent};
use super::exif;

pub(super) const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// The format's own bound on a chunk's length and on each dimension.
const MAX_LENGTH: u32 = 0x7fff_ffff;

/// Ancillary chunks kept: colour (`cHRM`, `gAMA`, `iCCP`, `sBIT`, `sRGB`, `cICP`, `mDCV`,
/// `cLLI`), transparency and background (`tRNS`, `bKGD`), palette hints (`hIST`, `sPLT`),
/// physical size (`pHYs`) and APNG animation (`acTL`, `fcTL`, `fdAT`).
const KEPT_ANCILLARY: [&[u8; 4]; 16] = [
    b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB", b"cICP", b"mDCV", b"cLLI", b"tRNS", b"bKGD",
    b"hIST", b"sPLT", b"pHYs", b"acTL", b"fcTL", b"fdAT",
];

pub(super) fn clean(bytes: &[u8]) -> Result<Cleaned, Damaged> {
    if !bytes.starts_with(SIGNATURE) {
        return Err(Damaged("it is not a png file"));
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(SIGNATURE);
    let mut extent: Option<Extent> = None;
    let mut orientation_seen = false;
    let mut at = SIGNATURE.len();
    // Each chunk moves `at` forward by at least 12 bytes.
    while at < bytes.len() {
        let truncated = Damaged("a png chunk runs past the end of the file");
        let length = be32(bytes, at).ok_or(truncated)?;
        if length > MAX_LENGTH {
            return Err(Damaged("a png chunk is longer than the format allows"));
        }
        let kind: [u8; 4] = super::clean::array(bytes, at + 4).ok_or(truncated)?;
        let data_start = at + 8;
        let data_end = data_start.checked_add(length as usize).ok_or(truncated)?;
        let end = data_end.checked_add(4).ok_or(truncated)?;
        let chunk = bytes.get(at..end).ok_or(truncated)?;
        let data = &bytes[data_start..data_end];
        at = end;
        let Some(extent) = extent.as_mut() else {
            if &kind != b"IHDR" || length != 13 {
                return Err(Damaged("a png must start with its header"));
            }
            let (width, height) = (be32(data, 0), be32(data, 4));
            let (Some(width @ 1..=MAX_LENGTH), Some(height @ 1..=MAX_LENGTH)) = (width, height)
            else {
                return Err(Damaged("the png header gives no valid size"));
            };
            let mut first = Extent::default();
            first.include(width.into(), height.into());
            extent = Some(first);
            out.extend_from_slice(chunk);
            continue;
        };
        match &kind {
            b"IEND" => {
                out.extend_from_slice(chunk);
                break;
            }
            b"IHDR" => return Err(Damaged("a png has two headers")),
            b"fcTL" => {
                // An animation frame: width, height, then x and y offsets on the canvas.
                let field = |offset| be32(data, offset).map(u64::from);
                let (Some(width), Some(height), Some(x), Some(y)) =
                    (field(4), field(8), field(12), field(16))
                else {
                    return Err(Damaged("a png frame header is too short"));
                };
                extent.include(x + width, y + height);
                out.extend_from_slice(chunk);
            }
            // Only the first EXIF block counts; later ones fall to the arm that drops them.
            b"eXIf" if !orientation_seen => {
                orientation_seen = true;
                if let Some(orientation) = exif::orientation(data) {
                    write_chunk(&mut out, b"eXIf", &exif::minimal(orientation));
                }
            }
            kind if kind[0] & 0x20 == 0 || KEPT_ANCILLARY.contains(&kind) => {
                out.extend_from_slice(chunk);
            }
            _ => {}
        }
    }
    extent
        .ok_or(Damaged("a png must start with its header"))?
        .finish(out)
}

/// Appends a chunk with its CRC (over type and data, as the format defines it).
pub(super) fn write_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    // Only ever called with the small blocks this module builds.
    let length = u32::try_from(data.len()).unwrap_or(MAX_LENGTH);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::test_images::{self, contains};
    use super::*;

    #[test]
    fn the_header_gives_the_size() {
        let image = test_images::png(30_000, 20_000, &[]);
        let cleaned = clean(&image).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (30_000, 20_000));
        assert_eq!(cleaned.bytes, image, "a clean png is unchanged");
    }

    #[test]
    fn text_time_and_exif_go_and_pixels_and_colour_stay() {
        let image = test_images::png_with_metadata();
        let cleaned = clean(&image).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (2, 1));
        for gone in [
            &b"tEXt"[..],
            b"zTXt",
            b"iTXt",
            b"tIME",
            b"GPS",
            b"Secret",
            b"trailing",
        ] {
            assert!(
                !contains(&cleaned.bytes, gone),
                "{}",
                String::from_utf8_lossy(gone)
            );
        }
        assert!(contains(&cleaned.bytes, test_images::PNG_PIXELS));
        assert!(contains(&cleaned.bytes, b"sRGB"));
        // The orientation survives, alone, in a well-formed chunk.
        let mut expected = Vec::new();
        write_chunk(&mut expected, b"eXIf", &exif::minimal(6));
        assert!(contains(&cleaned.bytes, &expected));
        assert!(cleaned
            .bytes
            .ends_with(&test_images::png_chunk(b"IEND", b"")));
    }

    #[test]
    fn broken_structure_is_refused() {
        let image = test_images::png(1, 1, &[]);
        assert!(clean(&image[..20]).is_err(), "a cut header");
        assert!(clean(&image[..40]).is_err(), "a cut chunk");
        let zero = test_images::png(0, 1, &[]);
        assert!(clean(&zero).is_err());
        let mut huge_length = image.clone();
        huge_length[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(clean(&huge_length).is_err());
        let no_header = [&SIGNATURE[..], &test_images::png_chunk(b"IDAT", b"x")].concat();
        assert!(clean(&no_header).is_err());
        assert!(clean(SIGNATURE).is_err());
    }

    #[test]
    fn animation_frames_count_towards_the_size() {
        let mut frame = Vec::new();
        for value in [0u32, 100, 50, 10_000, 20_000] {
            frame.extend_from_slice(&value.to_be_bytes());
        }
        frame.extend_from_slice(&[0, 1, 0, 1, 0, 0]);
        let image = test_images::png(10, 10, &[(b"fcTL", &frame)]);
        let cleaned = clean(&image).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (10_100, 20_050));
    }
}
