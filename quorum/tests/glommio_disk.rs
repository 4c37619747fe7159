//! The quorum store and node on a real file system: glommio O_DIRECT files and io_uring, the
//! back end the broker uses (alignment, partial-block rewrites, atomic snapshot replacement).

#![allow(clippy::field_reassign_with_default)]

use std::path::PathBuf;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use shardlog_engine::GlommioStorage;
use shardlog_quorum::{bootstrap_conf, QuorumConfig, QuorumNode, RaftStore, StateMachine};

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .spawn(move || async move { f().await })
        .expect("glommio executor (needs RLIMIT_MEMLOCK >= 512 KiB)");
    ex.join().expect("executor");
}

#[derive(Default)]
struct Log(Vec<Vec<u8>>);

impl StateMachine for Log {
    fn apply(&mut self, _index: u64, data: &[u8]) {
        self.0.push(data.to_vec());
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for d in &self.0 {
            out.extend_from_slice(&(d.len() as u32).to_le_bytes());
            out.extend_from_slice(d);
        }
        out
    }
    fn restore(&mut self, _index: u64, mut data: &[u8]) -> Result<(), String> {
        self.0.clear();
        while data.len() >= 4 {
            let n = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
            let d = data.get(4..4 + n).ok_or("short snapshot")?;
            self.0.push(d.to_vec());
            data = &data[4 + n..];
        }
        Ok(())
    }
}

fn payload(i: usize) -> Vec<u8> {
    // Sizes that end records anywhere inside a block, and some that span blocks.
    vec![(i % 251) as u8; 1 + (i * 997) % 9000]
}

#[test]
fn node_commits_snapshots_and_restarts_on_real_disk() {
    let tmp = tempfile::Builder::new()
        .prefix("shardlog-quorum-")
        .tempdir()
        .expect("tempdir");
    let dir: PathBuf = tmp.path().join("quorum");
    let mut cfg = QuorumConfig::new(1);
    cfg.snapshot_every = 16;
    let (d, c) = (dir.clone(), cfg.clone());
    run(move || async move {
        GlommioStorage::prepare(&d)
            .await
            .expect("direct I/O works here");
        let (mut n, report) = QuorumNode::open(
            GlommioStorage,
            &d,
            c,
            bootstrap_conf(&[1], &[]),
            Log::default(),
        )
        .await
        .expect("open");
        assert!(report.created);
        n.campaign().unwrap();
        while n.has_ready() {
            n.ready().await.unwrap();
        }
        assert!(n.is_leader());
        for i in 0..40 {
            let p = n.propose(payload(i)).unwrap();
            let out = n.ready().await.unwrap();
            assert_eq!(out.committed.last().map(|c| c.index), Some(p.index));
        }
        assert_eq!(n.state_machine().0.len(), 40);
        assert!(n.store().snapshot_metadata().index >= 32);
    });
    run(move || async move {
        GlommioStorage::prepare(&dir)
            .await
            .expect("direct I/O works here");
        let (mut n, report) = QuorumNode::open(
            GlommioStorage,
            &dir,
            cfg,
            bootstrap_conf(&[1], &[]),
            Log::default(),
        )
        .await
        .expect("reopen");
        assert!(!report.created);
        assert_eq!(report.truncated_bytes, 0, "a clean file has no torn tail");
        for _ in 0..50 {
            n.tick();
            while n.has_ready() {
                n.ready().await.unwrap();
            }
        }
        assert!(n.is_leader());
        let want: Vec<Vec<u8>> = (0..40).map(payload).collect();
        assert_eq!(n.state_machine().0, want);
        // Exactly one log generation and the snapshot are left in the directory.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".shardlog-io-probe"))
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names[0].starts_with("log-") && names[1] == "snapshot",
            "{names:?}"
        );
    });
}

#[test]
fn store_recovers_a_torn_tail_on_real_disk() {
    let tmp = tempfile::Builder::new()
        .prefix("shardlog-quorum-")
        .tempdir()
        .expect("tempdir");
    let dir: PathBuf = tmp.path().join("quorum");
    let d = dir.clone();
    run(move || async move {
        GlommioStorage::prepare(&d)
            .await
            .expect("direct I/O works here");
        let (mut s, _) = RaftStore::open(GlommioStorage, &d, bootstrap_conf(&[1], &[]))
            .await
            .expect("open");
        let mut es = Vec::new();
        for i in 1..=20u64 {
            let mut e = raft::prelude::Entry::default();
            e.index = i;
            e.term = 1;
            e.data = Bytes::from(payload(i as usize));
            es.push(e);
        }
        for chunk in es.chunks(3) {
            s.append(chunk, None, true).await.unwrap();
        }
    });
    // Tear the file: cut it in the middle of the last record, then append garbage.
    let log = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .unwrap();
    let bytes = std::fs::read(&log).unwrap();
    let end = bytes.len() - bytes.iter().rev().take_while(|b| **b == 0).count();
    let mut torn = bytes[..end - 100].to_vec();
    torn.extend_from_slice(&[0xab; 300]);
    std::fs::write(&log, &torn).unwrap();
    run(move || async move {
        GlommioStorage::prepare(&dir)
            .await
            .expect("direct I/O works here");
        let (s, report) = RaftStore::open(GlommioStorage, &dir, bootstrap_conf(&[1], &[]))
            .await
            .expect("reopen");
        assert_eq!(report.last_index, 19, "{report:?}");
        assert!(report.truncated_bytes > 0);
        use raft::Storage as _;
        let got = s
            .entries(1, 20, None, raft::GetEntriesContext::empty(false))
            .unwrap();
        for (i, e) in got.iter().enumerate() {
            assert_eq!(&e.data[..], &payload(i + 1)[..]);
        }
        assert_eq!(
            std::fs::metadata(dir.join(log.file_name().unwrap()))
                .unwrap()
                .len(),
            s.log_bytes()
        );
    });
}
