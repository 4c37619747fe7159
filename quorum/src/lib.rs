//! The controller quorum's consensus layer: the metadata log replicated by raft-rs.
//!
//! Consensus is raft-rs's (`raft` 0.7, TiKV's), not home-made: its synchronous [`RawNode`]
//! is driven by tick/step/ready, which fits a shard's pinned executor without a runtime
//! adapter. This crate adds what raft-rs leaves to its user:
//!
//! * [`store`]: durable raft state over the engine's [`Storage`] trait (entries, hard state,
//!   snapshots; torn-tail recovery, compaction), with raft-rs's `Storage` served from memory;
//! * [`node`]: the driver that orders persistence, sending and applying as raft-rs requires;
//! * [`wire`]: framing of raft messages between controller peers, bounded and checked before
//!   decoding;
//! * [`voters`]: the `controller.quorum.voters` list.
//!
//! [`RawNode`]: raft::RawNode
//! [`Storage`]: shardlog_engine::Storage

// rust-protobuf's generated structs (raft-rs's messages) are filled field by field after
// `default()`, as raft-rs's own examples do; struct literals would have to name its hidden
// bookkeeping fields.
#![allow(clippy::field_reassign_with_default)]

pub mod error;
mod logger;
pub mod node;
pub mod store;
pub mod voters;
pub mod wire;

pub use error::{QuorumError, StoreError};
pub use node::{
    bootstrap_conf, Committed, Proposal, QuorumConfig, QuorumNode, ReadyOutput, StateMachine,
};
pub use raft::prelude::{ConfState, Message, MessageType};
pub use raft::StateRole;
pub use store::{snapshot_at, OpenReport, RaftStore, MAX_ENTRY_BYTES, MAX_SNAPSHOT_BYTES};
pub use voters::{parse_voters, Voter, VotersError};
pub use wire::{decode_frame, encode_message, frame_len, WireError, DEFAULT_MAX_FRAME};
