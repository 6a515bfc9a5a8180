//! WebP: a RIFF container of chunks. A simple file holds one `VP8 ` (lossy) or `VP8L` (lossless)
//! bitstream, whose header gives the size; an extended one starts with `VP8X` (flags and canvas
//! size) and may add `ICCP`, `ANIM`, `ANMF` frames, `ALPH`, `EXIF` and `XMP `.
//!
//! Kept: the bitstreams, frames, alpha, animation settings and the ICC profile. EXIF is replaced
//! by the orientation alone (see [`super::exif`]); XMP and unknown chunks go, with whatever
//! follows the RIFF's end. The `VP8X` flags are set to match, and the RIFF size is recomputed.

use super::clean::{array, le16, le24, le32, Cleaned, Damaged, Extent};
use super::exif;

/// `VP8X` flags for the metadata chunks.
const EXIF_FLAG: u8 = 0x08;
const XMP_FLAG: u8 = 0x04;

pub(super) fn clean(bytes: &[u8]) -> Result<Cleaned, Damaged> {
    if bytes.get(..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WEBP") {
        return Err(Damaged("it is not a webp file"));
    }
    let truncated = Damaged("a webp chunk runs past the end of the file");
    let declared = le32(bytes, 4).ok_or(truncated)?;
    let body_end = usize::try_from(declared)
        .ok()
        .and_then(|size| size.checked_add(8))
        .map_or(bytes.len(), |end| end.min(bytes.len()));
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(b"RIFF\0\0\0\0WEBP");
    let mut extent = Extent::default();
    let mut flags_at = None;
    let mut has_pixels = false;
    let mut exif_seen = false;
    let mut exif_kept = false;
    let mut at = 12;
    // Each chunk moves `at` forward by at least 8 bytes.
    while at < body_end {
        let kind: [u8; 4] = array(bytes, at).ok_or(truncated)?;
        let size = le32(bytes, at + 4).ok_or(truncated)?;
        let data_start = at + 8;
        let data_end = usize::try_from(size)
            .ok()
            .and_then(|size| data_start.checked_add(size))
            .filter(|&end| end <= body_end)
            .ok_or(truncated)?;
        let data = &bytes[data_start..data_end];
        let first = at == 12;
        // Chunks are padded to an even length.
        at = data_end + (data.len() & 1);
        match &kind {
            b"VP8X" if first => {
                let (Some(width), Some(height)) = (le24(data, 4), le24(data, 7)) else {
                    return Err(Damaged("the webp header is too short"));
                };
                extent.include(u64::from(width) + 1, u64::from(height) + 1);
                flags_at = Some(out.len() + 8);
                write_chunk(&mut out, &kind, data);
            }
            b"VP8 " => {
                let (width, height) = lossy_size(data)?;
                extent.include(width, height);
                has_pixels = true;
                write_chunk(&mut out, &kind, data);
            }
            b"VP8L" => {
                let (width, height) = lossless_size(data)?;
                extent.include(width, height);
                has_pixels = true;
                write_chunk(&mut out, &kind, data);
            }
            b"ANMF" => {
                // Offsets (in units of two pixels), then width and height less one.
                let field = |offset| le24(data, offset).map(u64::from);
                let (Some(x), Some(y), Some(width), Some(height)) =
                    (field(0), field(3), field(6), field(9))
                else {
                    return Err(Damaged("a webp frame header is too short"));
                };
                extent.include(2 * x + width + 1, 2 * y + height + 1);
                has_pixels = true;
                write_chunk(&mut out, &kind, data);
            }
            b"ICCP" | b"ANIM" | b"ALPH" => write_chunk(&mut out, &kind, data),
            b"EXIF" if !exif_seen => {
                exif_seen = true;
                // Some writers keep JPEG's "Exif\0\0" before the TIFF block.
                let tiff = data.strip_prefix(b"Exif\0\0").unwrap_or(data);
                if let Some(orientation) = exif::orientation(tiff) {
                    write_chunk(&mut out, b"EXIF", &exif::minimal(orientation));
                    exif_kept = true;
                }
            }
            _ => {}
        }
    }
    if !has_pixels {
        return Err(Damaged("a webp has no image data"));
    }
    if let Some(flags) = flags_at.and_then(|at| out.get_mut(at)) {
        *flags &= !(EXIF_FLAG | XMP_FLAG);
        if exif_kept {
            *flags |= EXIF_FLAG;
        }
    }
    // At most the input's length, which fits the RIFF's 32-bit size as it came in one.
    let riff_size = u32::try_from(out.len() - 8).map_err(|_| truncated)?;
    out[4..8].copy_from_slice(&riff_size.to_le_bytes());
    extent.finish(out)
}

fn write_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(kind);
    // Data comes from a chunk whose size was a u32, or from this module.
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
}

