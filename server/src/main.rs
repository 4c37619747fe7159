//! `shardlog`: the broker binary.
//!
//! ```text
//! shardlog start [--listen HOST:PORT] [--data-dir DIR] [--cores N] [--config FILE]
//!                [--node-id ID] [--advertised HOST:PORT] [--admin-listen HOST:PORT]
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
        /// Broker id reported to clients (default 0).
        #[arg(long, value_name = "ID")]
        node_id: Option<i32>,
        /// Address advertised in Metadata (default: the listen address).
        #[arg(long, value_name = "HOST:PORT")]
        advertised: Option<String>,
        /// Admin HTTP listener for /metrics and /health (default 127.0.0.1:9644; "" disables).
        #[arg(long, value_name = "HOST:PORT")]
        admin_listen: Option<String>,
    },
    #[command(flatten)]
    Ops(shardlog_server::cli::Command),
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(true);
    match format {
        // One JSON object per line: timestamp, level, target, threadName, fields.
        LogFormat::Json => builder.json().with_ansi(false).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
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
            return shardlog_server::cli::run(op);
        }
        start => start,
    };
    let Command::Start {
        listen,
        data_dir,
        cores,
        config,
        node_id,
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
    };
    let cfg = match BrokerConfig::load(config.as_deref(), std::env::vars(), &flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardlog: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&cfg.log_level, cfg.log_format);
    match shardlog_server::broker::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "shardlog failed");
            eprintln!("shardlog: {e}");
            ExitCode::from(1)
        }
    }
}
