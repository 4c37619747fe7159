//! `shardlog dev cluster`: a local multi-broker cluster for experiments and tests.
//!
//! One `shardlog start` process per broker, so that any one of them can be killed, stopped or
//! restarted on its own, with node ids `1..=N`, every broker a controller voter, each with its
//! own data directory `DIR/broker-<i>` and log file `DIR/broker-<i>/shardlog.log`. Ports follow
//! the scheme the e2e fixture uses too: broker `i` with base port `B` listens for Kafka on
//! `B + 10*(i-1)`, for the controller on `+1` and for admin HTTP on `+2`.
//!
//! This process is only a supervisor: it prints the brokers (id, addresses, PID), writes the
//! same to `DIR/cluster.json`, reports a broker that exits (it is not restarted: a dev cluster
//! is for watching failures, not hiding them), and on SIGTERM/SIGINT sends SIGTERM to every
//! broker, waits a grace period and SIGKILLs what is left. The brokers run in their own
//! process group (a Ctrl-C on the terminal reaches only the supervisor, which then shuts them
//! down in order) and get SIGTERM from the kernel if the supervisor itself dies.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::json;

use crate::error::{CliError, CliResult};
use crate::output::Table;

/// The most brokers a dev cluster starts (each is a process with its own shards).
pub const MAX_BROKERS: u16 = 64;
/// Port offsets of one broker within its block of ten.
const KAFKA_OFFSET: u16 = 0;
const CONTROLLER_OFFSET: u16 = 1;
const ADMIN_OFFSET: u16 = 2;
const PORTS_PER_BROKER: u16 = 10;
/// How long the supervisor waits for every broker's Kafka listener before saying so.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the supervisor looks at its children when no signal arrives.
const POLL: Duration = Duration::from_millis(200);

#[derive(Subcommand, Debug)]
pub enum DevAction {
    /// Run a local cluster of N broker processes until SIGTERM/SIGINT.
    Cluster(ClusterArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Number of brokers (node ids 1..=N, every one a controller voter).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=MAX_BROKERS as i64))]
    pub brokers: u16,
    /// Parent directory: broker i keeps its data and its log file in DIR/broker-<i>, and
    /// DIR/cluster.json lists the brokers.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Broker i listens on B+10*(i-1) (Kafka), +1 (controller), +2 (admin HTTP).
    #[arg(long, value_name = "B", default_value_t = 9092)]
    pub base_port: u16,
    /// The shardlog binary to run (default: this one).
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Host every listener binds to and advertises.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Shards (cores) per broker.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cores: usize,
    /// Seconds between SIGTERM and SIGKILL at shutdown.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub grace_secs: u64,
    /// Further arguments for every `shardlog start` (after `--`).
    #[arg(last = true, value_name = "START_ARGS")]
    pub start_args: Vec<String>,
}

/// One broker of the plan: its addresses, directory and command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPlan {
    pub id: i32,
    pub kafka: String,
    pub controller: String,
    pub admin: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Arguments after the binary.
    pub args: Vec<String>,
}

/// Addresses, directories and command lines of the brokers of `a` (no I/O).
pub fn plan(a: &ClusterArgs) -> CliResult<Vec<BrokerPlan>> {
    if a.brokers == 0 || a.brokers > MAX_BROKERS {
        return Err(CliError::Usage(format!(
            "--brokers must be 1..={MAX_BROKERS}, got {}",
            a.brokers
        )));
    }
    if a.cores == 0 {
        return Err(CliError::Usage("--cores must be at least 1".into()));
    }
    let last = u32::from(a.base_port)
        + u32::from(PORTS_PER_BROKER) * (u32::from(a.brokers) - 1)
        + u32::from(ADMIN_OFFSET);
    if a.base_port == 0 || last > u32::from(u16::MAX) {
        return Err(CliError::Usage(format!(
            "--base-port {} with {} brokers needs ports up to {last}, beyond 65535 (or 0)",
            a.base_port, a.brokers
        )));
    }
    if a.host.is_empty() || a.host.contains([',', '@', ' ']) {
        return Err(CliError::Usage(format!("bad --host {:?}", a.host)));
    }
    // An IPv6 literal needs brackets in HOST:PORT.
    let host = if a.host.contains(':') && !a.host.starts_with('[') {
        format!("[{}]", a.host)
    } else {
        a.host.clone()
    };
    let port = |i: u16, off: u16| a.base_port + PORTS_PER_BROKER * (i - 1) + off;
    let voters = (1..=a.brokers)
        .map(|i| format!("{i}@{host}:{}", port(i, CONTROLLER_OFFSET)))
        .collect::<Vec<_>>()
        .join(",");
    Ok((1..=a.brokers)
        .map(|i| {
            let kafka = format!("{host}:{}", port(i, KAFKA_OFFSET));
            let controller = format!("{host}:{}", port(i, CONTROLLER_OFFSET));
            let admin = format!("{host}:{}", port(i, ADMIN_OFFSET));
            let data_dir = a.data_dir.join(format!("broker-{i}"));
            let log = data_dir.join("shardlog.log");
            let mut args: Vec<String> = vec![
                "start".into(),
                "--node-id".into(),
                i.to_string(),
                "--listen".into(),
                kafka.clone(),
                "--controller-listen".into(),
                controller.clone(),
                "--voters".into(),
                voters.clone(),
                "--admin-listen".into(),
                admin.clone(),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--cores".into(),
                a.cores.to_string(),
            ];
            args.extend(a.start_args.iter().cloned());
            BrokerPlan {
                id: i32::from(i),
                kafka,
                controller,
                admin,
                data_dir,
                log,
                args,
            }
        })
        .collect())
}

