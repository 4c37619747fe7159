//! Request frames as a connection receives them: length prefix, request header, body, through
//! the same checks and decoder as `connection.rs`, several frames back to back (pipelining).
//! Any bytes either decode to a supported request or stop the connection with a typed error;
//! the decoder never panics (libfuzzer-sys aborts on a panic even inside the server's
//! `catch_unwind`) and a wire-chosen length never aborts the process or exhausts memory.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shardlog_server::config::BrokerConfig;
use shardlog_server::wire::protocol::{self, Parsed};

fuzz_target!(|data: &[u8]| {
    let max = BrokerConfig::default().max_frame_bytes;
    let mut rest = Bytes::copy_from_slice(data);
    while let Some(prefix) = rest.first_chunk::<4>() {
        let Ok(len) = protocol::check_frame_len(*prefix, max) else {
            return;
        };
        if rest.len() - 4 < len {
            return; // incomplete: the connection waits for the rest (or times out)
        }
        let frame = rest.slice(4..4 + len);
        rest = rest.slice(4 + len..);
        let Some(raw) = frame.first_chunk::<8>() else {
            assert!(
                protocol::parse_request(frame).is_err(),
                "short frame parsed"
            );
            return;
        };
        let key = i16::from_be_bytes([raw[0], raw[1]]);
        let version = i16::from_be_bytes([raw[2], raw[3]]);
        let corr = i32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        match protocol::parse_request(frame) {
            Ok(Parsed::Request {
                header, api_key, ..
            }) => {
                assert_eq!(api_key as i16, key);
                assert_eq!(header.request_api_key, key);
                assert_eq!(header.request_api_version, version);
                assert_eq!(header.correlation_id, corr);
                let (lo, hi) =
                    protocol::supported_range(api_key).expect("only supported APIs parse");
                assert!(
                    (lo..=hi).contains(&version),
                    "{api_key:?} v{version} parsed"
                );
            }
            Ok(Parsed::ApiVersionsUnsupported { correlation_id }) => {
                assert_eq!((key, correlation_id), (18, corr));
                protocol::api_versions_unsupported(correlation_id).expect("the answer encodes");
            }
            Err(_) => return, // the connection is closed
        }
    }
});
