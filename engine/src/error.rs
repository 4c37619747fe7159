//! The engine's errors. The broker maps each to one Kafka error code (see the server's
//! `errors` module); the engine never speaks wire codes itself.

use std::path::PathBuf;

use crate::batch::BatchError;
use crate::Offset;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("offset {offset} is outside the log [{start}, {end})")]
    OffsetOutOfRange {
        offset: Offset,
        start: Offset,
        end: Offset,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no space left for the log in {0}")]
    StorageFull(PathBuf),
    #[error("log {0} failed after an I/O error and refuses writes until it is reopened")]
    Failed(PathBuf),
    /// A replicated batch does not continue the log: a gap, an overlap, or batches that do not
    /// follow each other (`append_replicated`).
    #[error("replicated batch starts at offset {found} where the log needs {expected}")]
    NonContiguous { expected: Offset, found: Offset },
    /// A replicated batch carries a leader epoch below one already in the log.
    #[error(
        "replicated batch at offset {offset} has leader epoch {epoch}, below the log's {latest}"
    )]
    EpochRegression {
        offset: Offset,
        epoch: i32,
        latest: i32,
    },
    /// The offsets a caller waited for were removed by `truncate_to` (the log now ends at
    /// `end`): they were never committed and never will be.
    #[error("offset {offset} was truncated away; the log now ends at {end}")]
    Truncated { offset: Offset, end: Offset },
    /// A control file written by a newer format version than this build reads.
    #[error("{path} has format version {version}; this build reads versions up to {supported}")]
    UnsupportedFormat {
        path: PathBuf,
        version: u8,
        supported: u8,
    },
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return LogError::StorageFull(path);
        }
        LogError::Io { op, path, source }
    }
}
