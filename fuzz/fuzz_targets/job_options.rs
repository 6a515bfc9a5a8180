//! Job options as the admin API and the queue's JSON take them (Bull's shapes): any JSON value
//! is refused with an error or gives options that pass validation again. Never a panic.
#![no_main]

use courier::queue::options::{from_json, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if let Ok(opts) = from_json(&value) {
            assert!(validate(&opts).is_ok(), "accepted options must be valid: {opts:?}");
        }
    }
});
