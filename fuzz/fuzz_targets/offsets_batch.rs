//! Batches of the internal `__consumer_offsets` log read back at start-up: any bytes decode to
//! (offset, value) pairs or a typed error. The CRC is recomputed so that mutations reach the
//! record walk instead of stopping at the checksum (which `batch_validate` covers).
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shardlog_server::groups::offsets_log::{decode_offsets_batch, encode_offsets_batch};

#[path = "../common/inputs.rs"]
mod inputs;

fuzz_target!(|data: &[u8]| {
    let bytes = inputs::offsets_batch(data);
    let Ok(records) = decode_offsets_batch(&bytes) else {
        return;
    };
    if records.is_empty() {
        return;
    }
    // What the broker writes from these values decodes back to them, at offsets 0..n.
    let values: Vec<Bytes> = records.into_iter().map(|(_, v)| v).collect();
    let again = decode_offsets_batch(&encode_offsets_batch(&values, 7)).expect("own batch decodes");
    assert_eq!(again.len(), values.len());
    for (i, ((offset, v), want)) in again.iter().zip(&values).enumerate() {
        assert_eq!((*offset, v), (i as i64, want));
    }
});
