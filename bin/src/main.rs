//! `shardlog`: the broker binary.
//!
//! ```text
//! shardlog start [--listen HOST:PORT] [--data-dir DIR] [--cores N] [--config FILE]
//!                [--node-id ID] [--advertised HOST:PORT] [--admin-listen HOST:PORT]
//!                [--controller-listen HOST:PORT] [--voters ID@HOST:PORT,...]
//! shardlog topic|produce|consume|group|cluster|config|check ...   (see `shardlog help`)
//! ```
//!
//! Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 1 when the broker fails at start-up
//! or at run time, 2 for a usage or configuration error, 130 on a second signal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardlog_server::config::{BrokerConfig, LogFormat, Overrides};

#[derive(Parser)]
#[command(
    name = "shardlog",
    version,
    about = "Kafka-compatible streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker.
    Start {
        /// Address to listen on (default 127.0.0.1:9092).
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
        /// Directory for logs and metadata (default ./data).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Number of shards, one pinned executor per core (default: all cores).
        #[arg(long, value_name = "N")]
        cores: Option<usize>,
        /// TOML configuration file; flags and SHARDLOG_* variables override it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Broker id, >= 1 (default 1).
        #[arg(long, value_name = "ID")]
        node_id: Option<i32>,
        /// Controller listener (raft and controller RPC between brokers); needed with --voters.
        #[arg(long, value_name = "HOST:PORT")]
        controller_listen: Option<String>,
        /// Controller quorum voters, `1@host:port,2@host:port,3@host:port` (their controller
        /// listeners). Absent: this node is its own sole voter.
        #[arg(long, value_name = "ID@HOST:PORT,...")]
        voters: Option<String>,
        /// Address advertised in Metadata (default: the listen address).
        #[arg(long, value_name = "HOST:PORT")]
        advertised: Option<String>,
        /// Admin HTTP listener for /metrics and /health (default 127.0.0.1:9644; "" disables).
        #[arg(long, value_name = "HOST:PORT")]
        admin_listen: Option<String>,
    },
    #[command(flatten)]
    Ops(shardlog_cli::Command),
}

/// The broker's log lines are written to stderr by a thread of their own, never by a shard.
///
/// A `write(2)` to stderr can block: on a file, while the file system waits for its journal
/// (the soak, `tuning/soak.py`, saw clients of the broker wait ~100 ms with the log on a
/// busy disk and ~9 ms with it on tmpfs), on a pipe, while the reader (journald) is slow. A
/// shard's executor thread blocked in `write` serves no connection, so every log line that a
/// client can provoke (a bad frame closes its connection with a warning) would let that client
/// stall everyone. Here a shard only formats the line and hands it to a bounded queue; when the
/// queue is full the line is dropped and counted, and the writer thread reports how many.
///
/// In the text format each event is also made exactly one line of bounded length
/// ([`one_line`](log_sink::one_line)): client-supplied text is escaped and cut where it is
/// logged (`Untrusted`), and this is the backstop for any value that was not.
mod log_sink {
    use std::io::{self, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc::{self, SyncSender, TrySendError};
    use std::time::Duration;

    /// Lines waiting for the writer thread before new ones are dropped.
    const QUEUE_LINES: usize = 16 * 1024;

    /// A text-format line longer than this is cut (with a marker).
    pub const MAX_TEXT_LINE: usize = 16 << 10;

    /// Makes one formatted text event exactly one line of at most [`MAX_TEXT_LINE`] bytes
    /// (plus the marker): line breaks inside it are written as `\n`/`\r`, other C0 controls
    /// as `\u{..}` (ESC is kept when `keep_esc`: the formatter's own colours on a terminal),
    /// and a longer line is cut at a character boundary.
    pub fn one_line(line: &mut Vec<u8>, keep_esc: bool) {
        let body_len = line.len() - usize::from(line.last() == Some(&b'\n'));
        let body = &line[..body_len];
        let clean = body
            .iter()
            .all(|&b| b >= 0x20 || b == b'\t' || (keep_esc && b == 0x1b));
        if clean && body_len <= MAX_TEXT_LINE {
            return;
        }
        let mut out = Vec::with_capacity(body_len.min(MAX_TEXT_LINE) + 64);
        let mut cut_at = None;
        for (i, &b) in body.iter().enumerate() {
            if out.len() >= MAX_TEXT_LINE && (b & 0xc0) != 0x80 {
                cut_at = Some(i);
                break;
            }
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.push(b),
                0x1b if keep_esc => out.push(b),
                b if b < 0x20 => out.extend_from_slice(format!("\\u{{{b:x}}}").as_bytes()),
                b => out.push(b),
            }
        }
        if let Some(i) = cut_at {
            out.extend_from_slice(
                format!(" ...(line cut: {} more bytes)", body_len - i).as_bytes(),
            );
        }
        out.push(b'\n');
        *line = out;
    }

    static DROPPED: AtomicU64 = AtomicU64::new(0);

    enum Msg {
        Line(Vec<u8>),
        Flush(SyncSender<()>),
    }

    /// The `MakeWriter` given to `tracing_subscriber::fmt`.
    #[derive(Clone)]
    pub struct Sink {
        tx: SyncSender<Msg>,
        /// Text format: events are passed through [`one_line`] (with `keep_esc` = colours).
        text: Option<bool>,
    }