/// The `--voters` value every broker of the plan gets.
pub fn voters(plan: &[BrokerPlan]) -> String {
    plan.iter()
        .map(|b| format!("{}@{}", b.id, b.controller))
        .collect::<Vec<_>>()
        .join(",")
}

/// The document written to `DIR/cluster.json`.
pub fn cluster_json(plan: &[BrokerPlan], pids: &[u32], supervisor_pid: u32) -> serde_json::Value {
    json!({
        "supervisor_pid": supervisor_pid,
        "bootstrap": plan.iter().map(|b| b.kafka.as_str()).collect::<Vec<_>>().join(","),
        "voters": voters(plan),
        "brokers": plan.iter().zip(pids).map(|(b, pid)| json!({
            "id": b.id,
            "kafka": b.kafka,
            "controller": b.controller,
            "admin": b.admin,
            "pid": pid,
            "data_dir": b.data_dir.display().to_string(),
            "log": b.log.display().to_string(),
        })).collect::<Vec<_>>(),
    })
}

/// The table printed at start.
pub fn cluster_table(plan: &[BrokerPlan], pids: &[u32]) -> String {
    let mut t = Table::new(&["BROKER", "KAFKA", "CONTROLLER", "ADMIN", "PID", "LOG"]);
    for (b, pid) in plan.iter().zip(pids) {
        t.row(vec![
            b.id.to_string(),
            b.kafka.clone(),
            b.controller.clone(),
            b.admin.clone(),
            pid.to_string(),
            b.log.display().to_string(),
        ]);
    }
    t.render()
}

/// How a child ended, in words.
pub fn describe_exit(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// The ports of the plan that something already listens on or that cannot be bound.
fn busy_ports(plan: &[BrokerPlan]) -> Vec<String> {
    plan.iter()
        .flat_map(|b| [&b.kafka, &b.controller, &b.admin])
        .filter(|addr| std::net::TcpListener::bind(addr.as_str()).is_err())
        .cloned()
        .collect()
}

/// Signals the supervisor waits for.
fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// Waits at most `timeout` for one of the signals of `set` (blocked in this thread).
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<libc::c_int> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `set` is an initialised sigset; a null siginfo pointer is allowed.
    let r = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (r > 0).then_some(r)
}

/// One running broker.
struct Running {
    plan: BrokerPlan,
    child: Child,
    exited: Option<ExitStatus>,
    ready: bool,
}

fn spawn(bin: &Path, b: &BrokerPlan) -> CliResult<Child> {
    std::fs::create_dir_all(&b.data_dir)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", b.data_dir.display())))?;
    let log: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&b.log)
        .map_err(|e| CliError::Failed(format!("cannot open {}: {e}", b.log.display())))?;
    let err = log
        .try_clone()
        .map_err(|e| CliError::Failed(format!("cannot open {}: {e}", b.log.display())))?;
    let mut cmd = Command::new(bin);
    cmd.args(&b.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec: the broker must not inherit
    // the supervisor's blocked signals (the mask survives exec), and it gets SIGTERM if the
    // supervisor dies without stopping it.
    unsafe {
        cmd.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| {
        CliError::Failed(format!(
            "cannot start broker {} ({}): {e}",
            b.id,
            bin.display()
        ))
    })
}

