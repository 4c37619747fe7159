//! How fuzz targets turn their input bytes into what they test. Shared (through `#[path]`)
//! with `server/tests/fuzz_regressions.rs`, so a crash input is replayed exactly as the target
//! saw it.
#![allow(dead_code)] // each includer uses only its own part

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use shardlog_engine::batch;
use shardlog_server::wire::protocol::SUPPORTED_APIS;

/// A `request_body` input: the API and version it picked, the header it built and the frame.
pub struct RequestBodyInput {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub frame: Bytes,
}

/// The first two bytes pick an API from `SUPPORTED_APIS` and one of its versions, the third
/// how the header is filled in, the rest is the body behind the well-formed header. `None`
/// for inputs shorter than 3 bytes.
pub fn request_body(input: &[u8]) -> Option<RequestBodyInput> {
    let [api, version, flags, body @ ..] = input else {
        return None;
    };
    let (api_key, lo, hi) = SUPPORTED_APIS[usize::from(*api) % SUPPORTED_APIS.len()];
    let version = lo + i16::from(*version) % (hi - lo + 1);
    let mut header = RequestHeader::default();
    header.request_api_key = api_key as i16;
    header.request_api_version = version;
    header.correlation_id = i32::from(*flags) << 8 | i32::from(*api);
    header.client_id = (flags & 1 == 0).then(|| StrBytes::from_static_str("fuzz"));
    let mut frame = BytesMut::new();
    header
        .encode(&mut frame, api_key.request_header_version(version))
        .expect("header encodes");
    frame.extend_from_slice(body);
    Some(RequestBodyInput {
        api_key,
        version,
        header,
        frame: frame.freeze(),
    })
}

/// An `offsets_batch` input with its batch CRC recomputed, so that mutations reach the record
/// walk instead of stopping at the checksum (which `batch_validate` covers).
pub fn offsets_batch(input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    if b.len() >= batch::HEADER_BYTES {
        let crc = batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    b
}