    impl Sink {
        /// Starts the writer thread. `None` if it cannot be spawned (then log synchronously).
        pub fn start(text: Option<bool>) -> Option<Sink> {
            let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE_LINES);
            std::thread::Builder::new()
                .name("log".into())
                .spawn(move || {
                    // Signals are for the broker's signal thread (broker.rs), which blocks
                    // them only in threads started after this one: block them here too, or
                    // SIGTERM delivered to this thread would kill the process.
                    // SAFETY: a zeroed sigset_t filled by sigfillset is valid; pthread_sigmask
                    // only changes this thread's mask.
                    unsafe {
                        let mut all: libc::sigset_t = std::mem::zeroed();
                        libc::sigfillset(&mut all);
                        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
                    }
                    let mut err = io::stderr();
                    for msg in rx {
                        match msg {
                            Msg::Line(line) => {
                                let dropped = DROPPED.swap(0, Ordering::Relaxed);
                                if dropped > 0 {
                                    let _ = writeln!(
                                        err,
                                        "shardlog: {dropped} log lines dropped (log output slower than the broker)"
                                    );
                                }
                                let _ = err.write_all(&line);
                            }
                            Msg::Flush(done) => {
                                let _ = err.flush();
                                let _ = done.send(());
                            }
                        }
                    }
                })
                .ok()?;
            Some(Sink { tx, text })
        }

        /// Waits (at most 5 s) until every line queued so far is written.
        pub fn flush(&self) {
            let (done_tx, done_rx) = mpsc::sync_channel(1);
            if self.tx.send(Msg::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv_timeout(Duration::from_secs(5));
            }
        }
    }

    /// Collects one event's formatted text; queued when dropped (fmt drops it after the event).
    pub struct Line {
        buf: Vec<u8>,
        tx: SyncSender<Msg>,
        text: Option<bool>,
    }

    impl Write for Line {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.buf.extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for Line {
        fn drop(&mut self) {
            if self.buf.is_empty() {
                return;
            }
            let mut line = std::mem::take(&mut self.buf);
            if let Some(keep_esc) = self.text {
                one_line(&mut line, keep_esc);
            }
            if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
        type Writer = Line;

        fn make_writer(&'a self) -> Line {
            Line {
                buf: Vec::with_capacity(256),
                tx: self.tx.clone(),
                text: self.text,
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn lines_arrive_whole_and_in_order_and_overflow_is_counted() {
            let (tx, rx) = mpsc::sync_channel::<Msg>(2);
            let sink = Sink {
                tx,
                text: Some(false),
            };
            for i in 0..3 {
                let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&sink);
                write!(w, "line ").unwrap();
                writeln!(w, "{i}").unwrap();
            }
            let got: Vec<Vec<u8>> = rx
                .try_iter()
                .map(|m| match m {
                    Msg::Line(l) => l,
                    Msg::Flush(_) => Vec::new(),
                })
                .collect();
            assert_eq!(got, vec![b"line 0\n".to_vec(), b"line 1\n".to_vec()]);
            assert_eq!(DROPPED.swap(0, Ordering::Relaxed), 1);
        }

        #[test]
        fn one_event_is_one_bounded_line() {
            let mut l = b"INFO x topic=a\nERROR forged\r\0 \x1b[1mbold\x1b[0m\n".to_vec();
            let mut colours = l.clone();
            one_line(&mut l, false);
            assert_eq!(
                l,
                b"INFO x topic=a\\nERROR forged\\r\\u{0} \\u{1b}[1mbold\\u{1b}[0m\n".to_vec()
            );
            one_line(&mut colours, true);
            assert_eq!(
                colours,
                b"INFO x topic=a\\nERROR forged\\r\\u{0} \x1b[1mbold\x1b[0m\n".to_vec()
            );
            let mut plain = b"INFO ok\n".to_vec();
            one_line(&mut plain, false);
            assert_eq!(plain, b"INFO ok\n");
            let mut long = "é".repeat(MAX_TEXT_LINE).into_bytes();
            long.push(b'\n');
            one_line(&mut long, false);
            let text = String::from_utf8(long).expect("cut at a character boundary");
            assert!(text.len() < MAX_TEXT_LINE + 64);
            assert!(text.ends_with(&format!(" ...(line cut: {} more bytes)\n", MAX_TEXT_LINE)));
            assert_eq!(text.matches('\n').count(), 1);
        }
    }
}

fn init_tracing(level: &str, format: LogFormat) -> Option<log_sink::Sink> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let sink = log_sink::Sink::start((format == LogFormat::Text).then_some(ansi));
    let writer = match sink.clone() {
        Some(s) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(s),
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_thread_names(true);
    match format {
        // One JSON object per line: timestamp, level, target, threadName, fields.
        LogFormat::Json => builder.json().with_ansi(false).init(),
        LogFormat::Text => builder.with_ansi(ansi).init(),
    }
    sink
}

/// The CLI logs only warnings unless RUST_LOG says otherwise (its output is its result).
fn init_cli_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Ops(op) => {
            init_cli_tracing();
            return shardlog_cli::run(op);
        }
        start => start,
    };
    let Command::Start {
        listen,
        data_dir,
        cores,
        config,
        node_id,
        controller_listen,
        voters,
        advertised,
        admin_listen,
    } = command
    else {
        return ExitCode::from(2);
    };
    let flags = Overrides {
        listen,
        advertised,
        data_dir,
        cores,
        node_id,
        admin_listen,
        controller_listen,
        voters,
    };
    let cfg = match BrokerConfig::load(config.as_deref(), std::env::vars(), &flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardlog: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let sink = init_tracing(&cfg.log_level, cfg.log_format);
    let r = shardlog_server::broker::run(cfg);
    if let Err(e) = &r {
        tracing::error!(error = %e, "shardlog failed");
    }
    // Every queued log line is out before the exit (and before the plain stderr line below).
    if let Some(s) = &sink {
        s.flush();
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardlog: {e}");
            ExitCode::from(1)
        }
    }
}
