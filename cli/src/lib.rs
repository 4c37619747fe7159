//! The operator CLI: `shardlog topic|produce|consume|group|cluster|config|check|dev`.
//!
//! Every subcommand that talks to a cluster runs on a small tokio runtime in this process with
//! the `shardlog-client` crate, so it works against shardlog or any Kafka-compatible cluster.
//! Output is a table for people (`--format table`, the default) or JSON for scripts
//! (`--format json`). Exit status: 0 on success, 1 when the operation failed (unreachable
//! broker, Kafka error, unhealthy cluster, failed host check), 2 for a usage or configuration
//! error.

pub mod admin;
pub mod check;
pub mod cluster;
pub mod conn;
pub mod consume;
pub mod dev;
pub mod error;
pub mod group;
pub mod output;
pub mod produce;
pub mod profile;
pub mod topic;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use conn::Conn;
pub use error::{parse_kv, CliError, CliResult};
pub use output::Format;

/// The "which cluster" paragraph of every cluster command's help: the precedence of the
/// broker sources (see `profile`).
macro_rules! brokers_help {
    () => {
        "

Which cluster: --brokers, else --profile NAME, else $SHARDLOG_BROKERS, else
$SHARDLOG_PROFILE, else the profile file's current_profile (or a profile named
\"default\"), else 127.0.0.1:9092. The profile file is $SHARDLOG_CLI_CONFIG, else
$XDG_CONFIG_HOME/shardlog/cli.toml, else ~/.config/shardlog/cli.toml:
  current_profile = \"prod\"
  [profiles.prod]
  brokers = \"10.0.0.1:9092,10.0.0.2:9092\""
    };
}

const TOPIC_EXAMPLES: &str = concat!(
    "Examples:
  shardlog topic create orders --partitions 6 --config retention.ms=86400000
  shardlog topic list
  shardlog topic describe orders
  shardlog topic alter-config orders --set retention.ms=3600000 --delete flush.messages
  shardlog topic add-partitions orders --total 12
  shardlog topic delete orders
  shardlog topic delete-records orders --partition 0 --before 1000
  shardlog topic delete-records orders --offset 0=1000 --offset 3=250 --dry-run
  shardlog topic delete-records orders --all-partitions --before end
  shardlog topic list --brokers 10.0.0.1:9092 --format json",
    brokers_help!()
);

const PRODUCE_EXAMPLES: &str = concat!(
    "Examples:
  echo hello | shardlog produce orders
  printf 'k1:v1\\nk2:v2\\n' | shardlog produce orders --key-separator :
  shardlog produce orders --header source=cli --acks all --compression zstd < lines.txt
  shardlog produce orders --partition 3 --format json < lines.txt
  echo first | shardlog produce new-topic --allow-auto-topic-creation",
    brokers_help!()
);

const CONSUME_EXAMPLES: &str = concat!(
    "Examples:
  shardlog consume orders --from-beginning -n 10
  shardlog consume orders --offset 42 --partition 0 --output full
  shardlog consume orders --timestamp 1700000000000 --output json
  shardlog consume orders --group billing --idle-timeout-ms 5000",
    brokers_help!()
);

const GROUP_EXAMPLES: &str = concat!(
    "Examples:
  shardlog group list
  shardlog group describe billing
  shardlog group reset-offsets billing --topic orders --to-earliest --dry-run
  shardlog group reset-offsets billing --topic orders --to-offset 100 --partition 0
  shardlog group reset-offsets billing --topic orders --to-timestamp 1700000000000
  shardlog group delete billing",
    brokers_help!()
);

const CLUSTER_EXAMPLES: &str = concat!(
    "Examples:
  shardlog cluster info
  shardlog cluster health --brokers 10.0.0.1:9092,10.0.0.2:9092",
    brokers_help!()
);

const DEV_EXAMPLES: &str = "Examples:
  shardlog dev cluster --brokers 3 --data-dir /tmp/sl
  shardlog dev cluster --brokers 3 --data-dir /tmp/sl --base-port 19092 --cores 2
  shardlog dev cluster --data-dir /tmp/sl -- --log-level debug

Broker i (1..=N) listens on B+10*(i-1) (Kafka), +1 (controller), +2 (admin HTTP), keeps its
data and its log file shardlog.log in DIR/broker-<i>; DIR/cluster.json lists the brokers
with their PIDs. SIGTERM or Ctrl-C stops them all (SIGTERM, then SIGKILL after --grace-secs).";

const CONFIG_EXAMPLES: &str = "Examples:
  shardlog config check /etc/shardlog/shardlog.toml
  shardlog config check shardlog.toml --format json";

const CHECK_EXAMPLES: &str = "Examples:
  shardlog check --data-dir /var/lib/shardlog
  shardlog check --config /etc/shardlog/shardlog.toml --format json";

/// The operator subcommands (flattened into `shardlog`'s own).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, describe, reconfigure and delete topics.
    #[command(after_help = TOPIC_EXAMPLES)]
    Topic(TopicCmd),
    /// Produce lines from stdin as records.
    #[command(after_help = PRODUCE_EXAMPLES)]
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    #[command(after_help = CONSUME_EXAMPLES)]
    Consume(consume::ConsumeArgs),
    /// List, describe (with lag), reset and delete consumer groups.
    #[command(after_help = GROUP_EXAMPLES)]
    Group(GroupCmd),
    /// Brokers, controller and partition health of the cluster.
    #[command(after_help = CLUSTER_EXAMPLES)]
    Cluster(ClusterCmd),
    /// Broker configuration files.
    #[command(after_help = CONFIG_EXAMPLES)]
    Config(ConfigCmd),
    /// Verify that this host is ready to run a broker (io_uring, locked memory, O_DIRECT, ...).
    #[command(after_help = CHECK_EXAMPLES)]
    Check(check::CheckArgs),
    /// Development helpers: `dev cluster` runs a local multi-broker cluster.
    #[command(after_help = DEV_EXAMPLES)]
    Dev(DevCmd),
}

