//! Inputs the fuzz targets (`fuzz/fuzz_targets/`) found, replayed through the same server code.
//! Each input is also a seed in `fuzz/seeds/<target>/`, so the fuzzer starts from it again.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::RequestKind;
use kafka_protocol::protocol::Encodable;
use shardlog_server::groups::offsets_log::{
    decode_offsets_batch, encode_offsets_batch, OffsetsBatchError,
};
use shardlog_server::wire::protocol::{parse_request, Parsed};

#[path = "../../fuzz/common/inputs.rs"]
mod inputs;

/// The frame the `request_body` target builds from its input.
fn request_body_frame(input: &[u8]) -> Bytes {
    inputs::request_body(input)
        .expect("request_body inputs are at least 3 bytes")
        .frame
}

/// request_body: an InitProducerId v4 whose tagged fields include tags >= 2^31. The broker
/// accepts it like the Java broker does (tags are unsigned varints); kafka-protocol 0.18 keeps
/// such a tag under a negative i32 key that it counts but does not write when encoding, so the
/// target's decode-encode-decode check skips requests whose encoded size disagrees with
/// `compute_size`. The broker never re-encodes requests. If this test fails after a
/// kafka-protocol upgrade, the crate changed here: tighten the target again. (The input's first
/// byte, found as 112, was set to 8, InitProducerId's index in `SUPPORTED_APIS`, so that APIs
/// appended to that table do not move it to another API: the index is taken modulo the length.)
#[test]
fn request_with_a_tag_above_i32_max_is_accepted() {
    let input =
        include_bytes!("../../fuzz/seeds/request_body/crash-init-producer-id-tag-above-i32-max");
    let Parsed::Request { header, body, .. } =
        parse_request(request_body_frame(input)).expect("accepted")
    else {
        panic!("not a request");
    };
    assert_eq!(header.request_api_version, 4);
    let RequestKind::InitProducerId(req) = *body else {
        panic!("not InitProducerId: {body:?}");
    };
    assert!(
        req.unknown_tagged_fields.keys().any(|&tag| tag < 0),
        "{:?}",
        req.unknown_tagged_fields
    );
    let mut encoded = BytesMut::new();
    req.encode(&mut encoded, 4).expect("encodes");
    assert!(req.compute_size(4).expect("size") > encoded.len());
}

/// offsets_batch: base offset i64::MIN and a record whose offset delta is negative. The offset
/// used to be `base + delta` unchecked (an overflow panic with overflow checks, a wrapped offset
/// without); deltas outside `0..=last_offset_delta` are now a malformed record.
#[test]
fn offset_delta_outside_the_batch_is_malformed() {
    let input = inputs::offsets_batch(include_bytes!(
        "../../fuzz/seeds/offsets_batch/crash-offset-overflow"
    ));
    match decode_offsets_batch(&input) {
        Err(OffsetsBatchError::Record { what, .. }) => {
            assert_eq!(what, "offset delta outside the batch")
        }
        other => panic!("{other:?}"),
    }
    // A well-formed batch still decodes at base + delta.
    let values = [Bytes::from_static(b"a"), Bytes::from_static(b"b")];
    let mut ok = encode_offsets_batch(&values, 1).to_vec();
    ok[..8].copy_from_slice(&(i64::MAX - 1).to_be_bytes());
    let got = decode_offsets_batch(&ok).expect("valid");
    assert_eq!(got[1], (i64::MAX, values[1].clone()));
}
