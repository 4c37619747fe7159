//! Raft frames as a controller peer connection carries them (`shardlog_quorum::wire`): length
//! bound, version, CRC, then rust-protobuf 2.28's parser (RUSTSEC-2024-0437: only controller
//! peers reach it, see docs/ARCHITECTURE.md). Frames back to back; each is refused with a
//! typed error or decodes to a peer message with non-zero ids that encodes back to a frame
//! the decoder accepts again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardlog_quorum::{decode_frame, encode_message};

/// A small bound, so that the fuzzer reaches the parser with frames it can build.
const MAX: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        let (msg, used) = match decode_frame(rest, MAX) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => return,
        };
        assert!(used <= rest.len());
        assert!(msg.from != 0 && msg.to != 0);
        if let Ok(again) = encode_message(&msg, MAX) {
            let (back, n) = decode_frame(&again, MAX)
                .expect("a re-encoded message decodes")
                .expect("whole frame");
            assert_eq!(n, again.len());
            assert_eq!(back, msg);
        }
        rest = &rest[used..];
    }
});
