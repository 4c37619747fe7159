//! Consumer-group records replayed from the internal offsets log.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardlog_coordinator::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = Record::decode(data) {
        if let Ok(bytes) = rec.encode() {
            let again = Record::decode(&bytes).expect("re-encoded record decodes");
            assert_eq!(again, rec);
        }
    }
});
