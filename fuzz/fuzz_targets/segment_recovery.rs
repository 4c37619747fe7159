//! Recovery of a partition directory whose last segment (and optionally its index and the
//! clean-shutdown marker) holds arbitrary bytes: opening never panics, and everything the
//! recovered log serves is valid, contiguous and ends at the log end.
#![no_main]
use std::path::{Path, PathBuf};

use futures_lite::future::block_on;
use libfuzzer_sys::fuzz_target;
use shardlog_engine::{batch, LogConfig, PartitionLog, SimStorage, Storage};

fuzz_target!(|data: &[u8]| {
    let disk = SimStorage::default();
    let dir = PathBuf::from("/d/t-0");
    // First byte selects which extra files are present; the rest is the segment.
    let (flags, body) = data.split_first().unwrap_or((&0, &[]));
    block_on(async {
        let put = |name: &str, bytes: &[u8]| {
            let (disk, p, bytes) = (disk.clone(), dir.join(name), bytes.to_vec());
            async move {
                disk.write_file_atomic(Path::new(&p), &bytes)
                    .await
                    .expect("sim write")
            }
        };
        put("00000000000000000000.log", body).await;
        if flags & 1 != 0 {
            put("00000000000000000000.index", &body[..body.len().min(64)]).await;
            put(
                "00000000000000000000.timeindex",
                &body[..body.len().min(48)],
            )
            .await;
        }
        if flags & 2 != 0 {
            let mut m = b"SLCM".to_vec();
            m.extend_from_slice(&0i64.to_be_bytes());
            m.extend_from_slice(&(body.len() as u64).to_be_bytes());
            m.extend_from_slice(&i64::from(flags >> 2).to_be_bytes());
            // A marker whose checksum is wrong must be ignored (the tail is scanned instead).
            let crc = crc32c::crc32c(&m) ^ 1;
            m.extend_from_slice(&crc.to_be_bytes());
            put("clean-shutdown", &m).await;
        }
        let cfg = LogConfig {
            index_interval_bytes: 64,
            ..LogConfig::default()
        };
        let Ok((log, _)) = PartitionLog::open(disk.clone(), dir.clone(), cfg).await else {
            return;
        };
        let end = log.log_end_offset();
        let mut offset = log.log_start_offset();
        while offset < end {
            let r = log
                .read(offset, end, 1 << 16, true)
                .await
                .expect("recovered data is readable");
            assert!(!r.batches.is_empty());
            for b in r.batches {
                let info =
                    batch::validate(&b.to_bytes(), usize::MAX).expect("served batches are valid");
                assert!(
                    info.base_offset <= offset && info.next_offset() > offset,
                    "contiguous"
                );
                offset = info.next_offset();
            }
        }
        assert_eq!(offset, end);
        // The log accepts appends after recovery.
        let b = bytes::Bytes::from(batch::build(0, 1, 8, 0));
        let a = log.append(b, 0, 0).await.expect("append after recovery");
        assert_eq!(a.base_offset, end);
    });
});