/// A VP8 key frame: a 3-byte frame tag, the start code, then 14-bit width and height (the top
/// two bits are an upscaling hint decoders ignore).
fn lossy_size(data: &[u8]) -> Result<(u64, u64), Damaged> {
    let broken = Damaged("the webp lossy header is not valid");
    let is_key_frame = data.first().is_some_and(|tag| tag & 1 == 0);
    if !is_key_frame || data.get(3..6) != Some(&[0x9d, 0x01, 0x2a]) {
        return Err(broken);
    }
    let (Some(width), Some(height)) = (le16(data, 6), le16(data, 8)) else {
        return Err(broken);
    };
    Ok((u64::from(width & 0x3fff), u64::from(height & 0x3fff)))
}

/// A VP8L stream: the signature byte 0x2F, then width and height less one, 14 bits each.
fn lossless_size(data: &[u8]) -> Result<(u64, u64), Damaged> {
    let broken = Damaged("the webp lossless header is not valid");
    if data.first() != Some(&0x2f) {
        return Err(broken);
    }
    let bits = le32(data, 1).ok_or(broken)?;
    Ok((
        u64::from(bits & 0x3fff) + 1,
        u64::from((bits >> 14) & 0x3fff) + 1,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_images::{self, contains, riff_chunk, vp8l, vp8x, webp};
    use super::*;

    #[test]
    fn each_header_gives_the_size() {
        let lossless = webp(&[vp8l(300, 200)]);
        let cleaned = clean(&lossless).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (300, 200));
        assert_eq!(cleaned.bytes, lossless, "a clean webp is unchanged");

        let mut frame = vec![0x10, 0, 0, 0x9d, 0x01, 0x2a];
        frame.extend_from_slice(&16_383u16.to_le_bytes());
        frame.extend_from_slice(&(0xc000u16 | 1_000).to_le_bytes());
        let lossy = webp(&[riff_chunk(b"VP8 ", &frame)]);
        let cleaned = clean(&lossy).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (16_383, 1_000));

        // An extended file: the canvas, 24 bits a side, and animation frames on it.
        let mut anmf = Vec::new();
        for value in [10u32, 0, 99, 49] {
            anmf.extend_from_slice(&value.to_le_bytes()[..3]);
        }
        anmf.extend_from_slice(&[0; 4]);
        let animated = webp(&[
            vp8x(0x02, 30_000, 30_000),
            riff_chunk(b"ANIM", &[0; 6]),
            riff_chunk(b"ANMF", &anmf),
        ]);
        let cleaned = clean(&animated).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (30_000, 30_000));
        assert_eq!(cleaned.bytes, animated);
        let small_canvas = webp(&[vp8x(0x02, 4, 4), riff_chunk(b"ANMF", &anmf)]);
        let cleaned = clean(&small_canvas).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (120, 50));
    }

    #[test]
    fn exif_xmp_and_unknown_chunks_go_and_flags_follow() {
        let image = test_images::webp_with_metadata();
        let cleaned = clean(&image).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (2, 1));
        for gone in [&b"GPS"[..], b"Secret", b"XMP ", b"ZZZZ"] {
            assert!(
                !contains(&cleaned.bytes, gone),
                "{}",
                String::from_utf8_lossy(gone)
            );
        }
        assert!(contains(&cleaned.bytes, test_images::WEBP_PIXELS));
        let expected = webp(&[
            vp8x(0x28, 2, 1),
            riff_chunk(b"ICCP", b"-colour-profile-"),
            vp8l(2, 1),
            riff_chunk(b"EXIF", &exif::minimal(6)),
        ]);
        assert_eq!(cleaned.bytes, expected);
        // Without an orientation the EXIF flag goes too.
        let plain = webp(&[
            vp8x(0x0c, 2, 1),
            vp8l(2, 1),
            riff_chunk(b"EXIF", &exif::minimal(1)),
        ]);
        assert_eq!(
            clean(&plain).unwrap().bytes,
            webp(&[vp8x(0, 2, 1), vp8l(2, 1)])
        );
    }

    #[test]
    fn broken_structure_is_refused() {
        let image = webp(&[vp8l(3, 3)]);
        assert!(clean(&image[..14]).is_err(), "a cut chunk header");
        assert!(clean(&image[..22]).is_err(), "a cut chunk");
        assert!(clean(&webp(&[vp8x(0, 3, 3)])).is_err(), "no image data");
        assert!(clean(&webp(&[riff_chunk(b"VP8L", b"\x2f")])).is_err());
        assert!(clean(&webp(&[riff_chunk(b"VP8 ", &[0; 10])])).is_err());
        assert!(clean(&webp(&[riff_chunk(b"ANMF", &[0; 8])])).is_err());
        // A RIFF size past the end of the file is read as far as the file goes.
        let mut long = image.clone();
        long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(clean(&long).unwrap().bytes, image);
    }
}
