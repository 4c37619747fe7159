//! Where the CLI finds the cluster: `--brokers`, a named profile, `SHARDLOG_BROKERS`, or the
//! built-in `127.0.0.1:9092`.
//!
//! Typing `--brokers` on every command is what people stop doing first, so (like rpk) the
//! broker list can come from the environment or from a profile file with named clusters:
//!
//! ```toml
//! # ~/.config/shardlog/cli.toml
//! current_profile = "prod"
//!
//! [profiles.prod]
//! brokers = "10.0.0.1:9092,10.0.0.2:9092"
//!
//! [profiles.local]
//! brokers = "127.0.0.1:9092"
//! ```
//!
//! Precedence, highest first: flags, then the environment, then the file. That is `--brokers`,
//! `--profile NAME`, `$SHARDLOG_BROKERS`, `$SHARDLOG_PROFILE`, the file's `current_profile`
//! (else a profile named `default`), and last `127.0.0.1:9092`. The file is
//! `$SHARDLOG_CLI_CONFIG`, else `$XDG_CONFIG_HOME/shardlog/cli.toml`, else
//! `$HOME/.config/shardlog/cli.toml`; it is read only when no broker list was given by a flag or
//! `SHARDLOG_BROKERS`. Every error about the cluster names where its address came from, so a
//! stale variable or profile is easy to spot.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult};

// The CLI's variables are named by the broker's configuration (the lower layer), which
// must know them to leave them alone: `SHARDLOG_<KEY>` configures `shardlog start`.
pub use shardlog_server::config::{CLI_ENV_VARS, ENV_BROKERS, ENV_CONFIG, ENV_PROFILE};
/// The address used when nothing else names one.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// The profile file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    /// The profile used when neither `--profile` nor `SHARDLOG_PROFILE` names one.
    current_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// One named cluster.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    /// Bootstrap brokers, comma-separated.
    brokers: String,
}

/// Where the broker list came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--brokers`.
    Flag,
    /// `SHARDLOG_BROKERS`.
    Env,
    /// A profile of the file, and what selected it.
    Profile {
        name: String,
        path: PathBuf,
        selected_by: &'static str,
    },
    /// Nothing named a cluster.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => write!(f, "from --brokers"),
            Source::Env => write!(f, "from {ENV_BROKERS}"),
            Source::Profile {
                name,
                path,
                selected_by,
            } => write!(
                f,
                "from profile {name:?} of {} (selected by {selected_by})",
                path.display()
            ),
            Source::Default => write!(
                f,
                "the built-in default: no --brokers, {ENV_BROKERS} or profile names a cluster"
            ),
        }
    }
}

/// The broker list and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub brokers: String,
    pub source: Source,
}

impl Resolved {
    /// What to try when the cluster cannot be reached, for this source.
    pub fn hint(&self) -> String {
        let how = format!(
            "--brokers HOST:PORT[,...], the {ENV_BROKERS} variable, or a profile in {} (see `shardlog topic --help`)",
            default_path_text()
        );
        match &self.source {
            Source::Default => format!("hint: is a broker running there? To use another cluster, give {how}"),
            Source::Flag => "hint: check the address and that a broker is listening there".into(),
            Source::Env => format!("hint: {ENV_BROKERS} is set in the environment; unset it or give --brokers to use another cluster"),
            Source::Profile { name, path, .. } => format!(
                "hint: check the brokers of profile {name:?} in {}, or give --brokers / --profile to use another cluster",
                path.display()
            ),
        }
    }
}

/// The default profile file path as shown in help and hints.
pub fn default_path_text() -> &'static str {
    "~/.config/shardlog/cli.toml"
}

/// The profile file: `$SHARDLOG_CLI_CONFIG`, `$XDG_CONFIG_HOME/shardlog/cli.toml` or
/// `$HOME/.config/shardlog/cli.toml` (`None` without any of them).
pub fn file_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = set(ENV_CONFIG) {
        return Some(PathBuf::from(p));
    }
    if let Some(x) = set("XDG_CONFIG_HOME") {
        return Some(Path::new(&x).join("shardlog").join("cli.toml"));
    }
    set("HOME").map(|h| {
        Path::new(&h)
            .join(".config")
            .join("shardlog")
            .join("cli.toml")
    })
}

