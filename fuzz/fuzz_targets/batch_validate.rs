//! RecordBatch v2 validation on arbitrary bytes (a produce request's records, or a segment).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardlog_engine::batch;

fuzz_target!(|data: &[u8]| {
    let _ = batch::peek(data);
    let _ = batch::first_record_at_or_after(data, 0);
    if let Ok(info) = batch::validate(data, 1 << 20) {
        // A valid batch stays valid once the log assigns it a place.
        let mut owned = data.to_vec();
        batch::assign(&mut owned, 1 << 40, 7);
        let again = batch::validate(&owned, 1 << 20).expect("assign keeps the CRC valid");
        assert_eq!(again.record_count, info.record_count);
        batch::stamp_log_append_time(&mut owned, 42);
        batch::validate(&owned, 1 << 20).expect("LogAppendTime restamp keeps the batch valid");
    }
});
