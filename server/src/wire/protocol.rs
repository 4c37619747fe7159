//! Kafka framing, request headers and API version negotiation.
//!
//! A Kafka request is `[i32 size][header][body]`. The frame length is checked against
//! `max_frame_bytes` *before* any buffer is sized by it, so a client cannot make the broker
//! reserve memory by announcing a large frame. The body is decoded from a `Bytes` (sliced out
//! of the connection's `BytesMut`), so the `records` of a Produce request are a view of the
//! receive buffer, not a copy.
//!
//! Collection counts inside the body come from the wire, and `kafka-protocol` reserves that
//! many elements before reading one: the global allocator (`alloc.rs`) turns such reservations
//! into untouched address space, and the decoder fails as soon as the frame runs out of bytes.
//! Decoding runs under `catch_unwind` as a last line of defence, so a decoder bug on hostile
//! input closes one connection instead of a shard. The fuzz targets `frame_decode` and
//! `request_body` (`fuzz/`) drive this function with arbitrary frames and bodies.
//!
//! Version negotiation follows the Java broker: an ApiVersions request with a version we do not
//! support is answered with `UNSUPPORTED_VERSION` in a v0 body together with our ranges, so the
//! client retries with a version we know. Any other unknown key or version closes the
//! connection (a Kafka client never sends one it did not see advertised).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Decodable, Encodable};

/// (API, min version, max version) this broker implements, advertised in ApiVersions.
///
/// The ranges are chosen so every client generation we test negotiates a version we handle:
/// Fetch stops at 12 (13+ names topics by id only), Produce at 10 (KIP-951 leader hints),
/// Metadata at 12.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 10),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    // Consumer groups (see api/groups.rs for what each range covers).
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // Partition sizes (api/log_dirs.rs). v0 is v1 on the wire, but Kafka 4 dropped it (KIP-896);
    // v2+ are flexible. Last in the list so the fuzz seeds' API indexes stay where they were.
    (ApiKey::DescribeLogDirs, 1, 4),
];

/// The version range we implement for `key`, if any.
pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {0} is negative")]
    NegativeLength(i32),
    #[error("frame of {len} bytes exceeds max_frame_bytes {max}")]
    TooLarge { len: usize, max: usize },
}

/// Validates a frame length prefix; returns the body length.
pub fn check_frame_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = i32::from_be_bytes(prefix);
    if len < 0 {
        return Err(FrameError::NegativeLength(len));
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("frame of {0} bytes is too short for a request header")]
    Short(usize),
    #[error("unknown API key {api_key} (version {api_version})")]
    UnknownApi { api_key: i16, api_version: i16 },
    #[error("unsupported version {api_version} of {api_key:?}")]
    UnsupportedVersion { api_key: ApiKey, api_version: i16 },
    #[error("malformed {what}: {message}")]
    Malformed { what: &'static str, message: String },
}

/// Outcome of parsing one frame.
#[derive(Debug)]
pub enum Parsed {
    Request {
        header: RequestHeader,
        api_key: ApiKey,
        body: Box<RequestKind>,
    },
    /// ApiVersions at a version we do not speak: answer with UNSUPPORTED_VERSION (v0 body).
    ApiVersionsUnsupported { correlation_id: i32 },
}

/// Parses a frame body (without its length prefix).
pub fn parse_request(frame: Bytes) -> Result<Parsed, RequestError> {
    if frame.len() < 8 {
        return Err(RequestError::Short(frame.len()));
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(api_key_raw).map_err(|_| RequestError::UnknownApi {
        api_key: api_key_raw,
        api_version,
    })?;
    let Some((lo, hi)) = supported_range(api_key) else {
        return Err(RequestError::UnknownApi {
            api_key: api_key_raw,
            api_version,
        });
    };
    if api_version < lo || api_version > hi {
        if api_key == ApiKey::ApiVersions {
            return Ok(Parsed::ApiVersionsUnsupported { correlation_id });
        }
        return Err(RequestError::UnsupportedVersion {
            api_key,
            api_version,
        });
    }
    let mut buf = frame;
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let header_version = api_key.request_header_version(api_version);
        let header = RequestHeader::decode(&mut buf, header_version).map_err(|e| {
            RequestError::Malformed {
                what: "request header",
                message: e.to_string(),
            }
        })?;
        let body = RequestKind::decode(api_key, &mut buf, api_version).map_err(|e| {
            RequestError::Malformed {
                what: "request body",
                message: format!("{api_key:?} v{api_version}: {e}"),
            }
        })?;
        Ok::<_, RequestError>((header, body))
    }));
    let (header, body) = decoded.map_err(|_| RequestError::Malformed {
        what: "request",
        message: "decoder panicked".into(),
    })??;
    Ok(Parsed::Request {
        header,
        api_key,
        body: Box::new(body),
    })
}

