//! Small images built by hand for the format tests, each carrying every kind of metadata its
//! format has, plus pixel data the tests look for afterwards. Built without the code under test,
//! and shared with `tests/images.rs` (included there by path).

const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

pub const PNG_PIXELS: &[u8] = b"x\x9c-png-pixel-data-\xff\x00\x01";
pub const JPEG_SCAN: &[u8] = b"\x12\x34\xff\x00\x56\xff\xd0\x78\x9a-jpeg-scan-\xff\x00";
pub const GIF_PIXELS: &[u8] = b"\x84\x8f-gif-lzw-\x01";
pub const WEBP_PIXELS: &[u8] = b"-webp-lossless-bits-";

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A big-endian EXIF block: orientation 6 (turn right), a camera serial and a GPS directory.
pub fn exif_with_gps() -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    // Directory 0 at 8: three entries (12 bytes each), then the next-directory offset.
    tiff.extend_from_slice(&[0, 3]);
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
    // BodySerialNumber (ASCII, 8 bytes at 50).
    tiff.extend_from_slice(&[0xa4, 0x31, 0, 2, 0, 0, 0, 8, 0, 0, 0, 50]);
    // GPSInfo: the GPS directory at 58.
    tiff.extend_from_slice(&[0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 58]);
    tiff.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(tiff.len(), 50);
    tiff.extend_from_slice(b"Secret1\0");
    // GPS directory: GPSLatitudeRef "N", GPSMapDatum "GPS-WGS84" (10 bytes at 88).
    tiff.extend_from_slice(&[0, 2]);
    tiff.extend_from_slice(&[0, 1, 0, 2, 0, 0, 0, 2, b'N', 0, 0, 0]);
    tiff.extend_from_slice(&[0, 0x12, 0, 2, 0, 0, 0, 10, 0, 0, 0, 88]);
    tiff.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(tiff.len(), 88);
    tiff.extend_from_slice(b"GPS-WGS84\0");
    tiff
}

pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(data.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&[&kind[..], data].concat());
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A PNG of the given size with `extra` chunks between its header and its pixels.
pub fn png(width: u32, height: u32, extra: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut out = SIGNATURE.to_vec();
    out.extend(png_chunk(b"IHDR", &header));
    for (kind, data) in extra {
        out.extend(png_chunk(kind, data));
    }
    out.extend(png_chunk(b"IDAT", PNG_PIXELS));
    out.extend(png_chunk(b"IEND", b""));
    out
}

pub fn png_with_metadata() -> Vec<u8> {
    let exif = exif_with_gps();
    let mut image = png(
        2,
        1,
        &[
            (b"sRGB", &[0]),
            (b"tEXt", b"Author\0Secret"),
            (b"zTXt", b"Comment\0\0x\x9cSecret"),
            (b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0<x>GPS Secret</x>"),
            (b"tIME", &[7, 234, 12, 2, 8, 0, 0]),
            (b"eXIf", &exif),
            (b"prVt", b"an editor's Secret"),
        ],
    );
    image.extend_from_slice(b"trailing bytes after the end");
    image
}

pub fn jpeg_segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let length = u16::try_from(payload.len() + 2).unwrap();
    let mut out = vec![0xff, marker];
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A baseline JPEG, `width` × `height`, with `extra` segments after its start marker.
pub fn jpeg(width: u16, height: u16, extra: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0xff, 0xd8];
    for segment in extra {
        out.extend_from_slice(segment);
    }
    out.extend(jpeg_segment(0xdb, &[0; 65]));
    let mut frame = vec![8];
    frame.extend_from_slice(&height.to_be_bytes());
    frame.extend_from_slice(&width.to_be_bytes());
    frame.extend_from_slice(&[1, 1, 0x11, 0]);
    out.extend(jpeg_segment(0xc0, &frame));
    out.extend(jpeg_segment(0xc4, &[0; 29]));
    out.extend(jpeg_segment(0xda, &[1, 1, 0, 0, 63, 0]));
    out.extend_from_slice(JPEG_SCAN);
    out.extend_from_slice(&[0xff, 0xd9]);
    out
}

