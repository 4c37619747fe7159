//! The tuning lab's runner (`shardlog-bench tune`): runs every cell of an experiment
//! ([`crate::experiment`]) N times against fresh local brokers (or a given bootstrap), keeps each
//! run's result, resumes an interrupted run, and measures the machine's limits beside it.
//!
//! The results folder:
//!
//! * `experiment.toml`: the experiment as run; a later `tune` into the same folder resumes only
//!   if the file parses to the same TOML (so results of different settings never mix);
//! * `raw/<cell id>/rep-<n>.json` (the run's [`RunResult`]) and `.hlog` (HdrHistogram log): a
//!   repetition is finished when its JSON exists (written to a temporary name, then renamed, so
//!   an interrupted write leaves no finished-looking file); `rep-<n>.error` holds why a
//!   repetition failed (retried by the next `tune`);
//! * `skipped.json`: cells skipped in the last session and why (a cluster that did not start);
//! * `limits.json`, `iperf3.json`, `fio.json`: the machine's limits, measured once per folder;
//! * `sessions.json`: when each `tune` session ran, with the commit and command;
//! * `summary.json`, `REPORT.md`, `*.svg`: written by [`crate::lab_report`].
//!
//! Local brokers: one `shardlog start` for cells with replication factor 1; `shardlog dev
//! cluster --brokers N` for RF = N > 1 (one broker per replica), or one cluster of `[broker]
//! brokers` for every cell when the experiment sets it. Each broker configuration gets
//! a fresh cluster with empty data directories; flush policy and min.insync.replicas are topic
//! configs, so they need no restart. A cell whose rate is a share of a closed-loop cell
//! (`rate_mb_per_s = "50%"`) gets it from that cell's finished runs in the same folder. A cluster that does not start, or that refuses a topic of
//! its replication factor, skips its cells with the reason: nothing is faked.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use shardlog_client::{Client, ClientConfig, NewTopic};

use crate::experiment::{load_experiment, resolve_cpus, Cell, Experiment, RelativeRate};
use crate::report::RunResult;
use crate::runner::{run, write_hlog, RunOptions};
use crate::scenario::{Variant, Workload};

pub use crate::lab_files::{civil_from_days, rep_path, Limits, Session};

/// Failed runs, with none finished, after which a cluster's remaining cells are skipped.
const GIVE_UP_AFTER: u32 = 2;

/// What `tune` runs against.
#[derive(Debug, Clone)]
pub enum Target {
    /// An existing cluster (the experiment's RF cells must fit it).
    Bootstrap(String),
    /// Local brokers started by the runner.
    Local {
        /// The `shardlog` binary.
        shardlog: PathBuf,
        /// Parent of the brokers' data directories (emptied before each cluster starts); the
        /// disk fio measures.
        data_dir: PathBuf,
    },
}

/// Options of `tune`.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// The experiment file.
    pub experiment: PathBuf,
    /// Results folder.
    pub out: PathBuf,
    /// Brokers.
    pub target: Target,
    /// No per-second progress lines of the runs (the per-run progress line stays).
    pub quiet: bool,
}

/// The default results folder: `tuning/results/<name>-<YYYY-MM-DD>` (UTC).
pub fn default_out(name: &str) -> PathBuf {
    PathBuf::from("tuning/results").join(format!("{name}-{}", today()))
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes `text` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// Repetitions not finished yet, in run order: (cell index, repetition).
pub fn pending(out: &Path, exp: &Experiment) -> Vec<(usize, u32)> {
    let mut v = Vec::new();
    for (i, c) in exp.cells.iter().enumerate() {
        for rep in 1..=exp.run.repetitions {
            if !rep_path(out, &c.key.id(), rep).is_file() {
                v.push((i, rep));
            }
        }
    }
    v
}

/// Puts the experiment into `out` (new folder) or checks that `out` holds the same experiment
/// (resume). Returns true when resuming.
pub fn prepare_out(out: &Path, experiment_text: &str) -> anyhow::Result<bool> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let saved = out.join("experiment.toml");
    if saved.exists() {
        let old = std::fs::read_to_string(&saved)
            .with_context(|| format!("reading {}", saved.display()))?;
        let parse = |t: &str| toml::from_str::<toml::Value>(t);
        match (parse(&old), parse(experiment_text)) {
            (Ok(a), Ok(b)) if a == b => Ok(true),
            _ => bail!(
                "{} holds results of a different experiment ({} differs from the file given); \
                 resume only with the same file, or choose another --out",
                out.display(),
                saved.display()
            ),
        }
    } else {
        write_atomic(&saved, experiment_text)?;
        Ok(false)
    }
}