/// Encodes a complete response frame: size prefix, response header, body.
///
/// ApiVersions responses always use header v0 (no tagged fields) so that a client can parse
/// them before it knows which versions we speak.
pub fn encode_response<M: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<Bytes, anyhow::Error> {
    let header_version = api_key.response_header_version(api_version);
    let body_len = body.compute_size(api_version)?;
    let mut out = BytesMut::with_capacity(4 + 5 + body_len);
    out.put_i32(0);
    out.put_i32(correlation_id);
    if header_version >= 1 {
        out.put_u8(0); // no tagged fields
    }
    body.encode(&mut out, api_version)?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out.freeze())
}

/// The ApiVersions body for a supported version.
pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error_code;
    r.api_keys = SUPPORTED_APIS
        .iter()
        .map(|&(k, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = lo;
            v.max_version = hi;
            v
        })
        .collect();
    r
}

/// UNSUPPORTED_VERSION answer to an ApiVersions request we cannot parse: v0 body, header v0.
pub fn api_versions_unsupported(correlation_id: i32) -> Result<Bytes, anyhow::Error> {
    let body = api_versions_response(crate::wire::errors::UNSUPPORTED_VERSION);
    encode_response(ApiKey::ApiVersions, 0, correlation_id, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest, ProduceRequest};
    use kafka_protocol::protocol::StrBytes;

    fn frame_for<R: Encodable>(key: ApiKey, version: i16, corr: i32, req: &R) -> Bytes {
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = corr;
        h.client_id = Some(StrBytes::from_static_str("test"));
        let mut b = BytesMut::new();
        h.encode(&mut b, key.request_header_version(version))
            .expect("header");
        req.encode(&mut b, version).expect("body");
        b.freeze()
    }

    #[test]
    fn frame_length_is_checked_before_allocation() {
        assert_eq!(check_frame_len(10i32.to_be_bytes(), 100), Ok(10));
        assert_eq!(
            check_frame_len(101i32.to_be_bytes(), 100),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(
            check_frame_len((-5i32).to_be_bytes(), 100),
            Err(FrameError::NegativeLength(-5))
        );
    }

    #[test]
    fn parses_flexible_and_legacy_headers() {
        for v in 0..=3 {
            let f = frame_for(ApiKey::ApiVersions, v, 42, &ApiVersionsRequest::default());
            match parse_request(f).expect("parse") {
                Parsed::Request {
                    header, api_key, ..
                } => {
                    assert_eq!(api_key, ApiKey::ApiVersions);
                    assert_eq!(header.correlation_id, 42);
                    assert_eq!(header.request_api_version, v);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let f = frame_for(ApiKey::Metadata, 9, 7, &MetadataRequest::default());
        assert!(matches!(parse_request(f), Ok(Parsed::Request { .. })));
    }

    #[test]
    fn newer_api_versions_gets_unsupported_answer() {
        let f = frame_for(ApiKey::ApiVersions, 4, 9, &ApiVersionsRequest::default());
        match parse_request(f).expect("parse") {
            Parsed::ApiVersionsUnsupported { correlation_id } => assert_eq!(correlation_id, 9),
            other => panic!("unexpected {other:?}"),
        }
        let resp = api_versions_unsupported(9).expect("encode");
        // size, correlation id, then error code 35 with no header tagged fields (header v0).
        assert_eq!(&resp[4..8], &9i32.to_be_bytes());
        assert_eq!(&resp[8..10], &35i16.to_be_bytes());
        let mut body = resp.slice(8..);
        let decoded = ApiVersionsResponse::decode(&mut body, 0).expect("v0 body");
        assert_eq!(decoded.error_code, 35);
        assert_eq!(decoded.api_keys.len(), SUPPORTED_APIS.len());
    }

    #[test]
    fn unknown_key_and_version_are_errors() {
        let mut raw = BytesMut::new();
        raw.put_i16(999);
        raw.put_i16(0);
        raw.put_i32(1);
        raw.put_i16(-1);
        assert!(matches!(
            parse_request(raw.freeze()),
            Err(RequestError::UnknownApi { api_key: 999, .. })
        ));
        let f = frame_for(ApiKey::Produce, 2, 1, &ApiVersionsRequest::default());
        assert!(matches!(
            parse_request(f),
            Err(RequestError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            parse_request(Bytes::from_static(&[0, 1, 2])),
            Err(RequestError::Short(3))
        ));
    }

    #[test]
    fn huge_collection_count_in_tiny_frame_is_malformed() {
        // Produce v3: header, transactional_id null, acks, timeout, topics count = i32::MAX.
        let mut h = RequestHeader::default();
        h.request_api_key = ApiKey::Produce as i16;
        h.request_api_version = 3;
        let mut b = BytesMut::new();
        h.encode(&mut b, 1).expect("header");
        b.put_i16(-1);
        b.put_i16(1);
        b.put_i32(1000);
        b.put_i32(i32::MAX);
        let err = parse_request(b.freeze()).expect_err("must be malformed");
        assert!(matches!(err, RequestError::Malformed { .. }), "{err}");
    }

    /// Every body decoder of every supported version, on bodies that are nothing but huge
    /// counts and lengths: a typed error (or a request), never an abort.
    #[test]
    fn every_body_decoder_survives_lying_counts() {
        let patterns: [&[u8]; 3] = [
            &[0x7f, 0xff, 0xff, 0xff],
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0x00, 0x00, 0x7f, 0xff, 0xff, 0xff],
        ];
        for &(key, lo, hi) in SUPPORTED_APIS {
            for v in lo..=hi {
                for p in patterns {
                    let mut h = RequestHeader::default();
                    h.request_api_key = key as i16;
                    h.request_api_version = v;
                    let mut b = BytesMut::new();
                    h.encode(&mut b, key.request_header_version(v))
                        .expect("header");
                    for _ in 0..8 {
                        b.extend_from_slice(p);
                    }
                    match parse_request(b.freeze()) {
                        Err(RequestError::Malformed { what, .. }) => {
                            assert_ne!(what, "request", "{key:?} v{v}: the decoder panicked")
                        }
                        Ok(Parsed::Request { .. }) => {}
                        other => panic!("{key:?} v{v}: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn truncated_body_is_malformed_not_a_panic() {
        let mut req = ProduceRequest::default();
        req.acks = 1;
        let full = frame_for(ApiKey::Produce, 7, 1, &req);
        for cut in 8..full.len() {
            let r = parse_request(full.slice(..cut));
            assert!(r.is_err(), "cut at {cut} parsed");
        }
    }

    #[test]
    fn response_header_versions() {
        let body = api_versions_response(0);
        let r = encode_response(ApiKey::ApiVersions, 3, 5, &body).expect("encode");
        // header v0 even for flexible v3: the body's error code follows the correlation id.
        assert_eq!(&r[8..10], &0i16.to_be_bytes());
        let len = i32::from_be_bytes([r[0], r[1], r[2], r[3]]) as usize;
        assert_eq!(len, r.len() - 4);
        let md = kafka_protocol::messages::MetadataResponse::default();
        let r = encode_response(ApiKey::Metadata, 9, 5, &md).expect("encode");
        assert_eq!(
            r[8], 0,
            "flexible response header carries an empty tag buffer"
        );
    }
}
