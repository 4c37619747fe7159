//! `shardlog-bench run` / `compare` / `tune` (the tuning lab) / `report`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shardlog_bench::lab::{tune, Target, TuneOptions};
use shardlog_bench::report::{compare, table, RunResult};
use shardlog_bench::runner::{run, write_outputs, RunOptions};
use shardlog_bench::scenario::{load_scenario, parse_scenario};

#[derive(Parser)]
#[command(
    name = "shardlog-bench",
    about = "Load generator for Kafka-compatible brokers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario (file and/or flags) against a broker.
    Run(Box<RunArgs>),
    /// Print two result files side by side with ratios (b / a).
    Compare {
        /// Baseline result JSON.
        a: PathBuf,
        /// Result JSON to compare with it.
        b: PathBuf,
    },
    /// The tuning lab: run (or resume) an experiment's matrix and write its report.
    Tune(TuneArgs),
    /// Write REPORT.md, summary.json and the plots of a tuning-lab results folder.
    Report {
        /// The results folder (tuning/results/<name>-<date>).
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct TuneArgs {
    /// Experiment file (tuning/experiments/<name>.toml).
    experiment: PathBuf,
    /// Results folder (default tuning/results/<name>-<date>); an existing one is resumed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use this cluster instead of starting local brokers.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// The shardlog binary for local brokers (default: beside this binary, else on PATH).
    #[arg(long, value_name = "PATH")]
    shardlog: Option<PathBuf>,
    /// Parent of the local brokers' data directories; emptied per cluster; fio measures it.
    #[arg(long, value_name = "DIR", default_value = "/var/tmp/shardlog-lab-data")]
    data_dir: PathBuf,
    /// No per-second progress lines (one line per run stays).
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Broker bootstrap address.
    #[arg(long, default_value = "127.0.0.1:9092", env = "SHARDLOG_BOOTSTRAP")]
    bootstrap: String,
    /// Scenario TOML file ([workload] and [[variant]] tables).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Run only these variants of the scenario (repeatable).
    #[arg(long)]
    variant: Vec<String>,
    /// Override a workload key (repeatable), e.g. --set acks=all --set topic_configs.flush.messages=1
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Number of topics.
    #[arg(long)]
    topics: Option<u32>,
    /// Partitions per topic.
    #[arg(long)]
    partitions: Option<i32>,
    /// Producer connections.
    #[arg(long)]
    producers: Option<u32>,
    /// Consumers.
    #[arg(long)]
    consumers: Option<u32>,
    /// Message (value) size in bytes.
    #[arg(long)]
    message_size: Option<usize>,
    /// Batch size in bytes.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Linger in ms.
    #[arg(long)]
    linger_ms: Option<u64>,
    /// acks: all, 1, 0.
    #[arg(long)]
    acks: Option<String>,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long)]
    compression: Option<String>,
    /// Idempotent producers.
    #[arg(long)]
    idempotent: bool,
    /// Open-loop target, total records/s.
    #[arg(long)]
    rate: Option<f64>,
    /// Open-loop target, total MB/s.
    #[arg(long)]
    rate_mb: Option<f64>,
    /// Warm-up seconds.
    #[arg(long)]
    warmup: Option<f64>,
    /// Measured seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Output directory.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Name of the run when there is no scenario file.
    #[arg(long, default_value = "adhoc")]
    name: String,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Threads of the load generator's async runtime (default: one per CPU). Fewer threads
    /// leave more of a shared machine to the broker under test.
    #[arg(long)]
    threads: Option<usize>,
}

impl RunArgs {
    fn overrides(&self) -> Vec<String> {
        let mut o = self.set.clone();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                o.push(format!("{k}={v}"));
            }
        };
        put("topics", self.topics.map(|v| v.to_string()));
        put("partitions", self.partitions.map(|v| v.to_string()));
        put("producers", self.producers.map(|v| v.to_string()));
        put("consumers", self.consumers.map(|v| v.to_string()));
        put("message_size", self.message_size.map(|v| v.to_string()));
        put("batch_size", self.batch_size.map(|v| v.to_string()));
        put("linger_ms", self.linger_ms.map(|v| v.to_string()));
        put("acks", self.acks.as_ref().map(|v| format!("\"{v}\"")));
        put(
            "compression",
            self.compression.as_ref().map(|v| format!("\"{v}\"")),
        );
        put("idempotent", self.idempotent.then(|| "true".to_string()));
        put("rate_records_per_s", self.rate.map(|v| format!("{v:?}")));
        put("rate_mb_per_s", self.rate_mb.map(|v| format!("{v:?}")));
        put("warmup_s", self.warmup.map(|v| format!("{v:?}")));
        put("duration_s", self.duration.map(|v| format!("{v:?}")));
        o
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Compare { a, b } => {
            let load = |p: &PathBuf| -> anyhow::Result<RunResult> {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
            };
            print!("{}", compare(&load(&a)?, &load(&b)?));
            Ok(())
        }
        Cmd::Report { dir } => {
            let p = shardlog_bench::lab_report::write_report(&dir)?;
            println!("wrote {}", p.display());
            Ok(())
        }
        Cmd::Tune(a) => {
            let exp = shardlog_bench::experiment::load_experiment(&a.experiment)?;
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| shardlog_bench::lab::default_out(&exp.name));
            let target = match a.bootstrap {
                Some(b) => Target::Bootstrap(b),
                None => Target::Local {
                    shardlog: match a.shardlog {
                        Some(p) => p,
                        None => std::env::current_exe()
                            .ok()
                            .and_then(|e| e.parent().map(|d| d.join("shardlog")))
                            .filter(|p| p.is_file())
                            .unwrap_or_else(|| PathBuf::from("shardlog")),
                    },
                    data_dir: a.data_dir,
                },
            };
            tune(&TuneOptions {
                experiment: a.experiment,
                out,
                target,
                quiet: a.quiet,
            })
        }
        Cmd::Run(args) => {
            let overrides = args.overrides();
            let mut variants = match &args.scenario {
                Some(p) => load_scenario(p, &overrides)?,
                None => parse_scenario("", &args.name, &overrides)?,
            };
            if !args.variant.is_empty() {
                variants.retain(|v| args.variant.contains(&v.name));
                anyhow::ensure!(!variants.is_empty(), "no variant named {:?}", args.variant);
            }
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.threads {
                anyhow::ensure!(n >= 1, "--threads must be at least 1");
                builder.worker_threads(n);
            }
            let rt = builder.enable_all().build()?;
            let mut failed = 0;
            for v in variants {
                let opts = RunOptions {
                    bootstrap: args.bootstrap.clone(),
                    progress: !args.quiet,
                    interval: Duration::from_secs(1),
                    command: command.clone(),
                };
                eprintln!("running {} / {}", v.scenario, v.name);
                match rt.block_on(run(&v, &opts)) {
                    Ok((result, hdr)) => {
                        let stem = format!("{}-{}", v.scenario, v.name);
                        let result = write_outputs(&args.out, &stem, result, &hdr)?;
                        print!("{}", table(&result));
                        println!("wrote {}", args.out.join(format!("{stem}.json")).display());
                    }
                    Err(e) => {
                        eprintln!("{} / {} failed: {e:#}", v.scenario, v.name);
                        failed += 1;
                    }
                }
            }
            rt.shutdown_timeout(Duration::from_secs(2));
            anyhow::ensure!(failed == 0, "{failed} run(s) failed");
            Ok(())
        }
    }
}