fn tool_present(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn machine_facts(l: &mut Limits) {
    l.cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    l.kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    l.memory_gib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0 / 1024.0)
    });
}

/// Measures the machine's limits as `tuning/bench-standard.sh` does: iperf3 over loopback and
/// fio on `data_dir` (None: no local disk, e.g. a remote bootstrap). A missing tool is recorded
/// as "not measured" (the lab scripts install them).
pub fn measure_limits(
    out: &Path,
    exp: &Experiment,
    data_dir: Option<&Path>,
) -> anyhow::Result<Limits> {
    let mut l = Limits {
        measured_unix_ms: now_ms(),
        ..Default::default()
    };
    machine_facts(&mut l);
    let spec = &exp.limits;
    if spec.iperf3_s == 0 {
        l.iperf3_note = "not measured: [limits] iperf3_s = 0".into();
    } else if !tool_present("iperf3") {
        l.iperf3_note = "not measured: iperf3 is not installed (tuning/lab.sh installs it)".into();
    } else {
        eprintln!("== iperf3 over loopback ({} s, 1 stream)", spec.iperf3_s);
        match iperf3(out, exp.broker.base_port.saturating_add(95), spec.iperf3_s) {
            Ok(mb) => {
                l.iperf3_mb_per_s = Some(mb);
                l.iperf3_note = format!("iperf3 -c 127.0.0.1 -t {} (1 stream)", spec.iperf3_s);
            }
            Err(e) => l.iperf3_note = format!("not measured: iperf3 failed: {e:#}"),
        }
    }
    match data_dir {
        _ if spec.fio_mb == 0 => l.fio_note = "not measured: [limits] fio_mb = 0".into(),
        None => {
            l.fio_note =
                "not measured: brokers given by --bootstrap (their disk is not here)".into()
        }
        Some(_) if !tool_present("fio") => {
            l.fio_note = "not measured: fio is not installed (tuning/lab.sh installs it)".into()
        }
        Some(dir) => {
            eprintln!(
                "== fio on {} ({} MiB, 1 MiB O_DIRECT writes + fdatasync)",
                dir.display(),
                spec.fio_mb
            );
            match fio(out, dir, spec.fio_mb) {
                Ok((mb, p99)) => {
                    l.fio_mb_per_s = Some(mb);
                    l.fio_fdatasync_p99_ms = p99;
                    l.fio_note = format!(
                        "fio --rw=write --bs=1m --size={}m --direct=1 --fdatasync=1 on the brokers' data disk",
                        spec.fio_mb
                    );
                }
                Err(e) => l.fio_note = format!("not measured: fio failed: {e:#}"),
            }
        }
    }
    write_atomic(&out.join("limits.json"), &serde_json::to_string_pretty(&l)?)?;
    Ok(l)
}

fn iperf3(out: &Path, port: u16, secs: u32) -> anyhow::Result<f64> {
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(500));
    let client = Command::new("iperf3")
        .args([
            "-c",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            &secs.to_string(),
            "-J",
        ])
        .output()
        .context("running iperf3 -c");
    let _ = server.kill();
    let _ = server.wait();
    let client = client?;
    std::fs::write(out.join("iperf3.json"), &client.stdout)?;
    anyhow::ensure!(
        client.status.success(),
        "iperf3 -c exited {}",
        client.status
    );
    let v: serde_json::Value = serde_json::from_slice(&client.stdout).context("iperf3 JSON")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 8.0 / 1e6)
        .context("iperf3 JSON has no end.sum_received.bits_per_second")
}