fn kill(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn listening(addr: &str) -> bool {
    let Ok(mut addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs.any(|a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_millis(100)).is_ok())
}

/// Reaps the children that exited; reports each once (`stopping`: after our SIGTERM).
fn reap(brokers: &mut [Running], stopping: bool) {
    for r in brokers.iter_mut().filter(|r| r.exited.is_none()) {
        if let Ok(Some(st)) = r.child.try_wait() {
            r.exited = Some(st);
            if stopping {
                println!(
                    "broker {} (pid {}) stopped: {}",
                    r.plan.id,
                    r.child.id(),
                    describe_exit(st)
                );
            } else {
                println!(
                    "broker {} (pid {}) exited: {} (not restarted; log {})",
                    r.plan.id,
                    r.child.id(),
                    describe_exit(st),
                    r.plan.log.display()
                );
            }
        }
    }
}

/// SIGTERM to every running broker, SIGKILL after the grace period (or a second signal).
/// True when every broker exited 0 after its SIGTERM.
fn shut_down(brokers: &mut [Running], set: &libc::sigset_t, grace: Duration) -> bool {
    let stopping: Vec<usize> = (0..brokers.len())
        .filter(|&i| brokers[i].exited.is_none())
        .collect();
    for &i in &stopping {
        kill(&brokers[i].child, libc::SIGTERM);
    }
    println!(
        "stopping {} broker(s): SIGTERM sent, SIGKILL after {}s",
        stopping.len(),
        grace.as_secs()
    );
    let deadline = Instant::now() + grace;
    let mut forced = false;
    loop {
        reap(brokers, true);
        if brokers.iter().all(|r| r.exited.is_some()) {
            break;
        }
        let now = Instant::now();
        let sig = if now < deadline {
            wait_signal(set, POLL.min(deadline - now))
        } else {
            None
        };
        let second = matches!(sig, Some(s) if s == libc::SIGTERM || s == libc::SIGINT);
        if second || Instant::now() >= deadline {
            for r in brokers.iter_mut().filter(|r| r.exited.is_none()) {
                println!(
                    "broker {} (pid {}) still running{}: SIGKILL",
                    r.plan.id,
                    r.child.id(),
                    if second {
                        " after a second signal"
                    } else {
                        " after the grace period"
                    }
                );
                kill(&r.child, libc::SIGKILL);
                if let Ok(st) = r.child.wait() {
                    r.exited = Some(st);
                }
            }
            forced = true;
            break;
        }
    }
    !forced
        && stopping
            .iter()
            .all(|&i| brokers[i].exited.is_some_and(|s| s.success()))
}

/// Runs the cluster until a signal; the exit status is 0 when it was stopped by a signal and
/// every broker exited cleanly, 1 otherwise.
pub fn run_cluster(a: &ClusterArgs) -> CliResult {
    let plan = plan(a)?;
    let bin = match &a.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .map_err(|e| CliError::Failed(format!("cannot find this binary: {e}")))?,
    };
    let busy = busy_ports(&plan);
    if !busy.is_empty() {
        return Err(CliError::Usage(format!(
            "ports in use: {} (choose another --base-port)",
            busy.join(", ")
        )));
    }
    std::fs::create_dir_all(&a.data_dir)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", a.data_dir.display())))?;
    // Blocked before any child exists, so that a signal arriving while they start is waited
    // for below instead of killing the supervisor and orphaning them.
    let set = signal_set();
    // SAFETY: changes only this thread's mask (the CLI's runtime threads are not running here).
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let mut brokers: Vec<Running> = Vec::with_capacity(plan.len());
    for b in &plan {
        match spawn(&bin, b) {
            Ok(child) => brokers.push(Running {
                plan: b.clone(),
                child,
                exited: None,
                ready: false,
            }),
            Err(e) => {
                eprintln!("shardlog: {e}");
                shut_down(&mut brokers, &set, Duration::from_secs(a.grace_secs));
                return Err(e);
            }
        }
    }
    let pids: Vec<u32> = brokers.iter().map(|r| r.child.id()).collect();
    let doc = cluster_json(&plan, &pids, std::process::id());
    let json_path = a.data_dir.join("cluster.json");
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    if let Err(e) = write_atomic(&json_path, &text) {
        eprintln!("shardlog: cannot write {}: {e}", json_path.display());
    }
    print!("{}", cluster_table(&plan, &pids));
    println!(
        "bootstrap: {}\nwritten to {}; SIGTERM or Ctrl-C stops the cluster",
        doc["bootstrap"].as_str().unwrap_or_default(),
        json_path.display()
    );

    let started = Instant::now();
    let mut said_ready = false;
    let mut said_slow = false;
    let stopped_by_signal = loop {
        reap(&mut brokers, false);
        if brokers.iter().all(|r| r.exited.is_some()) {
            println!("every broker has exited");
            break false;
        }
        for r in brokers
            .iter_mut()
            .filter(|r| !r.ready && r.exited.is_none())
        {
            if listening(&r.plan.kafka) {
                r.ready = true;
                println!("broker {} listening on {}", r.plan.id, r.plan.kafka);
            }
        }
        if !said_ready && brokers.iter().all(|r| r.ready) {
            said_ready = true;
            println!("cluster ready ({:.1}s)", started.elapsed().as_secs_f64());
        }
        if !said_ready && !said_slow && started.elapsed() > READY_TIMEOUT {
            said_slow = true;
            for r in brokers.iter().filter(|r| !r.ready && r.exited.is_none()) {
                println!(
                    "broker {} not listening on {} after {}s (see {})",
                    r.plan.id,
                    r.plan.kafka,
                    READY_TIMEOUT.as_secs(),
                    r.plan.log.display()
                );
            }
        }
        match wait_signal(&set, POLL) {
            Some(s) if s == libc::SIGTERM || s == libc::SIGINT => {
                println!("signal {s}: stopping the cluster");
                break true;
            }
            _ => {}
        }
    };
    let clean = shut_down(&mut brokers, &set, Duration::from_secs(a.grace_secs));
    println!("cluster stopped");
    if stopped_by_signal && clean {
        Ok(())
    } else {
        Err(CliError::Failed(
            "not every broker ran until the cluster was stopped and exited cleanly".into(),
        ))
    }
}