/// Resolves the broker list from the flags, the environment (`env`) and the profile file.
pub fn resolve(
    brokers_flag: Option<&str>,
    profile_flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> CliResult<Resolved> {
    if let Some(b) = brokers_flag {
        return Ok(Resolved {
            brokers: b.to_string(),
            source: Source::Flag,
        });
    }
    let env_brokers = env(ENV_BROKERS).filter(|v| !v.trim().is_empty());
    // An explicit --profile beats the environment's broker list: flags come first.
    let selected: Option<(String, &'static str)> = match profile_flag {
        Some(p) => Some((p.to_string(), "--profile")),
        None => {
            if let Some(b) = env_brokers {
                return Ok(Resolved {
                    brokers: b,
                    source: Source::Env,
                });
            }
            env(ENV_PROFILE)
                .filter(|v| !v.is_empty())
                .map(|p| (p, ENV_PROFILE))
        }
    };
    let path = file_path(env);
    let file = match &path {
        Some(p) => load(p)?,
        None => None,
    };
    let (file, path) = match (file, path.clone()) {
        (Some(f), Some(p)) => (f, p),
        _ => {
            return match selected {
                Some((name, by)) => Err(CliError::Usage(format!(
                    "profile {name:?} (selected by {by}) not found: there is no profile file ({})",
                    path.map_or_else(
                        || format!("{ENV_CONFIG}, XDG_CONFIG_HOME and HOME are unset"),
                        |p| format!("{} does not exist", p.display())
                    )
                ))),
                None => Ok(Resolved {
                    brokers: DEFAULT_BROKERS.to_string(),
                    source: Source::Default,
                }),
            }
        }
    };
    let selected = selected.or_else(|| {
        file.current_profile
            .clone()
            .map(|p| (p, "current_profile"))
            .or_else(|| {
                file.profiles
                    .contains_key("default")
                    .then(|| ("default".to_string(), "its name, \"default\""))
            })
    });
    let Some((name, selected_by)) = selected else {
        return Ok(Resolved {
            brokers: DEFAULT_BROKERS.to_string(),
            source: Source::Default,
        });
    };
    match file.profiles.get(&name) {
        Some(p) if !p.brokers.trim().is_empty() => Ok(Resolved {
            brokers: p.brokers.clone(),
            source: Source::Profile {
                name,
                path,
                selected_by,
            },
        }),
        Some(_) => Err(CliError::Usage(format!(
            "profile {name:?} in {} has an empty brokers list",
            path.display()
        ))),
        None => Err(CliError::Usage(format!(
            "profile {name:?} (selected by {selected_by}) is not in {}; its profiles: {}",
            path.display(),
            if file.profiles.is_empty() {
                "none".to_string()
            } else {
                file.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        ))),
    }
}

/// Reads and parses the profile file; `Ok(None)` when it does not exist.
fn load(path: &Path) -> CliResult<Option<ProfileFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::Usage(format!(
                "cannot read the profile file {}: {e}",
                path.display()
            )))
        }
    };
    toml::from_str::<ProfileFile>(&text).map(Some).map_err(|e| {
        CliError::Usage(format!(
            "invalid profile file {}: {}",
            path.display(),
            e.message()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const FILE: &str = "current_profile = \"prod\"\n\
        [profiles.prod]\nbrokers = \"p1:9092,p2:9092\"\n\
        [profiles.local]\nbrokers = \"127.0.0.1:9999\"\n";

    #[test]
    fn flags_then_environment_then_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("cli.toml");
        std::fs::write(&f, FILE).expect("write");
        let fs = f.to_str().expect("utf-8");
        let all = env_of(&[
            (ENV_CONFIG, fs),
            (ENV_BROKERS, "env:1"),
            (ENV_PROFILE, "local"),
        ]);
        // --brokers beats everything.
        let r = resolve(Some("flag:1"), Some("local"), &all).expect("flag");
        assert_eq!((r.brokers.as_str(), r.source), ("flag:1", Source::Flag));
        // --profile beats the environment's broker list.
        let r = resolve(None, Some("local"), &all).expect("profile flag");
        assert_eq!(r.brokers, "127.0.0.1:9999");
        assert!(matches!(
            r.source,
            Source::Profile {
                selected_by: "--profile",
                ..
            }
        ));
        // SHARDLOG_BROKERS beats SHARDLOG_PROFILE and the file.
        let r = resolve(None, None, &all).expect("env");
        assert_eq!((r.brokers.as_str(), r.source), ("env:1", Source::Env));
        // SHARDLOG_PROFILE beats current_profile.
        let r = resolve(
            None,
            None,
            &env_of(&[(ENV_CONFIG, fs), (ENV_PROFILE, "local")]),
        )
        .expect("env profile");
        assert_eq!(r.brokers, "127.0.0.1:9999");
        // current_profile.
        let r = resolve(None, None, &env_of(&[(ENV_CONFIG, fs)])).expect("current");
        assert_eq!(r.brokers, "p1:9092,p2:9092");
        assert!(
            r.source.to_string().contains("profile \"prod\""),
            "{}",
            r.source
        );
        // Nothing at all.
        let r = resolve(None, None, &env_of(&[])).expect("default");
        assert_eq!(
            (r.brokers.as_str(), r.source),
            (DEFAULT_BROKERS, Source::Default)
        );
    }

    #[test]
    fn default_paths() {
        assert_eq!(
            file_path(&env_of(&[("HOME", "/home/u")])),
            Some(PathBuf::from("/home/u/.config/shardlog/cli.toml"))
        );
        assert_eq!(
            file_path(&env_of(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/x")])),
            Some(PathBuf::from("/x/shardlog/cli.toml"))
        );
        assert_eq!(
            file_path(&env_of(&[("HOME", "/home/u"), (ENV_CONFIG, "/c.toml")])),
            Some(PathBuf::from("/c.toml"))
        );
        assert_eq!(file_path(&env_of(&[])), None);
        // A HOME without the file: the built-in default.
        let dir = tempfile::tempdir().expect("tmp");
        let home = dir.path().to_str().expect("utf-8");
        let r = resolve(None, None, &env_of(&[("HOME", home)])).expect("default");
        assert_eq!(r.source, Source::Default);
    }

    #[test]
    fn a_profile_named_default_is_used_without_current_profile() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("cli.toml");
        std::fs::write(&f, "[profiles.default]\nbrokers = \"d:1\"\n").expect("write");
        let r = resolve(
            None,
            None,
            &env_of(&[(ENV_CONFIG, f.to_str().expect("utf-8"))]),
        )
        .expect("default profile");
        assert_eq!(r.brokers, "d:1");
    }

    #[test]
    fn bad_selections_and_files_are_usage_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("cli.toml");
        std::fs::write(&f, FILE).expect("write");
        let fs = f.to_str().expect("utf-8");
        let e = resolve(None, Some("nope"), &env_of(&[(ENV_CONFIG, fs)])).expect_err("unknown");
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("local, prod"), "{e}");
        let missing = dir.path().join("missing.toml");
        let e = resolve(
            None,
            None,
            &env_of(&[
                (ENV_CONFIG, missing.to_str().expect("utf-8")),
                (ENV_PROFILE, "prod"),
            ]),
        )
        .expect_err("no file");
        assert!(
            e.to_string().contains("SHARDLOG_PROFILE") && e.to_string().contains("does not exist"),
            "{e}"
        );
        std::fs::write(&f, "[profiles.x]\nbrokres = \"typo:1\"\n").expect("write");
        let e = resolve(None, None, &env_of(&[(ENV_CONFIG, fs)])).expect_err("typo");
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("brokres"), "{e}");
        // The file is not read when a flag names the cluster.
        assert!(resolve(Some("h:1"), None, &env_of(&[(ENV_CONFIG, fs)])).is_ok());
    }
}