fn fio(out: &Path, dir: &Path, mb: u32) -> anyhow::Result<(f64, Option<f64>)> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("fio.dat");
    let _ = std::fs::remove_file(&file);
    let o = Command::new("fio")
        .arg("--name=seqfsync")
        .arg(format!("--filename={}", file.display()))
        .args(["--rw=write", "--bs=1m", "--direct=1", "--fdatasync=1"])
        .args([
            "--ioengine=psync",
            "--fallocate=native",
            "--output-format=json",
        ])
        .arg(format!("--size={mb}m"))
        .output()
        .context("running fio");
    let _ = std::fs::remove_file(&file);
    let o = o?;
    std::fs::write(out.join("fio.json"), &o.stdout)?;
    anyhow::ensure!(
        o.status.success(),
        "fio exited {}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr).trim()
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).context("fio JSON")?;
    let job = &v["jobs"][0];
    let bw = job["write"]["bw_bytes"]
        .as_f64()
        .context("fio JSON has no jobs[0].write.bw_bytes")?;
    let p99 = job["sync"]["lat_ns"]["percentile"]["99.000000"]
        .as_f64()
        .map(|ns| ns / 1e6);
    Ok((bw / 1e6, p99))
}

/// A local cluster the runner started.
struct LocalCluster {
    /// The `shardlog start` process, or `shardlog dev cluster`'s supervisor.
    child: Child,
    bootstrap: String,
    data_dir: PathBuf,
    log: PathBuf,
}

impl LocalCluster {
    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(mut self, grace: Duration) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signalling our own child, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => break,
            }
        }
        eprintln!("!! {} did not stop in {grace:?}: SIGKILL", self.bootstrap);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let v: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(lines)..].join(" | ")
}

fn listening(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
        .unwrap_or(false)
}

