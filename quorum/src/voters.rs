//! The static voter set, in Kafka's `controller.quorum.voters` form: `1@host:port,2@host:port`.
//!
//! The string comes from the command line, the config file or the environment, so every
//! malformed piece gets its own typed error naming the entry, never a panic.

use std::fmt;

use thiserror::Error;

/// Most voters a quorum accepts (Kafka clusters run 3 or 5; the bound keeps a typo from
/// producing a huge configuration).
pub const MAX_VOTERS: usize = 64;

/// One voter: its node id and its controller listener address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub id: u64,
    /// Host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Voter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.id, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.id, self.host, self.port)
        }
    }
}

/// Why a voters string was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VotersError {
    #[error("the voter list is empty")]
    Empty,
    #[error("more than {MAX_VOTERS} voters")]
    TooMany,
    #[error("voter entry {0:?} is not of the form ID@HOST:PORT")]
    MissingAt(String),
    #[error("voter entry {0:?}: the id is not a positive integer")]
    BadId(String),
    #[error("voter entry {0:?}: the address is not HOST:PORT")]
    BadAddress(String),
    #[error("voter entry {0:?}: the port is not a number in 1..=65535")]
    BadPort(String),
    #[error("voter id {0} appears twice")]
    DuplicateId(u64),
    #[error("voter address {0} appears twice")]
    DuplicateAddress(String),
}

/// Parses `1@host:port,2@host:port` (spaces around entries are allowed; IPv6 hosts in
/// brackets). Ids must be positive and unique, and so must addresses.
pub fn parse_voters(s: &str) -> Result<Vec<Voter>, VotersError> {
    if s.trim().is_empty() {
        return Err(VotersError::Empty);
    }
    let mut voters: Vec<Voter> = Vec::new();
    for raw in s.split(',') {
        if voters.len() == MAX_VOTERS {
            return Err(VotersError::TooMany);
        }
        let entry = raw.trim();
        let (id_text, addr) = entry
            .split_once('@')
            .ok_or_else(|| VotersError::MissingAt(entry.to_owned()))?;
        let id: u64 = match id_text.parse::<u64>() {
            Ok(id) if id > 0 && id_text.chars().all(|c| c.is_ascii_digit()) => id,
            _ => return Err(VotersError::BadId(entry.to_owned())),
        };
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| VotersError::BadAddress(entry.to_owned()))?;
        let host = if let Some(inner) = host.strip_prefix('[') {
            inner
                .strip_suffix(']')
                .filter(|h| h.contains(':'))
                .ok_or_else(|| VotersError::BadAddress(entry.to_owned()))?
        } else if host.contains(':') {
            // An IPv6 address must be bracketed, else the port is ambiguous.
            return Err(VotersError::BadAddress(entry.to_owned()));
        } else {
            host
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(VotersError::BadAddress(entry.to_owned()));
        }
        let port: u16 = match port.parse::<u16>() {
            Ok(p) if p > 0 && port.chars().all(|c| c.is_ascii_digit()) => p,
            _ => return Err(VotersError::BadPort(entry.to_owned())),
        };
        if voters.iter().any(|v| v.id == id) {
            return Err(VotersError::DuplicateId(id));
        }
        let voter = Voter {
            id,
            host: host.to_owned(),
            port,
        };
        if voters
            .iter()
            .any(|v| v.host.eq_ignore_ascii_case(&voter.host) && v.port == port)
        {
            return Err(VotersError::DuplicateAddress(format!(
                "{}:{}",
                voter.host, port
            )));
        }
        voters.push(voter);
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_form() {
        let v = parse_voters("1@localhost:9093, 2@10.0.0.2:9093,3@[::1]:9094").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[0],
            Voter {
                id: 1,
                host: "localhost".into(),
                port: 9093
            }
        );
        assert_eq!(v[2].host, "::1");
        assert_eq!(v[2].to_string(), "3@[::1]:9094");
        assert_eq!(v[1].to_string(), "2@10.0.0.2:9093");
    }

    #[test]
    fn rejects_each_malformed_piece() {
        use VotersError::*;
        let cases: &[(&str, VotersError)] = &[
            ("", Empty),
            ("  ", Empty),
            ("localhost:9093", MissingAt("localhost:9093".into())),
            ("0@h:1", BadId("0@h:1".into())),
            ("x@h:1", BadId("x@h:1".into())),
            ("+1@h:1", BadId("+1@h:1".into())),
            ("1@h", BadAddress("1@h".into())),
            ("1@:9093", BadAddress("1@:9093".into())),
            ("1@::1:9093", BadAddress("1@::1:9093".into())),
            ("1@[h]:9093", BadAddress("1@[h]:9093".into())),
            ("1@h:0", BadPort("1@h:0".into())),
            ("1@h:65536", BadPort("1@h:65536".into())),
            ("1@h:+5", BadPort("1@h:+5".into())),
            ("1@h:1,", MissingAt("".into())),
            ("1@a:1,1@b:1", DuplicateId(1)),
            ("1@a:1,2@A:1", DuplicateAddress("A:1".into())),
        ];
        for (s, want) in cases {
            assert_eq!(parse_voters(s).as_ref(), Err(want), "input {s:?}");
        }
        let many: Vec<String> = (1..=65).map(|i| format!("{i}@h:{i}")).collect();
        assert_eq!(parse_voters(&many.join(",")), Err(TooMany));
        let max: Vec<String> = (1..=64).map(|i| format!("{i}@h:{i}")).collect();
        assert_eq!(parse_voters(&max.join(",")).unwrap().len(), 64);
    }
}
