//! The `shardlog` binary as a process: usage and configuration errors exit with code 2 and say
//! what is wrong. (Building this test also makes `cargo test` produce the binary that the
//! end-to-end suite runs.)

use std::process::Command;

fn shardlog() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
}

#[test]
fn help_lists_the_subcommands() {
    let out = shardlog().arg("--help").output().expect("run shardlog");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["start", "topic", "produce", "consume", "group", "check"] {
        assert!(text.contains(cmd), "--help does not mention {cmd}:\n{text}");
    }
}

#[test]
fn bad_listen_address_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = shardlog()
        .args(["start", "--listen", "not-an-address", "--data-dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run shardlog");
    assert_eq!(
        out.status.code(),
        Some(2),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
}
