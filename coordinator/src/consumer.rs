//! Just enough of the consumer embedded protocol to read subscribed topics.
//!
//! The coordinator passes assignor metadata through untouched; it only peeks
//! at a `ConsumerProtocolSubscription` (protocol type `"consumer"`) to know
//! which topics a group is subscribed to, for OffsetDelete
//! (GROUP_SUBSCRIBED_TO_TOPIC) and for expiring offsets of topics a stable
//! group no longer consumes (KIP-496). Every version starts with the same
//! prefix, which is all that is read:
//!
//! ```text
//! version:i16 topic_count:i32 (topic_len:i16 topic:utf8)*   ...ignored
//! ```
//!
//! Unparseable metadata yields `None`, which callers treat as "subscribed to
//! everything" (the conservative answer).

/// Topics of a consumer subscription, or `None` if it does not parse.
pub fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let version = i16::from_be_bytes(metadata.get(0..2)?.try_into().ok()?);
    if version < 0 {
        return None;
    }
    let count = i32::from_be_bytes(metadata.get(2..6)?.try_into().ok()?);
    let mut pos = 6usize;
    let count = usize::try_from(count).ok()?;
    // Each topic needs at least its 2-byte length.
    if count > metadata.len().saturating_sub(pos) / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i16::from_be_bytes(metadata.get(pos..pos + 2)?.try_into().ok()?);
        pos += 2;
        let len = usize::try_from(len).ok()?;
        let raw = metadata.get(pos..pos.checked_add(len)?)?;
        pos += len;
        topics.push(std::str::from_utf8(raw).ok()?.to_owned());
    }
    Some(topics)
}

/// Encodes a v0 subscription (tests and tools only).
pub fn encode_subscription(topics: &[&str]) -> bytes::Bytes {
    use bytes::BufMut;
    let mut buf = bytes::BytesMut::new();
    buf.put_i16(0);
    buf.put_i32(i32::try_from(topics.len()).unwrap_or(i32::MAX));
    for t in topics {
        buf.put_i16(i16::try_from(t.len()).unwrap_or(i16::MAX));
        buf.put_slice(t.as_bytes());
    }
    buf.put_i32(-1); // null user data
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_topics() {
        let enc = encode_subscription(&["a", "bc"]);
        assert_eq!(
            subscription_topics(&enc),
            Some(vec!["a".to_owned(), "bc".to_owned()])
        );
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(subscription_topics(b""), None);
        assert_eq!(subscription_topics(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None);
        assert_eq!(subscription_topics(&[0, 0, 0, 0, 0, 1, 0, 5, b'a']), None);
        assert_eq!(subscription_topics(&[0xff, 0xff, 0, 0, 0, 0]), None);
        assert_eq!(subscription_topics(&[0, 0, 0, 0, 0, 1, 0, 1, 0xff]), None);
    }

    #[test]
    fn null_topic_array_is_none() {
        assert_eq!(subscription_topics(&[0, 1, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
