//! The log's small control files (`log-start`, `leader-epochs`, `clean-shutdown`,
//! `truncation`): a format version, the body, a checksum.
//!
//! Layout of a file written by this version (big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version, [`CONTROL_VERSION`] |
//! | n | body (one layout per file, see `docs/ARCHITECTURE.md`) |
//! | 4 | CRC32C of version and body, XOR [`VERSIONED_CRC_MASK`] |
//!
//! Files written before the version byte existed are `body, CRC32C(body)`. The mask tells the
//! two apart with certainty, whatever the body holds: a checksum cannot equal both the CRC of
//! its data and that CRC XOR a non-zero constant, so exactly one reading matches (or none: a
//! corrupt file, ignored and logged as before). Data directories written by earlier versions
//! therefore open unchanged, and the next replacement of each file writes the new layout.
//!
//! A version this build does not know is [`LogError::UnsupportedFormat`], naming the file: the
//! log refuses to open rather than guess (a newer build may have changed the body's layout,
//! and misreading, say, the epoch table would hand out wrong divergence points). Every future
//! version keeps the version byte first and the masked checksum last, so any build can tell
//! which version wrote a file.

use std::path::Path;

use crate::error::LogError;
use crate::io::Storage;

/// The control-file format this build writes and the newest it reads.
pub(crate) const CONTROL_VERSION: u8 = 1;

/// XORed into the checksum of versioned files (ASCII "SLV1"); see the module docs.
const VERSIONED_CRC_MASK: u32 = 0x534C_5631;

/// `body` as a control file of the current version.
pub(crate) fn encode(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 5);
    v.push(CONTROL_VERSION);
    v.extend_from_slice(body);
    let crc = shardlog_format::crc32c(&[&v]) ^ VERSIONED_CRC_MASK;
    v.extend_from_slice(&crc.to_be_bytes());
    v
}

/// The body of a control file's bytes: `Ok(None)` for a corrupt file (the caller treats it as
/// absent), an error for a version this build does not know.
pub(crate) fn decode(path: &Path, mut data: Vec<u8>) -> Result<Option<Vec<u8>>, LogError> {
    if data.len() < 4 {
        tracing::warn!(path = %path.display(), "control file too short; ignored");
        return Ok(None);
    }
    let body_len = data.len() - 4;
    let stored = u32::from_be_bytes([
        data[body_len],
        data[body_len + 1],
        data[body_len + 2],
        data[body_len + 3],
    ]);
    let crc = shardlog_format::crc32c(&[&data[..body_len]]);
    if crc == stored {
        // Written before control files had a version.
        data.truncate(body_len);
        return Ok(Some(data));
    }
    if crc ^ VERSIONED_CRC_MASK != stored || body_len == 0 {
        tracing::warn!(path = %path.display(), "control file checksum mismatch; ignored");
        return Ok(None);
    }
    let version = data[0];
    if version != CONTROL_VERSION {
        return Err(LogError::UnsupportedFormat {
            path: path.to_path_buf(),
            version,
            supported: CONTROL_VERSION,
        });
    }
    data.truncate(body_len);
    data.remove(0);
    Ok(Some(data))
}

/// Reads and decodes a control file; `None` if it does not exist or is corrupt.
pub(crate) async fn read<S: Storage>(
    storage: &S,
    path: &Path,
) -> Result<Option<Vec<u8>>, LogError> {
    match storage
        .read_file(path)
        .await
        .map_err(|e| LogError::io("read", path, e))?
    {
        Some(data) => decode(path, data),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(body: &[u8]) -> Vec<u8> {
        let mut v = body.to_vec();
        v.extend_from_slice(&shardlog_format::crc32c(&[body]).to_be_bytes());
        v
    }

    #[test]
    fn current_files_round_trip() {
        let p = Path::new("/d/leader-epochs");
        for body in [&b""[..], b"x", &[0u8; 24], &7i64.to_be_bytes()] {
            let got = decode(p, encode(body)).expect("known version");
            assert_eq!(got.as_deref(), Some(body));
        }
    }

    #[test]
    fn files_without_a_version_byte_still_decode() {
        let p = Path::new("/d/log-start");
        // Bodies whose first byte happens to equal the current version decode as legacy too.
        for body in [
            &b""[..],
            &[CONTROL_VERSION, 0, 0, 0, 0, 0, 0, 9],
            &[0u8; 12],
        ] {
            let got = decode(p, legacy(body)).expect("legacy");
            assert_eq!(got.as_deref(), Some(body));
        }
    }

    #[test]
    fn an_unknown_version_is_a_typed_error_naming_the_file() {
        let p = Path::new("/d/leader-epochs");
        let mut v = vec![CONTROL_VERSION + 1, 1, 2, 3];
        let crc = shardlog_format::crc32c(&[&v]) ^ VERSIONED_CRC_MASK;
        v.extend_from_slice(&crc.to_be_bytes());
        match decode(p, v) {
            Err(LogError::UnsupportedFormat {
                path,
                version,
                supported,
            }) => {
                assert_eq!(path, p);
                assert_eq!((version, supported), (CONTROL_VERSION + 1, CONTROL_VERSION));
            }
            other => panic!("expected UnsupportedFormat, got {other:?}"),
        }
        let e = decode(p, {
            let mut v = vec![9u8];
            let crc = shardlog_format::crc32c(&[&v]) ^ VERSIONED_CRC_MASK;
            v.extend_from_slice(&crc.to_be_bytes());
            v
        })
        .expect_err("version 9");
        assert!(e.to_string().contains("/d/leader-epochs"), "{e}");
    }

    #[test]
    fn corrupt_files_are_ignored() {
        let p = Path::new("/d/x");
        let mut v = encode(b"abc");
        v[1] ^= 1;
        assert_eq!(decode(p, v).expect("corrupt is not an error"), None);
        assert_eq!(decode(p, vec![1, 2]).expect("short"), None);
    }
}
