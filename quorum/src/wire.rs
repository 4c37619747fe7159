//! Raft messages on the controller network: one frame per message.
//!
//! ```text
//! u32 BE  length of the rest of the frame (version + crc + body)
//! u8      version (1)
//! u32 BE  CRC32C of the body
//! body    the raft-rs `eraftpb.Message`, protobuf-encoded
//! ```
//!
//! The length is checked against the limit before anything is buffered or decoded, the CRC
//! before the protobuf parser sees a byte, and the decoded message must be one that travels
//! between peers (raft-rs's local message types are refused). The protobuf parser is
//! rust-protobuf 2.28, which carries RUSTSEC-2024-0437 (unbounded recursion on crafted input):
//! only controller peers may reach this decoder, never clients.

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use thiserror::Error;

/// The frame format version this code writes and reads.
pub const WIRE_VERSION: u8 = 1;
/// Bytes before the body: length, version, CRC.
pub const FRAME_HEADER: usize = 4 + 1 + 4;
/// Default frame limit: a snapshot of up to 64 MiB plus room for the message around it.
pub const DEFAULT_MAX_FRAME: usize = 65 * 1024 * 1024;

/// Why a frame was refused. After any of them the connection's framing cannot be trusted:
/// close it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame of {0} bytes is shorter than its header")]
    TooShort(usize),
    #[error("unknown frame version {0}")]
    BadVersion(u8),
    #[error("frame CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadCrc { stored: u32, computed: u32 },
    #[error("frame body is not a raft message: {0}")]
    Protobuf(String),
    #[error("raft message type {0:?} is local to a node and never travels between peers")]
    LocalMessage(MessageType),
    #[error("raft message names node 0 as sender or receiver")]
    ZeroNode,
}

/// Encodes `msg` as one frame; refuses a message whose frame would exceed `max` bytes (the
/// receiver would refuse it).
pub fn encode_message(msg: &Message, max: usize) -> Result<Vec<u8>, WireError> {
    let size = msg.compute_size() as usize;
    let len = FRAME_HEADER + size;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&((len - 4) as u32).to_be_bytes());
    out.push(WIRE_VERSION);
    out.extend_from_slice(&[0; 4]);
    msg.write_to_vec(&mut out)
        .map_err(|e| WireError::Protobuf(e.to_string()))?;
    let crc = crc32c::crc32c(&out[FRAME_HEADER..]);
    out[5..9].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// The total length of the frame starting at `buf`, once its length prefix is there
/// (`Ok(None)` before): a reader learns how much to buffer, and a too-large frame is refused
/// before any of it is read.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, WireError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let rest = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let len = rest.saturating_add(4);
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    if len < FRAME_HEADER {
        return Err(WireError::TooShort(len));
    }
    Ok(Some(len))
}