/// Runs one `dev` command.
pub fn run(action: &DevAction) -> CliResult {
    match action {
        DevAction::Cluster(a) => run_cluster(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(n: u16, base: u16) -> ClusterArgs {
        ClusterArgs {
            brokers: n,
            data_dir: PathBuf::from("/d"),
            base_port: base,
            bin: None,
            host: "127.0.0.1".into(),
            cores: 1,
            grace_secs: 30,
            start_args: vec!["--log-level".into(), "debug".into()],
        }
    }

    #[test]
    fn ports_ids_dirs_and_command_lines_follow_the_scheme() {
        let p = plan(&args(3, 20000)).expect("plan");
        assert_eq!(p.len(), 3);
        let v = "1@127.0.0.1:20001,2@127.0.0.1:20011,3@127.0.0.1:20021";
        assert_eq!(voters(&p), v);
        let b = &p[1];
        assert_eq!(b.id, 2);
        assert_eq!(b.kafka, "127.0.0.1:20010");
        assert_eq!(b.controller, "127.0.0.1:20011");
        assert_eq!(b.admin, "127.0.0.1:20012");
        assert_eq!(b.data_dir, PathBuf::from("/d/broker-2"));
        assert_eq!(b.log, PathBuf::from("/d/broker-2/shardlog.log"));
        assert_eq!(
            b.args,
            [
                "start",
                "--node-id",
                "2",
                "--listen",
                "127.0.0.1:20010",
                "--controller-listen",
                "127.0.0.1:20011",
                "--voters",
                v,
                "--admin-listen",
                "127.0.0.1:20012",
                "--data-dir",
                "/d/broker-2",
                "--cores",
                "1",
                "--log-level",
                "debug"
            ]
        );
        let doc = cluster_json(&p, &[10, 11, 12], 9);
        assert_eq!(
            doc["bootstrap"],
            "127.0.0.1:20000,127.0.0.1:20010,127.0.0.1:20020"
        );
        assert_eq!(doc["brokers"][2]["pid"], 12);
        assert_eq!(doc["brokers"][2]["controller"], "127.0.0.1:20021");
        assert_eq!(doc["supervisor_pid"], 9);
        let t = cluster_table(&p, &[10, 11, 12]);
        assert_eq!(t.lines().count(), 4, "{t}");
        assert!(
            t.lines()
                .nth(3)
                .is_some_and(|l| l.starts_with("3 ") && l.contains(" 12 ")),
            "{t}"
        );
    }

    #[test]
    fn impossible_plans_are_usage_errors() {
        // The last broker's admin port would be 65535 + 1.
        let e = plan(&args(2, 65524)).expect_err("past 65535");
        assert_eq!(e.exit_code(), 2);
        assert!(plan(&args(2, 65523)).is_ok());
        assert!(plan(&args(0, 9092)).is_err());
        assert!(plan(&args(MAX_BROKERS + 1, 1000)).is_err());
        assert!(plan(&args(1, 0)).is_err());
        let mut a = args(1, 9092);
        a.host = "a,b".into();
        assert!(plan(&a).is_err());
        a.host = "::1".into();
        assert_eq!(plan(&a).expect("v6")[0].kafka, "[::1]:9092");
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(describe_exit(ExitStatus::from_raw(0)), "exit status 0");
        assert_eq!(describe_exit(ExitStatus::from_raw(1 << 8)), "exit status 1");
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "killed by signal 9");
    }
}
