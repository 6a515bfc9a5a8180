//! What a send's image goes through: the data URL, the type sniffed from the bytes, and the
//! metadata stripping, on any input a client could post. Never a panic; a sanitised image is
//! still an image of the same type.
#![no_main]

use courier::chat::images::{check_image, decode_data_url, sanitise, ImageLimits};
use libfuzzer_sys::fuzz_target;

fn limits() -> ImageLimits {
    ImageLimits::new(40_000_000).expect("a valid limit")
}

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = decode_data_url(text);
    }
    if let Ok(kind) = check_image(bytes) {
        if let Ok(clean) = sanitise(bytes, limits()) {
            assert_eq!(check_image(&clean).ok(), Some(kind));
        }
    }
});
