//! Broker configuration from untrusted text: a TOML file and `SHARDLOG_*` variables through
//! `BrokerConfig::from_sources` (the body of `load`, without the file system). The input is the
//! file's text, then NUL-separated `NAME=VALUE` variables.
//!
//! Checked: loading returns a config or a typed error, never a panic; a loaded config survives
//! validation again unchanged and round-trips through its TOML form; and a variable only ever
//! changes the key it names.
#![no_main]
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use shardlog_server::config::{BrokerConfig, Host, Overrides};

/// A resolver without DNS: literal addresses and `localhost` only.
fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    match s.rsplit_once(':') {
        Some(("localhost", port)) => port
            .parse()
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
            .map_err(|e| format!("bad port: {e}")),
        _ => Err("not a literal address (no DNS while fuzzing)".into()),
    }
}

/// A fixed machine: 4 usable cores, no DNS.
const HOST: Host = Host {
    available_cores: 4,
    resolve,
};

fn load(text: &str, env: &[(String, String)]) -> Option<BrokerConfig> {
    let file = Some((Path::new("fuzz.toml"), text));
    BrokerConfig::from_sources(file, env.iter().cloned(), &Overrides::default(), &HOST).ok()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let file = parts.next().unwrap_or_default();
    let env: Vec<(String, String)> = parts
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    let Some(cfg) = load(file, &env) else { return };
    let table = cfg.as_table();

    let mut again = cfg.clone();
    again
        .validate_with(&HOST)
        .expect("a loaded config validates again");
    assert_eq!(again.as_table(), table, "validation is idempotent");

    let written = toml::to_string(&table).expect("a config serialises");
    let reread = load(&written, &[]).expect("a written config loads");
    assert_eq!(
        reread.as_table(),
        table,
        "round trip through TOML:\n{written}"
    );

    // Variables override only the keys they name.
    let Some(base) = load(file, &[]) else {
        return; // the variables repaired an invalid file
    };
    let named: Vec<String> = env
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("SHARDLOG_"))
        .map(str::to_ascii_lowercase)
        .collect();
    let before = base.as_table();
    for (key, value) in &table {
        if before.get(key) != Some(value) {
            assert!(
                named.contains(key),
                "{key} changed without SHARDLOG_{}",
                key.to_uppercase()
            );
        }
    }
    for key in before.keys() {
        assert!(
            table.contains_key(key) || named.contains(key),
            "{key} was dropped"
        );
    }
});