/// Starts a fresh local cluster of `brokers` brokers (1: `shardlog start`; more:
/// `shardlog dev cluster`) with empty data directories.
fn start_local(
    shardlog: &Path,
    data_root: &Path,
    out: &Path,
    exp: &Experiment,
    brokers: u16,
    broker_cpus: Option<&str>,
) -> anyhow::Result<LocalCluster> {
    let data_dir = data_root.join(format!("rf{brokers}"));
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("emptying {}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir)?;
    let logs = out.join("raw").join("brokers");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join(format!("rf{brokers}.log"));
    let b = &exp.broker;
    let port = b.base_port;
    let host = "127.0.0.1";
    let mut args: Vec<String> = Vec::new();
    if brokers == 1 {
        args.extend([
            "start".to_string(),
            "--listen".into(),
            format!("{host}:{port}"),
            "--admin-listen".into(),
            format!("{host}:{}", port + 2),
            "--data-dir".into(),
            data_dir.join("broker-1").display().to_string(),
            "--cores".into(),
            b.cores.to_string(),
        ]);
    } else {
        args.extend([
            "dev".to_string(),
            "cluster".into(),
            "--brokers".into(),
            brokers.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--base-port".into(),
            port.to_string(),
            "--cores".into(),
            b.cores.to_string(),
            "--grace-secs".into(),
            "10".into(),
        ]);
    }
    let mut cmd = match broker_cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(shardlog);
            c
        }
        None => Command::new(shardlog),
    };
    cmd.args(&args);
    // The broker reads SHARDLOG_* variables as its configuration: only the experiment's go in.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SHARDLOG_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(&b.env);
    let logf = std::fs::File::create(&log)?;
    cmd.stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    // SAFETY: prctl in the child between fork and exec, async-signal-safe; the brokers get
    // SIGTERM if this process dies, so an interrupted `tune` leaves none running.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let cmdline = format!("{} {}", shardlog.display(), args.join(" "));
    eprintln!("== starting {cmdline}");
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", shardlog.display()))?;
    let mut cluster = LocalCluster {
        child,
        bootstrap: String::new(),
        data_dir,
        log,
    };
    let addrs: Vec<String> = (0..brokers)
        .map(|i| format!("{host}:{}", port + 10 * i))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = cluster.child.try_wait() {
            let why = tail(&cluster.log, 3);
            bail!("`{cmdline}` exited ({status}): {why}");
        }
        if addrs.iter().all(|a| listening(a)) {
            break;
        }
        if Instant::now() > deadline {
            let why = tail(&cluster.log, 3);
            cluster.stop(Duration::from_secs(15));
            bail!("`{cmdline}`: not every broker listening after 60 s: {why}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.bootstrap = addrs.join(",");
    Ok(cluster)
}

/// Checks that the cluster takes a topic of `rf` replicas (a cluster without replication
/// refuses it), deleting the probe topic again.
async fn probe_rf(bootstrap: &str, rf: i16) -> anyhow::Result<()> {
    let first = bootstrap.split(',').next().unwrap_or(bootstrap);
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        // Brokers of a new cluster may listen before they answer metadata.
        match Client::connect(ClientConfig::new(first)).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow::anyhow!("connecting to {first}: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let name = format!("lab-probe-{}", now_ms());
    let topic = NewTopic {
        name: name.clone(),
        partitions: 1,
        replication_factor: rf,
        configs: Vec::new(),
    };
    loop {
        match client
            .create_topics(std::slice::from_ref(&topic), Duration::from_secs(20), true)
            .await
        {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => {
                bail!("the cluster refused a topic with replication factor {rf}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let _ = client
        .delete_topics(&[name], Duration::from_secs(20), true)
        .await;
    Ok(())
}

/// Waits (up to `max`) until no deleted partition is left in `dir`: deleted topics are freed in
/// the background, and one cell's cleanup should not land in the next one's measurement.
fn wait_for_deletions(dir: &Path, max: Duration) {
    fn has_deleted(dir: &Path, depth: u32) -> bool {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return false;
        };
        rd.flatten().any(|e| {
            e.file_name().to_string_lossy().contains(".deleted")
                || (depth > 0
                    && e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                    && has_deleted(&e.path(), depth - 1))
        })
    }
    let deadline = Instant::now() + max;
    while has_deleted(dir, 5) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Progress and time remaining.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    run_walls: Vec<f64>,
    estimate_per_run: f64,
}

impl Progress {
    fn remaining_s(&self) -> f64 {
        let per = if self.run_walls.is_empty() {
            self.estimate_per_run
        } else {
            self.run_walls.iter().sum::<f64>() / self.run_walls.len() as f64
        };
        per * (self.total - self.done) as f64
    }
}

/// `m:ss` or `h:mm:ss`.
pub fn hms(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn record_session(out: &Path, session: &Session, index: Option<usize>) -> anyhow::Result<usize> {
    let path = out.join("sessions.json");
    let mut all: Vec<Session> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let i = match index {
        Some(i) if i < all.len() => {
            all[i] = session.clone();
            i
        }
        _ => {
            all.push(session.clone());
            all.len() - 1
        }
    };
    write_atomic(&path, &serde_json::to_string_pretty(&all)?)?;
    Ok(i)
}

/// Runs (or resumes) an experiment, then writes the report.
pub fn tune(opts: &TuneOptions) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&opts.experiment)
        .with_context(|| format!("reading {}", opts.experiment.display()))?;
    let exp = load_experiment(&opts.experiment)?;
    let out = &opts.out;
    let resuming = prepare_out(out, &text)?;
    raise_memlock();
    let mut session = Session {
        started_unix_ms: now_ms(),
        commit: git_commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        target: match &opts.target {
            Target::Bootstrap(b) => b.clone(),
            Target::Local { .. } => "local".into(),
        },
        ..Default::default()
    };
    let session_index = record_session(out, &session, None)?;
    let todo = pending(out, &exp);
    let total_runs = exp.cells.len() * exp.run.repetitions as usize;
    eprintln!(
        "experiment {}: {} cells x {} repetitions = {} runs{}; {} to do; results in {}",
        exp.name,
        exp.cells.len(),
        exp.run.repetitions,
        total_runs,
        if exp.not_applicable.is_empty() {
            String::new()
        } else {
            format!(
                " ({} combinations not applicable)",
                exp.not_applicable.len()
            )
        },
        todo.len(),
        out.display()
    );
    if resuming {
        eprintln!(
            "resuming: {} of {total_runs} runs already finished",
            total_runs - todo.len()
        );
    }
    if !out.join("limits.json").is_file() {
        let dir = match &opts.target {
            Target::Local { data_dir, .. } => Some(data_dir.as_path()),
            Target::Bootstrap(_) => None,
        };
        measure_limits(out, &exp, dir)?;
    }

    // Broker configurations: cells grouped by the cluster they need, in matrix order.
    let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for &(i, _) in &todo {
        let g = groups.entry(exp.brokers_for(&exp.cells[i])).or_default();
        if !g.contains(&i) {
            g.push(i);
        }
    }
    let mut skipped: BTreeMap<String, String> = BTreeMap::new();
    let mut progress = Progress {
        total: todo.len(),
        done: 0,
        started: Instant::now(),
        run_walls: Vec::new(),
        estimate_per_run: exp.run.warmup_s + exp.run.duration_s + 4.0,
    };
    // CPU layout: the brokers' list is resolved against the CPUs this process may use before
    // the process pins itself (and the runtime threads it starts) to the load generator's.
    let available = affinity();
    let cpu_list = |v: &[usize]| {
        v.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let broker_cpus = match &exp.broker.cpus {
        Some(c) => Some(cpu_list(&resolve_cpus(c, &available)?)),
        None => None,
    };
    if let Some(c) = &exp.run.bench_cpus {
        let cpus = resolve_cpus(c, &available)?;
        pin_self(&cpus).with_context(|| format!("pinning the load generator to CPUs {cpus:?}"))?;
        eprintln!(
            "== load generator on CPUs {}, brokers on {}",
            cpu_list(&cpus),
            broker_cpus.as_deref().unwrap_or("all")
        );
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = exp.run.bench_threads {
        builder.worker_threads(n);
    }
    let rt = builder.enable_all().build()?;
    let mut failed = 0u32;
    for (brokers, cells) in &groups {
        let (bootstrap, local) = match &opts.target {
            Target::Bootstrap(b) => (b.clone(), None),
            Target::Local { shardlog, data_dir } => {
                match start_local(
                    shardlog,
                    data_dir,
                    out,
                    &exp,
                    *brokers,
                    broker_cpus.as_deref(),
                ) {
                    Ok(c) => (c.bootstrap.clone(), Some(c)),
                    Err(e) => {
                        let why = format!("the {brokers}-broker cluster did not start: {e:#}");
                        eprintln!("!! {why}");
                        skip_group(out, &exp, cells, &why, &mut skipped, &mut progress);
                        continue;
                    }
                }
            }
        };
        // The largest replication factor the group's cells need (a cluster without replication
        // refuses it).
        let top_rf = cells
            .iter()
            .map(|&i| exp.cells[i].key.replication_factor)
            .max()
            .unwrap_or(1);
        if top_rf > 1 {
            if let Err(e) = rt.block_on(probe_rf(&bootstrap, top_rf)) {
                let why = format!("{e:#}");
                eprintln!("!! {why}");
                skip_group(out, &exp, cells, &why, &mut skipped, &mut progress);
                if let Some(c) = local {
                    c.stop(Duration::from_secs(40));
                }
                continue;
            }
        }
        // A cluster that starts but cannot serve its cells (every run fails) is given up after
        // its first runs rather than timing out on every cell.
        let (mut group_ok, mut group_failed) = (0u32, 0u32);
        let mut last_error = String::new();
        let plan = schedule(out, &exp, cells);
        for (n, &(i, rep)) in plan.iter().enumerate() {
            let cell = &exp.cells[i];
            if group_ok == 0 && group_failed >= GIVE_UP_AFTER {
                let why = format!(
                    "the first {group_failed} runs on the {brokers}-broker cluster failed (last: {last_error})"
                );
                eprintln!("!! {why}: skipping the rest of its cells");
                let mut rest: Vec<usize> = Vec::new();
                for &(j, _) in &plan[n..] {
                    if !rest.contains(&j) {
                        rest.push(j);
                    }
                }
                skip_group(out, &exp, &rest, &why, &mut skipped, &mut progress);
                break;
            }
            let t0 = Instant::now();
            let r = run_rep(&rt, &exp, cell, rep, &bootstrap, opts.quiet, out);
            let wall = t0.elapsed().as_secs_f64();
            progress.done += 1;
            progress.run_walls.push(wall);
            session.runs += 1;
            let status = match &r {
                Ok(res) if res.workload.as_ref().is_some_and(|w| w.producers == 0) => {
                    group_ok += 1;
                    format!("consumed {:.1} MB/s", res.consume.mb_per_s)
                }
                Ok(res) => {
                    group_ok += 1;
                    format!(
                        "{:.1} MB/s, publish p99 {:.2} ms",
                        res.produce.mb_per_s, res.publish_latency.p99_ms
                    )
                }
                Err(e) => {
                    failed += 1;
                    group_failed += 1;
                    last_error = format!("{e:#}");
                    format!("FAILED: {e:#}")
                }
            };
            eprintln!(
                "[{}/{}] {} rep {rep}/{}: {status} | elapsed {}, about {} left",
                progress.done,
                progress.total,
                cell.key.label(),
                exp.run.repetitions,
                hms(progress.started.elapsed().as_secs_f64()),
                hms(progress.remaining_s())
            );
            if let Some(c) = &local {
                wait_for_deletions(&c.data_dir, Duration::from_secs(60));
            }
        }
        if let Some(c) = local {
            c.stop(Duration::from_secs(40));
        }
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    write_atomic(
        &out.join("skipped.json"),
        &serde_json::to_string_pretty(&skipped)?,
    )?;
    session.finished_unix_ms = now_ms();
    record_session(out, &session, Some(session_index))?;
    let report = crate::lab_report::write_report(out)?;
    eprintln!("wrote {}", report.display());
    if failed > 0 {
        bail!("{failed} run(s) failed (see raw/<cell>/rep-<n>.error); `tune` again retries them");
    }
    Ok(())
}

/// The order a cluster's unfinished runs go in: repetition by repetition across its cells
/// (rep 1 of every cell, then rep 2, ...), so that a machine whose load drifts during the
/// session (other work starting or stopping) shifts every cell's figures alike instead of
/// one cell's; cells whose rate is a share of another cell's max come after all the
/// closed-loop runs, so their rate is taken from every repetition of it.
pub fn schedule(out: &Path, exp: &Experiment, cells: &[usize]) -> Vec<(usize, u32)> {
    let mut plan = Vec::new();
    for relative in [false, true] {
        for rep in 1..=exp.run.repetitions {
            for &i in cells {
                let c = &exp.cells[i];
                if c.relative_rate.is_some() == relative
                    && !rep_path(out, &c.key.id(), rep).is_file()
                {
                    plan.push((i, rep));
                }
            }
        }
    }
    plan
}

fn skip_group(
    out: &Path,
    exp: &Experiment,
    cells: &[usize],
    why: &str,
    skipped: &mut BTreeMap<String, String>,
    progress: &mut Progress,
) {
    for &i in cells {
        let id = exp.cells[i].key.id();
        let left = (1..=exp.run.repetitions)
            .filter(|&r| !rep_path(out, &id, r).is_file())
            .count();
        progress.total = progress.total.saturating_sub(left);
        skipped.insert(id, why.to_string());
    }
}

fn run_rep(
    rt: &tokio::runtime::Runtime,
    exp: &Experiment,
    cell: &Cell,
    rep: u32,
    bootstrap: &str,
    quiet: bool,
    out: &Path,
) -> anyhow::Result<RunResult> {
    let id = cell.key.id();
    let dir = out.join("raw").join(&id);
    std::fs::create_dir_all(&dir)?;
    let mut workload = cell.workload.clone();
    if let Some(rel) = &cell.relative_rate {
        if let Err(e) = set_relative_rate(out, exp, rel, &mut workload) {
            let _ = std::fs::write(dir.join(format!("rep-{rep}.error")), format!("{e:#}\n"));
            return Err(e);
        }
    }
    // Cells are independent: every run's topics go away after it.
    workload.delete_topics = true;
    workload.topic_prefix = "lab".into();
    let variant = Variant {
        scenario: exp.name.clone(),
        name: id.clone(),
        workload,
    };
    let opts = RunOptions {
        bootstrap: bootstrap.to_string(),
        progress: !quiet,
        interval: Duration::from_secs(1),
        command: format!("shardlog-bench tune ({} rep {rep})", cell.key.label()),
    };
    let timeout = Duration::from_secs_f64(exp.run.cell_timeout_s);
    let err_path = dir.join(format!("rep-{rep}.error"));
    let r = rt.block_on(async { tokio::time::timeout(timeout, run(&variant, &opts)).await });
    let r = match r {
        Ok(Ok(x)) => Ok(x),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow::anyhow!(
            "timed out after {} s ([run] cell_timeout_s)",
            exp.run.cell_timeout_s
        )),
    };
    match r {
        Ok((mut result, hdr)) => {
            let stem = format!("rep-{rep}");
            result.files = vec![write_hlog(&dir, &stem, &result, &hdr)?];
            write_atomic(
                &rep_path(out, &id, rep),
                &serde_json::to_string_pretty(&result)?,
            )?;
            let _ = std::fs::remove_file(&err_path);
            Ok(result)
        }
        Err(e) => {
            let _ = std::fs::write(&err_path, format!("{e:#}\n"));
            Err(e)
        }
    }
}

/// Sets a rate given as a share of a closed-loop cell ("50%"): that share of the median produce
/// throughput over the reference cell's finished repetitions in this results folder.
fn set_relative_rate(
    out: &Path,
    exp: &Experiment,
    rel: &RelativeRate,
    workload: &mut Workload,
) -> anyhow::Result<()> {
    let reference = &exp.cells[rel.reference];
    let id = reference.key.id();
    let mut measured = Vec::new();
    for rep in 1..=exp.run.repetitions {
        let p = rep_path(out, &id, rep);
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let r: RunResult =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        measured.push(if rel.key == "rate_records_per_s" {
            r.produce.records_per_s
        } else {
            r.produce.mb_per_s
        });
    }
    anyhow::ensure!(
        !measured.is_empty(),
        "the rate is {:.0}% of {}, which has no finished run",
        rel.fraction * 100.0,
        reference.key.label()
    );
    let rate = crate::lab_report::median(&measured) * rel.fraction;
    anyhow::ensure!(
        rate > 0.0,
        "the rate is {:.0}% of {}, which measured 0",
        rel.fraction * 100.0,
        reference.key.label()
    );
    if rel.key == "rate_records_per_s" {
        workload.rate_records_per_s = Some(rate);
        workload.rate_mb_per_s = None;
    } else {
        workload.rate_mb_per_s = Some(rate);
        workload.rate_records_per_s = None;
    }
    Ok(())
}

/// The CPUs this process may run on, sorted.
fn affinity() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if ok != 0 {
        return (0..n).collect();
    }
    // SAFETY: CPU_ISSET reads the set within its size (CPU_SETSIZE).
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins this process (its threads started from now on inherit it) to `cpus`.
fn pin_self(cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        anyhow::ensure!(c < libc::CPU_SETSIZE as usize, "CPU {c} out of range");
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: a valid set of the size given.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// glommio registers its I/O memory and needs locked memory; raised here (best effort) so the
/// brokers this process starts inherit it, as `tests/run.sh` and the bench scripts do with
/// `ulimit -l unlimited`.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct; failure (no CAP_SYS_RESOURCE) is ignored.
    unsafe {
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::parse_experiment;

    const EXP: &str = r#"
        name = "t"
        [run]
        warmup_s = 0
        duration_s = 1
        repetitions = 2
        [matrix]
        acks = ["1", "all"]
        replication_factor = [1]
        flush = ["never"]
    "#;

    #[test]
    fn pending_skips_finished_repetitions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exp = parse_experiment(EXP, "t").expect("parse");
        assert_eq!(pending(dir.path(), &exp).len(), 4);
        let id = exp.cells[1].key.id();
        let p = rep_path(dir.path(), &id, 1);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        // A failed repetition or a half-written temporary file is not finished.
        std::fs::write(p.with_extension("error"), "x").expect("write");
        std::fs::write(p.with_extension("tmp"), "{").expect("write");
        assert_eq!(pending(dir.path(), &exp).len(), 4);
        write_atomic(&p, "{}").expect("write");
        let left = pending(dir.path(), &exp);
        assert_eq!(left, vec![(0, 1), (0, 2), (1, 2)]);
    }

    #[test]
    fn schedule_interleaves_repetitions_and_runs_shares_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exp = parse_experiment(
            r#"
            [run]
            repetitions = 2
            [matrix]
            acks = ["1", "all"]
            replication_factor = [1]
            flush = ["never"]
            rate_mb_per_s = ["max", "50%"]
            "#,
            "s",
        )
        .expect("parse");
        let all: Vec<usize> = (0..exp.cells.len()).collect();
        let label = |(i, rep): (usize, u32)| {
            let c = &exp.cells[i].key;
            format!("{}/{}/{rep}", c.acks, c.axes[0].label())
        };
        let plan: Vec<String> = schedule(dir.path(), &exp, &all)
            .into_iter()
            .map(label)
            .collect();
        assert_eq!(
            plan,
            [
                "1/rate_mb_per_s=max/1",
                "all/rate_mb_per_s=max/1",
                "1/rate_mb_per_s=max/2",
                "all/rate_mb_per_s=max/2",
                "1/rate_mb_per_s=50%/1",
                "all/rate_mb_per_s=50%/1",
                "1/rate_mb_per_s=50%/2",
                "all/rate_mb_per_s=50%/2",
            ]
        );
        // Finished repetitions are left out.
        let p = rep_path(dir.path(), &exp.cells[0].key.id(), 1);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        write_atomic(&p, "{}").expect("write");
        assert_eq!(schedule(dir.path(), &exp, &all).len(), 7);
    }

    #[test]
    fn resume_needs_the_same_experiment() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!prepare_out(dir.path(), EXP).expect("new"));
        // Same TOML, other formatting: resumes.
        let reformatted = EXP.replace("duration_s = 1", "duration_s=1   # same");
        assert!(prepare_out(dir.path(), &reformatted).expect("resume"));
        let other = EXP.replace("duration_s = 1", "duration_s = 2");
        let e = prepare_out(dir.path(), &other).expect_err("different");
        assert!(format!("{e:#}").contains("different experiment"), "{e:#}");
    }

    #[test]
    fn dates_and_durations() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_792), (2026, 12, 5));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(hms(59.6), "1:00");
        assert_eq!(hms(3725.0), "1:02:05");
        assert!(default_out("smoke")
            .to_string_lossy()
            .starts_with("tuning/results/smoke-20"));
    }
}
