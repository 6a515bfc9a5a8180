//! GIF: a header and logical screen (the canvas size), an optional colour table, then blocks:
//! frames (`2C`), extensions (`21`) and the trailer (`3B`).
//!
//! Each frame has its own size and position, and may reach past the logical screen, so the
//! size checked is the screen grown to hold every frame. Kept: frames, graphic control (delays,
//! transparency), plain text, and the application extensions that change how the image plays
//! or looks (`NETSCAPE2.0` and `ANIMEXTS1.0` loop counts, `ICCRGBG1012` colour profiles).
//! Dropped: comments, XMP (`XMP DataXMP`), every other application's data, and whatever follows
//! the trailer.

use super::clean::{le16, Cleaned, Damaged, Extent};

const FRAME: u8 = 0x2c;
const EXTENSION: u8 = 0x21;
const TRAILER: u8 = 0x3b;
const GRAPHIC_CONTROL: u8 = 0xf9;
const PLAIN_TEXT: u8 = 0x01;
const APPLICATION: u8 = 0xff;

const KEPT_APPLICATIONS: [&[u8; 11]; 3] = [b"NETSCAPE2.0", b"ANIMEXTS1.0", b"ICCRGBG1012"];

/// The size of the colour table a packed field announces (its flag in the top bit).
fn colour_table_len(packed: u8) -> usize {
    if packed & 0x80 == 0 {
        0
    } else {
        3 << ((packed & 0x07) + 1)
    }
}

pub(super) fn clean(bytes: &[u8]) -> Result<Cleaned, Damaged> {
    if !(bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a")) {
        return Err(Damaged("it is not a gif file"));
    }
    let truncated = Damaged("a gif block runs past the end of the file");
    let (Some(width), Some(height), Some(&packed)) =
        (le16(bytes, 6), le16(bytes, 8), bytes.get(10))
    else {
        return Err(truncated);
    };
    let mut extent = Extent::default();
    extent.include(width.into(), height.into());
    let mut at = 13 + colour_table_len(packed);
    let mut out = bytes.get(..at).ok_or(truncated)?.to_vec();
    out.reserve(bytes.len() - at);
    // Each block moves `at` forward by at least two bytes.
    while let Some(&introducer) = bytes.get(at) {
        match introducer {
            TRAILER => {
                out.push(TRAILER);
                break;
            }
            FRAME => {
                let field = |offset| le16(bytes, at + offset).map(u64::from);
                let (Some(left), Some(top), Some(width), Some(height), Some(&packed)) =
                    (field(1), field(3), field(5), field(7), bytes.get(at + 9))
                else {
                    return Err(truncated);
                };
                extent.include(left + width, top + height);
                // The local colour table, the LZW code size, then the pixel data blocks.
                let data = at + 10 + colour_table_len(packed) + 1;
                let end = skip_blocks(bytes, data)?;
                out.extend_from_slice(&bytes[at..end]);
                at = end;
            }
            EXTENSION => {
                let label = *bytes.get(at + 1).ok_or(truncated)?;
                let end = skip_blocks(bytes, at + 2)?;
                let keep = match label {
                    GRAPHIC_CONTROL | PLAIN_TEXT => true,
                    // The first block of an application extension is its 11-byte name.
                    APPLICATION => {
                        bytes.get(at + 2) == Some(&11)
                            && bytes.get(at + 3..at + 14).is_some_and(|name| {
                                KEPT_APPLICATIONS.iter().any(|kept| *kept == name)
                            })
                    }
                    _ => false,
                };
                if keep {
                    out.extend_from_slice(&bytes[at..end]);
                }
                at = end;
            }
            _ => return Err(Damaged("a gif has a block of unknown kind")),
        }
    }
    extent.finish(out)
}

/// The end of the data blocks starting at `at` (each a length byte then that many bytes; a
/// zero length ends them).
fn skip_blocks(bytes: &[u8], mut at: usize) -> Result<usize, Damaged> {
    loop {
        let length = *bytes
            .get(at)
            .ok_or(Damaged("a gif block runs past the end of the file"))?;
        at += 1 + usize::from(length);
        if length == 0 {
            return Ok(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_images::{self, contains, gif, gif_extension};
    use super::*;

    #[test]
    fn the_screen_and_frames_give_the_size() {
        let image = gif(&[gif_extension(0xff, &[b"NETSCAPE2.0", &[1, 0, 0]])]);
        let cleaned = clean(&image).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (2, 1));
        assert_eq!(cleaned.bytes, image, "a clean gif is unchanged");
        // A tiny screen with a frame placed far out on it.
        let mut far = image.clone();
        let frame = far.iter().position(|&byte| byte == FRAME).unwrap();
        far[frame + 1..frame + 9].copy_from_slice(&[0x30, 0x75, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        let cleaned = clean(&far).unwrap();
        assert_eq!((cleaned.width, cleaned.height), (30_000 + 65_535, 65_535));
    }

    #[test]
    fn comments_and_xmp_go_and_frames_and_loops_stay() {
        let image = test_images::gif_with_metadata();
        let cleaned = clean(&image).unwrap();
        for gone in [&b"GPS"[..], b"Secret", b"XMP DataXMP", b"MGK8BIM"] {
            assert!(
                !contains(&cleaned.bytes, gone),
                "{}",
                String::from_utf8_lossy(gone)
            );
        }
        assert!(contains(&cleaned.bytes, test_images::GIF_PIXELS));
        assert!(contains(&cleaned.bytes, b"NETSCAPE2.0"));
        assert_eq!(
            cleaned.bytes,
            gif(&[gif_extension(0xff, &[b"NETSCAPE2.0", &[1, 0, 0]])])
        );
    }

    #[test]
    fn broken_structure_is_refused() {
        let image = gif(&[]);
        assert!(clean(&image[..11]).is_err(), "a cut screen");
        assert!(clean(&image[..15]).is_err(), "a cut colour table");
        assert!(clean(&image[..image.len() - 3]).is_err(), "a cut frame");
        let mut unknown = image.clone();
        let trailer = unknown.len() - 1;
        unknown[trailer] = 0x99;
        assert!(clean(&unknown).is_err());
        let empty = b"GIF89a\0\0\0\0\0\0\0\x3b";
        assert!(clean(empty).is_err(), "no pixels");
    }
}
