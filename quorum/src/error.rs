//! Typed errors of the quorum crate.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why the durable raft store refused or failed.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file that was written atomically and synced does not read back: a disk problem, or a
    /// file from something else. The node refuses to start rather than guess.
    #[error("{path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("{path} has format version {version}, this build reads version {supported}")]
    UnsupportedVersion {
        path: PathBuf,
        version: u8,
        supported: u8,
    },
    /// An entry larger than the on-disk record limit (data plus context).
    #[error("raft entry {index} of {size} bytes exceeds the limit of {max}")]
    EntryTooLarge { index: u64, size: usize, max: usize },
    /// Raft handed the store entries that do not continue its log (a bug, never input).
    #[error("append at index {first} does not continue the log (first {first_index}, last {last_index})")]
    NotContiguous {
        first: u64,
        first_index: u64,
        last_index: u64,
    },
    #[error("snapshot of {size} bytes exceeds the limit of {max}")]
    SnapshotTooLarge { size: usize, max: usize },
    #[error("snapshot at index {index} is older than the store's ({current})")]
    SnapshotOutOfDate { index: u64, current: u64 },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

/// Errors of the node driver.
#[derive(Debug, Error)]
pub enum QuorumError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// Proposals go to the leader; `leader` is who this node believes leads (0: unknown).
    #[error("not the leader (leader: {leader})")]
    NotLeader { leader: u64 },
    #[error("proposal of {size} bytes exceeds the entry limit of {max}")]
    ProposalTooLarge { size: usize, max: usize },
    #[error("message addressed to node {to} reached node {me}")]
    WrongRecipient { to: u64, me: u64 },
    #[error("the state machine refused the snapshot at index {index}: {reason}")]
    Restore { index: u64, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}
