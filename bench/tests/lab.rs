//! The tuning lab end to end against a real `shardlog` (path in `SHARDLOG_BIN`): a two-cell
//! experiment (RF=1 and RF=3) runs, the RF=3 cell, whose cluster cannot start (a port is
//! taken), is skipped with the reason (never faked), the report is written; then one repetition is removed and `tune` again reruns only
//! that one.
//!
//! Skipped, with a message, only when `SHARDLOG_BIN` is not set.

use std::path::PathBuf;

use shardlog_bench::lab::{rep_path, tune, Session, Target, TuneOptions};
use shardlog_bench::lab_report::Summary;
use shardlog_bench::report::RunResult;

fn free_base_port() -> u16 {
    // A block of 30 ports (three brokers) starting at a port nobody listens on.
    for _ in 0..50 {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if (1024..65_000).contains(&p) {
            let all_free =
                (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + 10 * i)).is_ok());
            if all_free {
                return p;
            }
        }
    }
    panic!("no free port block");
}

fn read<T: serde::de::DeserializeOwned>(p: PathBuf) -> T {
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn tune_runs_skips_reports_and_resumes() {
    let Some(bin) = std::env::var_os("SHARDLOG_BIN").map(PathBuf::from) else {
        eprintln!(
            "SKIPPED: set SHARDLOG_BIN=/path/to/shardlog to run the tuning lab end-to-end test"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The brokers' data must support O_DIRECT (not tmpfs): under the target directory.
    let data = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("data dir");
    let port = free_base_port();
    let exp_path = dir.path().join("e2e.toml");
    std::fs::write(
        &exp_path,
        format!(
            r#"
name = "e2e"
[run]
warmup_s = 0.5
duration_s = 1
repetitions = 2
cell_timeout_s = 30
[matrix]
acks = ["all"]
replication_factor = [1, 3]
flush = ["every-batch"]
min_insync_replicas = [1]
[workload]
consumers = 1
rate_mb_per_s = 2.0
drain_s = 1
[broker]
base_port = {port}
[limits]
iperf3_s = 0
fio_mb = 0
"#
        ),
    )
    .expect("write experiment");
    // Broker 2's port is taken, so the 3-broker cluster cannot start whatever this build can
    // do: its cell must be skipped with the reason, never faked.
    let _busy = std::net::TcpListener::bind(("127.0.0.1", port + 10)).expect("hold a port");
    let out = dir.path().join("out");
    let opts = TuneOptions {
        experiment: exp_path,
        out: out.clone(),
        target: Target::Local {
            shardlog: bin,
            data_dir: data.path().to_path_buf(),
        },
        quiet: true,
    };
    tune(&opts).expect("tune");

    let rf1 = "acks-all_rf-1_flush-every-batch_isr-1";
    let rf3 = "acks-all_rf-3_flush-every-batch_isr-1";
    let first: RunResult = read(rep_path(&out, rf1, 1));
    let second: RunResult = read(rep_path(&out, rf1, 2));
    for r in [&first, &second] {
        assert!(r.produce.records > 0, "{}", r.variant);
        assert!(r.broker_check.consistent);
        assert_eq!(
            r.workload
                .as_ref()
                .map(|w| w.topic_configs["flush.messages"].as_str()),
            Some("1")
        );
    }
    assert!(out.join("raw").join(rf1).join("rep-1.hlog").is_file());
    let summary: Summary = read(out.join("summary.json"));
    let c3 = summary
        .cells
        .iter()
        .find(|c| c.id == rf3)
        .expect("rf3 cell");
    assert!(c3.reps.is_empty(), "{c3:?}");
    assert!(c3.skipped.contains("did not start"), "{c3:?}");
    assert!(!rep_path(&out, rf3, 1).exists());
    let report = std::fs::read_to_string(out.join("REPORT.md")).expect("report");
    assert!(
        report.contains(
            "| acks=all rf=1 flush=every-batch min.isr=1 | 2 of 2 | 0 | ok | yes | yes | yes | yes |"
        ),
        "{report}"
    );
    assert!(report.contains("not measured: [limits] iperf3_s = 0"));

    // Resume: only the missing repetition runs again.
    std::fs::remove_file(rep_path(&out, rf1, 2)).expect("remove rep 2");
    tune(&opts).expect("tune again");
    let again: RunResult = read(rep_path(&out, rf1, 1));
    assert_eq!(
        again.started_unix_ms, first.started_unix_ms,
        "rep 1 was not rerun"
    );
    let redone: RunResult = read(rep_path(&out, rf1, 2));
    assert!(redone.started_unix_ms > second.started_unix_ms);
    let sessions: Vec<Session> = read(out.join("sessions.json"));
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].runs, 2);
    assert_eq!(sessions[1].runs, 1);
    assert!(sessions[1].finished_unix_ms >= sessions[1].started_unix_ms);

    // Another experiment in the same folder is refused.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&opts.experiment)
            .expect("read")
            .replace("repetitions = 2", "repetitions = 3"),
    )
    .expect("write");
    let e = tune(&TuneOptions {
        experiment: other,
        ..opts.clone()
    })
    .expect_err("different experiment");
    assert!(format!("{e:#}").contains("different experiment"));
}
