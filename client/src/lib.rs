//! shardlog-client: a lean async Kafka client on the `kafka-protocol` crate.
//!
//! - [`Client`]: bootstrap, metadata, one pipelined [`Connection`] per broker, ApiVersions
//!   negotiation (highest common version per API), admin (CreateTopics/DeleteTopics),
//!   ListOffsets, InitProducerId and the classic group calls.
//! - [`Producer`]: batching (batch size, linger), acks 0/1/all, compression, idempotence,
//!   murmur2 key partitioning exactly like the Java client.
//! - [`Consumer`]: long-poll Fetch of assigned partitions; [`GroupMember`]: classic consumer
//!   group membership with range assignment and offset commits.
#![warn(missing_docs)]

pub mod client;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod murmur2;
pub mod producer;
pub mod records;
pub mod timer;
pub mod versions;

pub use client::{Client, ClientConfig, NewTopic, PartitionMeta, TopicMeta, EARLIEST, LATEST};
pub use conn::{Connection, ConnectionOptions, ProduceSent};
pub use consumer::{Consumer, ConsumerConfig, GroupMember, PartitionRecords, StartAt};
pub use error::{ClientError, Result};
pub use murmur2::{murmur2, partition_for_key, to_positive};
pub use producer::{Delivery, Producer, ProducerConfig, Token};
pub use records::{Compression, InRecord, OutRecord};
pub use timer::PreciseTimer;
