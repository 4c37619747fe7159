//! raft-rs logs through `slog`; this drain forwards its records to `tracing`, so the quorum's
//! logs land with the broker's. raft's `info` (elections, term changes) stays `info`; its
//! chatty `debug`/`trace` go to `trace`.

use std::fmt::{self, Write as _};

use slog::{Drain, Key, Level, OwnedKVList, Record, Serializer, KV};

/// A [`slog::Drain`] that emits each record as a `tracing` event with target `raft`.
pub struct TracingDrain;

struct Fields(String);

impl Serializer for Fields {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let enabled = match record.level() {
            Level::Critical | Level::Error => {
                tracing::enabled!(target: "raft", tracing::Level::ERROR)
            }
            Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
            Level::Info => tracing::enabled!(target: "raft", tracing::Level::INFO),
            Level::Debug | Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut f = Fields(String::new());
        let _ = record.kv().serialize(record, &mut f);
        let _ = values.serialize(record, &mut f);
        let msg = record.msg();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{msg}{}", f.0),
            Level::Warning => tracing::warn!(target: "raft", "{msg}{}", f.0),
            Level::Info => tracing::info!(target: "raft", "{msg}{}", f.0),
            Level::Debug | Level::Trace => tracing::trace!(target: "raft", "{msg}{}", f.0),
        }
        Ok(())
    }
}

/// A logger for raft-rs that writes to `tracing`, tagged with the node id.
pub fn raft_logger(node: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("node" => node))
}
