//! The stored-record codec, on any bytes a record could hold: every stored type either refuses
//! them with an error or decodes to a value whose encoding decodes and encodes to the same bytes
//! (bytes, not values: a decoded `f64` may be NaN, which equals nothing).
#![no_main]

use std::fmt::Debug;

use courier::store::accounts::{AccountState, OneTimeToken, SessionRecord};
use courier::store::chat::{MessageRecord, UserRecord};
use courier::store::codec::{decode, encode};
use courier::store::job::{JobSpec, JobStatus};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<T: Serialize + DeserializeOwned + Debug>(bytes: &[u8]) {
    if let Ok(value) = decode::<T>(bytes) {
        let encoded = encode(&value).expect("a decoded record encodes");
        let again = decode::<T>(&encoded).expect("an encoded record decodes");
        assert_eq!(encode(&again).expect("it encodes again"), encoded, "{value:?}");
    }
}

fuzz_target!(|bytes: &[u8]| {
    round_trip::<JobSpec>(bytes);
    round_trip::<JobStatus>(bytes);
    round_trip::<MessageRecord>(bytes);
    round_trip::<UserRecord>(bytes);
    round_trip::<AccountState>(bytes);
    round_trip::<OneTimeToken>(bytes);
    round_trip::<SessionRecord>(bytes);
    round_trip::<String>(bytes);
});
