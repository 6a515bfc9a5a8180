//! An image's structure read without decoding a pixel: its size, and its bytes without metadata.
//!
//! Each format module walks its container (PNG chunks, JPEG segments, GIF blocks, RIFF chunks)
//! once, with every offset checked against the input, and copies the parts that decide how the
//! pixels look; metadata is left behind. The same walk measures the image, so the size that is
//! checked belongs to exactly the bytes that are stored. Input comes from anyone: no index is
//! unchecked and every loop advances through the input, so a walk ends in time linear in its
//! length.

use super::{gif, jpeg, png, webp, ImageKind};

/// Why an image's structure was refused (a short phrase for the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damaged(pub &'static str);

/// An image's canvas and its bytes with the metadata removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// Width of the smallest canvas that holds every frame, in pixels.
    pub width: u64,
    pub height: u64,
    pub bytes: Vec<u8>,
}

impl Cleaned {
    /// What a viewer's decoder holds for one frame.
    pub fn pixels(&self) -> u64 {
        self.width.saturating_mul(self.height)
    }
}

/// Measures and strips an image whose type was sniffed as `kind`.
pub fn clean(kind: ImageKind, bytes: &[u8]) -> Result<Cleaned, Damaged> {
    match kind {
        ImageKind::Png => png::clean(bytes),
        ImageKind::Jpeg => jpeg::clean(bytes),
        ImageKind::Gif => gif::clean(bytes),
        ImageKind::Webp => webp::clean(bytes),
    }
}

/// The smallest canvas holding every frame seen so far. A frame can lie partly outside the
/// declared canvas (GIF allows it); decoders then grow the canvas or clip, so the limit is
/// checked against the larger of the two.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Extent {
    width: u64,
    height: u64,
}

impl Extent {
    pub(super) fn include(&mut self, right: u64, bottom: u64) {
        self.width = self.width.max(right);
        self.height = self.height.max(bottom);
    }

    pub(super) fn finish(self, bytes: Vec<u8>) -> Result<Cleaned, Damaged> {
        if self.width == 0 || self.height == 0 {
            return Err(Damaged("it has no pixels"));
        }
        Ok(Cleaned {
            width: self.width,
            height: self.height,
            bytes,
        })
    }
}

/// `N` bytes at `at`, or `None` past the end.
pub(super) fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

pub(super) fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    array(bytes, at).map(u16::from_be_bytes)
}

pub(super) fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    array(bytes, at).map(u32::from_be_bytes)
}

pub(super) fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    array(bytes, at).map(u16::from_le_bytes)
}

pub(super) fn le24(bytes: &[u8], at: usize) -> Option<u32> {
    array::<3>(bytes, at).map(|[a, b, c]| u32::from_le_bytes([a, b, c, 0]))
}

pub(super) fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    array(bytes, at).map(u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::test_images;
    use super::*;

    const KINDS: [ImageKind; 4] = [
        ImageKind::Png,
        ImageKind::Jpeg,
        ImageKind::Gif,
        ImageKind::Webp,
    ];

    fn samples() -> Vec<(ImageKind, Vec<u8>)> {
        vec![
            (ImageKind::Png, test_images::png_with_metadata()),
            (ImageKind::Jpeg, test_images::jpeg_with_metadata()),
            (ImageKind::Gif, test_images::gif_with_metadata()),
            (ImageKind::Webp, test_images::webp_with_metadata()),
        ]
    }

    #[test]
    fn cleaning_twice_changes_nothing_more() {
        for (kind, image) in samples() {
            let once = clean(kind, &image).unwrap();
            let twice = clean(kind, &once.bytes).unwrap();
            assert_eq!(once, twice, "{kind:?}");
            assert!(once.bytes.len() < image.len(), "{kind:?} lost its metadata");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Random bytes behind each signature: refused or measured, never a panic.
        #[test]
        fn random_bytes_never_panic(kind in 0..4usize, tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let head: &[u8] = match KINDS[kind] {
                ImageKind::Png => b"\x89PNG\r\n\x1a\n",
                ImageKind::Jpeg => &[0xff, 0xd8, 0xff],
                ImageKind::Gif => b"GIF89a",
                ImageKind::Webp => b"RIFF\x40\0\0\0WEBP",
            };
            let bytes = [head, &tail].concat();
            if let Ok(cleaned) = clean(KINDS[kind], &bytes) {
                prop_assert!(cleaned.bytes.len() <= bytes.len() + 64);
            }
        }

        /// Valid images with a few bytes changed, cut short or grown: the same.
        #[test]
        fn damaged_images_never_panic(
            sample in 0..4usize,
            changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
            should_cut in any::<bool>(),
        ) {
            let (kind, mut bytes) = samples().swap_remove(sample);
            for (index, value) in changes {
                let at = index.index(bytes.len());
                bytes[at] = value;
            }
            if should_cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            if let Ok(cleaned) = clean(kind, &bytes) {
                // What was accepted once is accepted again, unchanged.
                prop_assert_eq!(clean(kind, &cleaned.bytes), Ok(cleaned));
            }
        }
    }
}
