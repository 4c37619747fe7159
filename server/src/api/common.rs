//! What every API handler shares: the answer-phase type and response encoding.

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::wire::protocol;

/// The answer phase: the response frame as chunks, or `None` for no response (acks=0).
pub type Pending = LocalBoxFuture<'static, Option<Vec<Bytes>>>;

pub(crate) fn respond<M: Encodable>(
    api_key: ApiKey,
    version: i16,
    corr: i32,
    body: &M,
) -> Option<Vec<Bytes>> {
    match protocol::encode_response(api_key, version, corr, body) {
        Ok(b) => Some(vec![b]),
        Err(e) => {
            tracing::error!(?api_key, version, error = %e, "cannot encode response");
            None
        }
    }
}

pub(crate) fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

pub(crate) fn tname(x: &str) -> TopicName {
    TopicName(s(x))
}
