//! The Kafka wire, below every API: request framing and version negotiation
//! ([`protocol`]), error codes ([`errors`]), connection admission ([`limits`]) and the
//! zero-copy Fetch response encoding with its fetch sessions ([`fetch`]).
//!
//! Nothing here knows about shards: the connection loop (`crate::connection`) and the APIs
//! (`crate::api`) sit on top of it.

pub mod errors;
pub mod fetch;
pub mod limits;
pub mod protocol;
