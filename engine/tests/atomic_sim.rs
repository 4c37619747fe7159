//! Crash tests of the atomic control-file replacement (`engine::io::atomic`) on the simulated
//! disk: the replacement is stopped after each of its steps (tmp write, fsync, rename,
//! directory fsync) and the power is cut in every crash mode. A restart must find the old file
//! (or none, when there was none) or the new one, whole; once the replacement returned Ok, the
//! new one. The next replacement works over whatever tmp file the crash left.

use futures_lite::future::block_on;
use shardlog_engine::io::sim::{CrashMode, Faults};
use shardlog_engine::{SimStorage, Storage};
use std::path::Path;

/// The four steps of a replacement.
const STEPS: u64 = 4;

fn modes() -> Vec<CrashMode> {
    let mut m = vec![CrashMode::LoseUnsynced, CrashMode::KeepAll];
    m.extend((0..24).map(|seed| CrashMode::Torn { seed }));
    m
}

fn pattern(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag ^ (i as u8)).collect()
}

/// A disk whose directory `/d` is durable, holding `old` at `/d/f` when given.
fn disk_with(old: Option<&[u8]>) -> SimStorage {
    let disk = SimStorage::default();
    block_on(async {
        disk.create_dir_all(Path::new("/d")).await.expect("mkdir");
        disk.sync_dir(Path::new("/")).await.expect("sync /");
        if let Some(old) = old {
            disk.write_file_atomic(Path::new("/d/f"), old)
                .await
                .expect("write old");
        }
    });
    disk
}

#[test]
fn a_crash_after_any_step_leaves_the_old_or_the_new_file() {
    let path = Path::new("/d/f");
    let new = pattern(0xa5, 5000);
    let old_data = pattern(0x3c, 3000);
    for old in [None, Some(old_data.as_slice())] {
        for allowed in 0..=STEPS {
            for mode in modes() {
                let disk = disk_with(old);
                disk.set_faults(Faults {
                    eio_control_step_after: Some(allowed),
                    ..Faults::default()
                });
                let r = block_on(disk.write_file_atomic(path, &new));
                assert_eq!(
                    r.is_ok(),
                    allowed == STEPS,
                    "stopped after {allowed} steps: {r:?}"
                );
                let after = disk.crash(mode);
                let found = block_on(after.read_file(path)).expect("read");
                let case = format!("old {}, {allowed} steps, {mode:?}", old.is_some());
                match &found {
                    Some(f) if *f == new => {}
                    Some(f) => assert_eq!(Some(f.as_slice()), old, "torn or stale file: {case}"),
                    None => assert!(old.is_none(), "the old file vanished: {case}"),
                }
                if r.is_ok() {
                    assert_eq!(
                        found.as_deref(),
                        Some(new.as_slice()),
                        "acknowledged but lost: {case}"
                    );
                }
                // Whatever tmp file the crash left, the next replacement succeeds.
                let newer = pattern(0x0f, 100);
                block_on(after.write_file_atomic(path, &newer)).expect("rewrite");
                let again = after.crash(CrashMode::LoseUnsynced);
                assert_eq!(
                    block_on(again.read_file(path)).expect("read").as_deref(),
                    Some(newer.as_slice()),
                    "rewrite after crash: {case}"
                );
            }
        }
    }
}

#[test]
fn a_failed_step_reports_its_name_and_file() {
    let disk = disk_with(Some(b"old"));
    disk.set_faults(Faults {
        eio_control_step_after: Some(2),
        ..Faults::default()
    });
    let e = block_on(disk.write_file_atomic(Path::new("/d/f"), b"new")).expect_err("rename fails");
    assert!(e.to_string().starts_with("rename /d/f"), "{e}");
    // Live readers still see the old file: the rename never happened.
    assert_eq!(
        block_on(disk.read_file(Path::new("/d/f")))
            .expect("read")
            .as_deref(),
        Some(&b"old"[..])
    );
}