#[derive(Args, Debug)]
pub struct DevCmd {
    #[command(subcommand)]
    pub action: dev::DevAction,
}

#[derive(Args, Debug)]
pub struct TopicCmd {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub action: topic::TopicAction,
}

#[derive(Args, Debug)]
pub struct GroupCmd {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub action: group::GroupAction,
}

#[derive(Args, Debug)]
pub struct ClusterCmd {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub action: cluster::ClusterAction,
}

#[derive(Args, Debug)]
pub struct ConfigCmd {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Validate a broker configuration file (exit 2 when it is not valid).
    Check {
        /// The TOML file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Runs one operator command; returns the process exit status.
pub fn run(cmd: Command) -> ExitCode {
    let result = match cmd {
        Command::Config(ConfigCmd {
            action: ConfigAction::Check { file, format },
        }) => config_check(&file, format),
        Command::Check(args) => check::run(&args),
        Command::Dev(d) => dev::run(&d.action),
        other => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(run_async(other)),
            Err(e) => Err(CliError::Failed(format!("cannot start the runtime: {e}"))),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardlog: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run_async(cmd: Command) -> CliResult {
    match cmd {
        Command::Topic(t) => topic::run(&t.conn, t.action).await,
        Command::Produce(a) => produce::run(a).await,
        Command::Consume(a) => consume::run(a).await,
        Command::Group(g) => group::run(&g.conn, g.action).await,
        Command::Cluster(c) => cluster::run(&c.conn, c.action).await,
        Command::Config(_) | Command::Check(_) | Command::Dev(_) => Ok(()),
    }
}

/// `shardlog config check FILE`: the same loading and validation `shardlog start` does, with
/// the environment and flags left out.
fn config_check(file: &std::path::Path, format: Format) -> CliResult {
    let loaded = shardlog_server::config::BrokerConfig::load(
        Some(file),
        std::iter::empty(),
        &shardlog_server::config::Overrides::default(),
    );
    match loaded {
        Ok(cfg) => {
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"file": file.display().to_string(), "valid": true,
                        "data_dir": cfg.data_dir.display().to_string(), "listen": cfg.listen,
                        "admin_listen": cfg.admin_listen, "cores": cfg.cores})
                ),
                Format::Table => println!(
                    "{}: valid (listen {}, data_dir {}, {} cores, admin {})",
                    file.display(),
                    cfg.listen,
                    cfg.data_dir.display(),
                    cfg.cores,
                    if cfg.admin_listen.is_empty() {
                        "disabled"
                    } else {
                        &cfg.admin_listen
                    }
                ),
            }
            Ok(())
        }
        Err(e) => {
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::json!({"file": file.display().to_string(), "valid": false, "error": e.to_string()})
                );
            }
            Err(CliError::Usage(format!(
                "{}: invalid configuration: {e}",
                file.display()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(subcommand)]
        cmd: Command,
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        let mut v = vec!["shardlog"];
        v.extend_from_slice(args);
        T::try_parse_from(v).map(|t| t.cmd)
    }

    #[test]
    fn global_options_reach_subcommands() {
        let c = parse(&["topic", "list", "--brokers", "h:1", "--format", "json"]).expect("parse");
        let Command::Topic(t) = c else {
            panic!("topic")
        };
        assert_eq!(t.conn.brokers.as_deref(), Some("h:1"));
        assert_eq!(t.conn.format, Format::Json);
        let c = parse(&["topic", "describe", "x"]).expect("parse");
        let Command::Topic(t) = c else {
            panic!("topic")
        };
        assert_eq!(
            t.conn.brokers, None,
            "resolved later: flags, environment, profile"
        );
        let c = parse(&["group", "list", "--profile", "prod"]).expect("parse");
        let Command::Group(g) = c else {
            panic!("group")
        };
        assert_eq!(g.conn.profile.as_deref(), Some("prod"));
        assert_eq!(t.conn.format, Format::Table);
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        assert!(parse(&["topic", "list", "--format", "xml"]).is_err());
        assert!(parse(&["topic", "create"]).is_err());
        assert!(parse(&["consume"]).is_err());
        assert!(
            parse(&["group", "reset-offsets", "g", "--topic", "t"]).is_err(),
            "a target is required"
        );
        assert!(parse(&[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--to-latest"
        ])
        .is_err());
        assert!(parse(&["consume", "t", "--from-beginning", "--offset", "3"]).is_err());
    }

    #[test]
    fn key_values() {
        assert_eq!(parse_kv("a=b=c").expect("kv"), ("a".into(), "b=c".into()));
        assert_eq!(parse_kv("a=").expect("kv"), ("a".into(), "".into()));
        assert!(parse_kv("=x").is_err());
        assert!(parse_kv("novalue").is_err());
    }

    #[test]
    fn config_check_reports_bad_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "listen = \"127.0.0.1:9092\"\ncores = 1\n").expect("write");
        assert!(config_check(&good, Format::Table).is_ok());
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "listen = \"nope\"\n").expect("write");
        let e = config_check(&bad, Format::Table).expect_err("bad");
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("listen"), "{e}");
        let e = config_check(&dir.path().join("missing.toml"), Format::Json).expect_err("missing");
        assert_eq!(e.exit_code(), 2);
    }
}