/// Decodes the frame at the start of `buf`: `Ok(None)` while it is incomplete, else the
/// message and the bytes it took.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<(Message, usize)>, WireError> {
    let Some(len) = frame_len(buf, max)? else {
        return Ok(None);
    };
    let Some(frame) = buf.get(..len) else {
        return Ok(None);
    };
    if frame[4] != WIRE_VERSION {
        return Err(WireError::BadVersion(frame[4]));
    }
    let stored = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
    let body = &frame[FRAME_HEADER..];
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(WireError::BadCrc { stored, computed });
    }
    let msg = Message::parse_from_bytes(body).map_err(|e| WireError::Protobuf(e.to_string()))?;
    let ty = msg.get_msg_type();
    if raft::raw_node::is_local_msg(ty) {
        return Err(WireError::LocalMessage(ty));
    }
    if msg.from == 0 || msg.to == 0 {
        return Err(WireError::ZeroNode);
    }
    Ok(Some((msg, len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use raft::prelude::{Entry, Snapshot};

    fn sample() -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = 1;
        m.to = 2;
        m.term = 7;
        m.index = 41;
        m.log_term = 6;
        m.commit = 40;
        let mut e = Entry::default();
        e.index = 42;
        e.term = 7;
        e.data = bytes::Bytes::from_static(b"hello");
        m.mut_entries().push(e);
        m
    }

    #[test]
    fn round_trips_and_streams() {
        let m = sample();
        let f = encode_message(&m, DEFAULT_MAX_FRAME).unwrap();
        for cut in 0..f.len() {
            assert_eq!(
                decode_frame(&f[..cut], DEFAULT_MAX_FRAME),
                Ok(None),
                "cut {cut}"
            );
        }
        let mut two = f.clone();
        two.extend_from_slice(&f);
        let (got, used) = decode_frame(&two, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert_eq!(got, m);
    }

    #[test]
    fn refuses_before_decoding() {
        let m = sample();
        let f = encode_message(&m, DEFAULT_MAX_FRAME).unwrap();
        // Oversized length prefix: refused from the first four bytes alone.
        let big = (DEFAULT_MAX_FRAME as u32).to_be_bytes();
        assert!(matches!(
            decode_frame(&big, DEFAULT_MAX_FRAME),
            Err(WireError::TooLarge { .. })
        ));
        assert!(matches!(
            encode_message(&m, f.len() - 1),
            Err(WireError::TooLarge { .. })
        ));
        assert_eq!(
            decode_frame(&[0, 0, 0, 1, 1], 100),
            Err(WireError::TooShort(5))
        );
        let mut v = f.clone();
        v[4] = 9;
        assert_eq!(
            decode_frame(&v, DEFAULT_MAX_FRAME),
            Err(WireError::BadVersion(9))
        );
        let mut c = f.clone();
        let last = c.len() - 1;
        c[last] ^= 1;
        assert!(matches!(
            decode_frame(&c, DEFAULT_MAX_FRAME),
            Err(WireError::BadCrc { .. })
        ));
    }

    #[test]
    fn refuses_local_and_anonymous_messages() {
        let mut m = sample();
        m.set_msg_type(MessageType::MsgHup);
        let f = encode_message(&m, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(
            decode_frame(&f, DEFAULT_MAX_FRAME),
            Err(WireError::LocalMessage(MessageType::MsgHup))
        );
        let mut m = sample();
        m.from = 0;
        let f = encode_message(&m, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(
            decode_frame(&f, DEFAULT_MAX_FRAME),
            Err(WireError::ZeroNode)
        );
    }

    #[test]
    fn snapshot_messages_fit_the_default_limit() {
        let mut m = sample();
        m.set_msg_type(MessageType::MsgSnapshot);
        let mut s = Snapshot::default();
        s.data = bytes::Bytes::from(vec![7u8; 1 << 20]);
        s.mut_metadata().index = 9;
        m.set_snapshot(s);
        let f = encode_message(&m, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(decode_frame(&f, DEFAULT_MAX_FRAME).unwrap().unwrap().0, m);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random bytes never panic the decoder; they are incomplete or refused.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes, 4096);
        }

        /// Random bodies with a valid header and CRC reach the protobuf parser: refused or
        /// decoded, never a panic.
        #[test]
        fn garbage_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut f = Vec::new();
            f.extend_from_slice(&((body.len() + 5) as u32).to_be_bytes());
            f.push(WIRE_VERSION);
            f.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            f.extend_from_slice(&body);
            if let Ok(Some((_, used))) = decode_frame(&f, 4096) {
                prop_assert_eq!(used, f.len());
            }
        }

        /// Any corruption of one byte of a valid frame is refused or changes nothing.
        #[test]
        fn one_flipped_byte_is_caught(pos in 0usize..64, bit in 0u8..8) {
            let f = encode_message(&sample(), DEFAULT_MAX_FRAME).unwrap();
            let pos = pos % f.len();
            let mut c = f.clone();
            c[pos] ^= 1 << bit;
            let decoded = decode_frame(&c, DEFAULT_MAX_FRAME);
            prop_assert!(!matches!(decoded, Ok(Some(_))), "accepted a corrupted frame: {:?}", decoded);
        }
    }
}
