//! Index files read back from disk: any bytes decode to an index or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardlog_engine::index::SegmentIndex;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (offsets, times) = data.split_at(split);
    if let Ok(idx) = SegmentIndex::decode(offsets, times, 1 << 20, 1 << 20) {
        let _ = idx.position_for(0, 12345);
        let _ = idx.scan_start_for_time(0, 99);
        assert_eq!(
            SegmentIndex::decode(&idx.encode_offsets(), &idx.encode_times(), 1 << 20, 1 << 20).ok(),
            Some(idx)
        );
    }
});
