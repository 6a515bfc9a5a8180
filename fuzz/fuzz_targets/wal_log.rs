//! The write-ahead log's reader, on any bytes a crash or a bad disk could leave in a log file:
//! it must stop at the first bad entry, never panic, and decode only whole entries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    courier::store::sled::fuzzing::decode_log(bytes);
});
