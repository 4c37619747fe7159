//! Typed errors of the client.

use std::io;

use kafka_protocol::error::ResponseError;

/// Everything that can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket-level failure (connect, read, write).
    #[error("i/o error talking to {addr}: {source}")]
    Io {
        /// The broker address.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The connection was closed (by the peer or after an earlier failure).
    #[error("connection to {0} closed")]
    ConnectionClosed(String),
    /// A frame that could not be encoded.
    #[error("encode {api}: {msg}")]
    Encode {
        /// The API being encoded.
        api: &'static str,
        /// What went wrong.
        msg: String,
    },
    /// A frame from the broker that could not be decoded.
    #[error("decode {api}: {msg}")]
    Decode {
        /// The API being decoded.
        api: &'static str,
        /// What went wrong.
        msg: String,
    },
    /// A response frame that breaks the protocol (size, correlation id).
    #[error("protocol violation from {addr}: {msg}")]
    Protocol {
        /// The broker address.
        addr: String,
        /// What went wrong.
        msg: String,
    },
    /// The broker supports no version of an API that this client implements.
    #[error("broker {addr} supports no usable version of api {api_key} (broker {broker_min}..{broker_max}, client {client_min}..{client_max})")]
    UnsupportedApi {
        /// The broker address.
        addr: String,
        /// The API key.
        api_key: i16,
        /// Broker's minimum.
        broker_min: i16,
        /// Broker's maximum.
        broker_max: i16,
        /// Client's minimum.
        client_min: i16,
        /// Client's maximum.
        client_max: i16,
    },
    /// A Kafka error code returned by the broker.
    #[error("kafka error {code} ({name}) {context}")]
    Kafka {
        /// The numeric error code.
        code: i16,
        /// Its name, as far as known.
        name: String,
        /// Where it came from (topic/partition/operation).
        context: String,
    },
    /// A topic or partition the cluster metadata does not know.
    #[error("unknown topic or partition {0}")]
    UnknownTopicOrPartition(String),
    /// A partition with no leader in the metadata.
    #[error("no leader for {0}")]
    NoLeader(String),
    /// An operation that did not complete in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Invalid configuration or arguments.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The producer (or consumer) was closed.
    #[error("closed")]
    Closed,
}

impl ClientError {
    /// Builds a [`ClientError::Kafka`] from an error code.
    pub fn kafka(code: i16, context: impl Into<String>) -> Self {
        ClientError::Kafka {
            code,
            name: error_name(code),
            context: context.into(),
        }
    }

    /// The Kafka error code carried by this error, if it is one.
    pub fn kafka_code(&self) -> Option<i16> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying the operation may succeed (transient broker-side or network condition).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io { .. } | ClientError::ConnectionClosed(_) | ClientError::Timeout(_) => {
                true
            }
            ClientError::NoLeader(_) | ClientError::UnknownTopicOrPartition(_) => true,
            ClientError::Kafka { code, .. } => ResponseError::try_from_code(*code)
                .map(|e| e.is_retriable())
                .unwrap_or(false),
            _ => false,
        }
    }
}

/// The name of a Kafka error code (e.g. `NotLeaderOrFollower`), or `Unknown(<code>)`.
pub fn error_name(code: i16) -> String {
    if code == 0 {
        return "None".to_string();
    }
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}"),
        None => format!("Unknown({code})"),
    }
}

/// Result alias of the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