pub fn jfif(thumbnail: &[u8]) -> Vec<u8> {
    let mut payload = b"JFIF\0\x01\x02\0\0\x48\0\x48".to_vec();
    if thumbnail.is_empty() {
        payload.extend_from_slice(&[0, 0]);
    } else {
        payload.extend_from_slice(&[1, 1]);
        payload.extend_from_slice(thumbnail);
    }
    jpeg_segment(0xe0, &payload)
}

pub fn jpeg_with_metadata() -> Vec<u8> {
    let exif = [&b"Exif\0\0"[..], &exif_with_gps()].concat();
    let xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>GPS Secret</x:xmpmeta>";
    let mut image = jpeg(
        2,
        1,
        &[
            jfif(b"THM"),
            jpeg_segment(0xe1, &exif),
            jpeg_segment(0xe1, xmp),
            jpeg_segment(0xe2, b"ICC_PROFILE\0\x01\x01-colour-profile-"),
            jpeg_segment(0xe2, b"MPF\0Secret"),
            jpeg_segment(0xed, b"Photoshop 3.0\08BIM\x04\x04Secret"),
            jpeg_segment(0xee, b"Adobe\0\x64\0\0\0\0\x01"),
            jpeg_segment(0xef, b"Secret"),
            jpeg_segment(0xfe, b"a Secret comment"),
        ],
    );
    image.extend_from_slice(b"trailing Secret after the end");
    image
}

/// A 2 × 1 GIF with a global colour table, `extensions` before its one frame.
pub fn gif(extensions: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"GIF89a\x02\0\x01\0\x80\0\0".to_vec();
    out.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    for extension in extensions {
        out.extend_from_slice(extension);
    }
    // Graphic control, then the frame: descriptor, LZW code size, one data block, terminator.
    out.extend_from_slice(&[0x21, 0xf9, 4, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0x2c, 0, 0, 0, 0, 2, 0, 1, 0, 0, 2]);
    out.push(u8::try_from(GIF_PIXELS.len()).unwrap());
    out.extend_from_slice(GIF_PIXELS);
    out.extend_from_slice(&[0, 0x3b]);
    out
}

pub fn gif_extension(label: u8, blocks: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![0x21, label];
    for block in blocks {
        out.push(u8::try_from(block.len()).unwrap());
        out.extend_from_slice(block);
    }
    out.push(0);
    out
}

pub fn gif_with_metadata() -> Vec<u8> {
    let mut image = gif(&[
        gif_extension(0xff, &[b"NETSCAPE2.0", &[1, 0, 0]]),
        gif_extension(0xfe, &[b"a Secret comment"]),
        gif_extension(0xff, &[b"XMP DataXMP", b"<x>GPS Secret</x>"]),
        gif_extension(0xff, &[b"MGK8BIM0000", b"Secret"]),
    ]);
    image.extend_from_slice(b"trailing Secret");
    image
}

pub fn riff_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_vec();
    out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

pub fn webp(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend(body);
    out
}

/// The extended header: `flags`, and the canvas as width and height less one, 24 bits each.
pub fn vp8x(flags: u8, width: u32, height: u32) -> Vec<u8> {
    let mut data = vec![flags, 0, 0, 0];
    data.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    data.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    riff_chunk(b"VP8X", &data)
}

/// A lossless bitstream header for `width` × `height`, then the pixel bytes.
pub fn vp8l(width: u32, height: u32) -> Vec<u8> {
    let bits = (width - 1) | ((height - 1) << 14);
    let mut data = vec![0x2f];
    data.extend_from_slice(&bits.to_le_bytes());
    data.extend_from_slice(WEBP_PIXELS);
    riff_chunk(b"VP8L", &data)
}

pub fn webp_with_metadata() -> Vec<u8> {
    let mut image = webp(&[
        vp8x(0x2c, 2, 1),
        riff_chunk(b"ICCP", b"-colour-profile-"),
        vp8l(2, 1),
        riff_chunk(b"EXIF", &exif_with_gps()),
        riff_chunk(b"XMP ", b"<x>GPS Secret</x>"),
        riff_chunk(b"ZZZZ", b"an unknown Secret"),
    ]);
    image.extend_from_slice(b"trailing Secret");
    image
}
