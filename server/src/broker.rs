//! Start-up and shutdown of the whole broker: memory locking, the data directory lock, one
//! pinned glommio executor per shard, the channel mesh between them, signals.
//!
//! Start-up order: load the metadata file and remove partition directories that belong to no
//! current topic (left behind by a deletion interrupted by a crash); start the shards; each
//! joins the mesh, opens the logs it owns, binds its own listener (SO_REUSEPORT: the kernel
//! spreads connections over the shards) and waits at a barrier, so no shard accepts a
//! connection before every shard knows every topic. Shard 0 then logs `shardlog ready`.
//!
//! Shutdown (SIGTERM/SIGINT): a signal thread sets a flag; every shard stops accepting and
//! reading, lets in-flight requests finish and their answers go out, waits until all shards
//! have drained (their requests may still reach partitions on other shards), then writes
//! producer snapshots and `close()`s its logs (flush, indexes, clean marker). A second signal
//! exits at once with status 130.

use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use futures::future::{self, Either, FutureExt};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use shardlog_engine::BrokerStorage;

use crate::clock::Clock;
use crate::connection;
use crate::controller::log::{MetadataAuthority, MetadataLog};
use crate::controller::metadata::ClusterMeta;
use crate::mesh::messages::MeshMsg;
use crate::mesh::routing::topic_dir;
use crate::mesh::shard::{Global, Shard};

/// glommio refuses to start an executor below this much RLIMIT_MEMLOCK.
const MIN_MEMLOCK_BYTES: u64 = 512 << 10;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another shardlog process")]
    Locked(std::path::PathBuf),
    #[error(transparent)]
    Metadata(#[from] crate::controller::metadata::MetaError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("locked-memory limit (ulimit -l) is {have} KiB; glommio needs at least {need} KiB per process and it could not be raised: {reason}")]
    Memlock {
        have: u64,
        need: u64,
        reason: String,
    },
    #[error("cannot start shard {shard}: {message}")]
    Executor { shard: usize, message: String },
    #[error("shard {shard} failed: {message}")]
    Shard { shard: usize, message: String },
}

/// Makes sure RLIMIT_MEMLOCK allows glommio's executors; raises it when we may.
fn ensure_memlock(cfg: &BrokerConfig) -> Result<(), BrokerError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        tracing::warn!("getrlimit(RLIMIT_MEMLOCK) failed; starting anyway");
        return Ok(());
    }
    let want = (cfg.io_memory_bytes as u64 * cfg.cores as u64 * 2).max(MIN_MEMLOCK_BYTES * 2);
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= want {
        tracing::debug!(
            memlock_kib = lim.rlim_cur / 1024,
            "locked-memory limit is sufficient"
        );
        return Ok(());
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max).max(lim.rlim_cur),
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads the valid `raised`.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 || {
        let only_soft = libc::rlimit {
            rlim_cur: want.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &only_soft) == 0 }
    };
    let set_error = (!ok).then(std::io::Error::last_os_error);
    let mut now = lim;
    // SAFETY: getrlimit writes into the valid `now`.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut now) };
    match memlock_change(lim.rlim_cur, lim.rlim_max, now.rlim_cur) {
        MemlockChange::Raised => tracing::info!(
            from_kib = lim.rlim_cur / 1024,
            to_kib = now.rlim_cur / 1024,
            wanted_kib = want / 1024,
            "raised the locked-memory limit"
        ),
        MemlockChange::AtHardLimit => tracing::info!(
            memlock_kib = now.rlim_cur / 1024,
            wanted_kib = want / 1024,
            "locked-memory limit not raised: the soft limit is already the hard limit, and raising the hard limit needs CAP_SYS_RESOURCE (set LimitMEMLOCK= or ulimit -l)"
        ),
        MemlockChange::Unchanged => tracing::info!(
            memlock_kib = now.rlim_cur / 1024,
            hard_kib = lim.rlim_max / 1024,
            wanted_kib = want / 1024,
            error = set_error.as_ref().map(|e| e.to_string()).unwrap_or_default(),
            "locked-memory limit not raised: setrlimit failed"
        ),
    }
    if now.rlim_cur < MIN_MEMLOCK_BYTES {
        return Err(BrokerError::Memlock {
            have: now.rlim_cur / 1024,
            need: MIN_MEMLOCK_BYTES / 1024,
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    if now.rlim_cur < want {
        tracing::warn!(memlock_kib = now.rlim_cur / 1024, wanted_kib = want / 1024, "locked-memory limit is low; glommio may fall back to unregistered I/O buffers (lower io_memory_bytes to avoid this)");
    }
    Ok(())
}

/// What an attempt to raise RLIMIT_MEMLOCK did, from the soft and hard limits before and the
/// soft limit after (a log line must say what happened, not what was tried).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemlockChange {
    /// The soft limit went up.
    Raised,
    /// Nothing changed because the soft limit already was the hard limit (an unprivileged
    /// process may not raise the hard limit).
    AtHardLimit,
    /// Nothing changed: setrlimit was refused.
    Unchanged,
}

fn memlock_change(before_cur: u64, before_max: u64, after_cur: u64) -> MemlockChange {
    if after_cur > before_cur {
        MemlockChange::Raised
    } else if before_cur >= before_max {
        MemlockChange::AtHardLimit
    } else {
        MemlockChange::Unchanged
    }
}

/// CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }
            == 0;
    let cpus: Vec<usize> = if ok {
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `set` is initialised and `c` is within CPU_SETSIZE.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
    } else {
        cpus
    }
}

/// Holds an exclusive flock on `<data_dir>/.lock` for the life of the process.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, BrokerError> {
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| BrokerError::DataDir {
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on a valid, open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(BrokerError::Locked(dir.to_path_buf()));
    }
    Ok(f)
}

/// Removes `logs/*` directories that belong to no topic in `meta` (a topic deleted while its
/// directories were being freed, or leftovers of such a deletion), through the paced
/// background deleter: freeing gigabytes at once stalls a disk mounted with online discard,
/// and start-up does not wait for it. If the broker stops again first, the renamed directory is
/// found here at the next start.
fn remove_orphans(data_dir: &Path, meta: &ClusterMeta) {
    let logs = data_dir.join("logs");
    let Ok(entries) = std::fs::read_dir(&logs) else {
        return;
    };
    let keep: std::collections::HashSet<_> = meta
        .topics
        .values()
        .map(|t| topic_dir(data_dir, t))
        .collect();
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !keep.contains(&p) {
            tracing::warn!(dir = %p.display(), "removing partition data of a deleted topic");
            if let Err(err) = shardlog_engine::io::deleter::remove_dir_in_background(&p) {
                tracing::error!(dir = %p.display(), error = %err, "cannot remove orphaned topic directory");
            }
        }
    }
}

/// Blocks SIGTERM/SIGINT in this thread (inherited by the executors) and returns the set.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        set
    }
}

fn spawn_signal_thread(set: libc::sigset_t, global: Arc<Global>) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` holds blocked signals; sigwait writes into `sig`.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            if global.shutdown.swap(true, Ordering::SeqCst) {
                tracing::warn!(signal = sig, "second signal: exiting immediately");
                std::process::exit(130);
            }
            tracing::info!(signal = sig, "shutdown requested: draining requests");
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the signal thread; SIGTERM will not drain");
    }
}

/// Runs the broker on the real disk until SIGTERM/SIGINT. Returns once every shard has closed
/// its logs.
pub fn run(cfg: BrokerConfig) -> Result<(), BrokerError> {
    // Blocked before the executors start, so that they inherit the mask and only the signal
    // thread sees SIGTERM/SIGINT.
    let sigset = block_signals();
    let broker = Broker::start_with(cfg, BrokerStorage::default(), Clock::System)?;
    spawn_signal_thread(sigset, broker.global.clone());
    broker.join()
}

/// A running broker: its shards' executor threads and the state they share.
pub struct Broker {
    global: Arc<Global>,
    handles: Vec<glommio::ExecutorJoinHandle<Result<(), BrokerError>>>,
}

impl Broker {
    /// Starts the broker with `cfg` on `storage` (the partition logs, the group offsets log and
    /// the producer snapshots live there; the metadata file and the data directory's lock stay
    /// on the real disk under `data_dir`), with `clock` as the wall clock of retention and
    /// producer-id expiry (see [`crate::clock`]). Returns once every shard listens and knows every
    /// topic, or with the first error. [`run`] is this on [`BrokerStorage::Glommio`] plus the
    /// signal thread; tests run it on [`BrokerStorage::Sim`].
    pub fn start_with(
        cfg: BrokerConfig,
        storage: BrokerStorage,
        clock: Clock,
    ) -> Result<Self, BrokerError> {
        shardlog_engine::io::deleter::configure(shardlog_engine::io::deleter::DeleterConfig {
            chunk_bytes: cfg.segment_delete_chunk_bytes,
            interval: Duration::from_millis(cfg.segment_delete_interval_ms),
            grace: Duration::from_millis(cfg.segment_delete_delay_ms),
            ..Default::default()
        });
        let started = Instant::now();
        ensure_memlock(&cfg)?;
        shardlog_engine::io::create_dir_all_durable(&cfg.data_dir).map_err(|source| {
            BrokerError::DataDir {
                path: cfg.data_dir.clone(),
                source,
            }
        })?;
        let lock = lock_data_dir(&cfg.data_dir)?;
        // Refuse an address another process listens on: with SO_REUSEPORT the kernel would
        // otherwise share the port between the two. A bind probe would trip over our previous
        // incarnation's TIME_WAIT sockets, so probe by connecting. After a kill -9 the dead
        // process's listener can outlive it for a moment (io_uring tears its rings down
        // asynchronously), so wait up to 10 s for the port to become free.
        let t0 = Instant::now();
        while crate::admin::http::listening(cfg.listen_addr()) {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(BrokerError::Listen {
                    addr: cfg.listen.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
                });
            }
            if t0.elapsed() < Duration::from_millis(250) {
                tracing::info!(addr = %cfg.listen, "address still has a listener; waiting for it to go away");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut cfg = cfg;
        cfg.offsets_topic_partitions = crate::groups::offsets_log::resolve_offsets_partitions(&cfg)
            .map_err(|source| BrokerError::DataDir {
                path: crate::groups::offsets_log::offsets_dir(&cfg.data_dir),
                source,
            })?;
        // Shard 0 opens the metadata log (its files are glommio files, so on its executor) and
        // hands the image to the others before any shard opens a partition.
        let meta_slot = Arc::new(MetaSlot {
            image: std::sync::Mutex::new(None),
            barrier: Barrier::new(cfg.cores),
        });

        let global = Arc::new(Global {
            shutdown: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            drained: AtomicUsize::new(0),
            connections: crate::wire::limits::ConnectionLimits::new(
                cfg.max_connections,
                cfg.max_connections_per_ip,
            ),
            offline: Default::default(),
            controller: Default::default(),
        });

        let cfg = Arc::new(cfg);
        let n = cfg.cores;
        let cpus = allowed_cpus();
        let mesh = MeshBuilder::<MeshMsg, _>::full(n, 1024);
        let barrier = Arc::new(Barrier::new(n));
        let bind_failed = Arc::new(AtomicBool::new(false));
        // Each shard reports once: ready (listening), or the error that stopped it first.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<bool>();
        let lock = Arc::new(lock);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let cpu = cpus[i % cpus.len()];
            let (cfg, shared, mesh, barrier, bind_failed, storage, clock, ready, lock) = (
                cfg.clone(),
                global.clone(),
                mesh.clone(),
                barrier.clone(),
                bind_failed.clone(),
                storage.clone(),
                clock.clone(),
                ready_tx.clone(),
                lock.clone(),
            );
            let meta_slot = meta_slot.clone();
            let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(&format!("shard-{i}"))
                .io_memory(cfg.io_memory_bytes)
                .spawn(move || async move {
                    let r = shard_main(
                        i,
                        cfg,
                        shared,
                        meta_slot,
                        mesh,
                        barrier,
                        bind_failed,
                        started,
                        storage,
                        clock,
                        &ready,
                    )
                    .await;
                    if r.is_err() {
                        let _ = ready.send(false);
                    }
                    // The data directory stays locked until the last shard is done with it.
                    drop(lock);
                    r
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    global.shutdown.store(true, Ordering::SeqCst);
                    let _ = Self { global, handles }.join();
                    return Err(BrokerError::Executor {
                        shard: i,
                        message: e.to_string(),
                    });
                }
            }
        }
        drop(ready_tx);
        let broker = Self { global, handles };
        for _ in 0..n {
            if !ready_rx.recv().unwrap_or(false) {
                broker.global.shutdown.store(true, Ordering::SeqCst);
                return Err(broker.join().err().unwrap_or(BrokerError::Shard {
                    shard: 0,
                    message: "a shard stopped during start-up".into(),
                }));
            }
        }
        Ok(broker)
    }

    /// Asks every shard to drain and close (what SIGTERM does); [`join`](Self::join) waits.
    pub fn shutdown(&self) {
        self.global.shutdown.store(true, Ordering::SeqCst);
    }

    /// Waits until every shard has stopped; the first shard error, if any.
    pub fn join(self) -> Result<(), BrokerError> {
        let mut first_err = None;
        for (i, h) in self.handles.into_iter().enumerate() {
            let r = match h.join() {
                Ok(r) => r,
                Err(e) => Err(BrokerError::Shard {
                    shard: i,
                    message: format!("executor: {e}"),
                }),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => {
                tracing::info!("shardlog stopped cleanly");
                Ok(())
            }
        }
    }
}

/// The image shard 0 read from the metadata log, for every shard, and the barrier they wait
/// at until it is there (`None` after it: the log did not open).
struct MetaSlot {
    image: std::sync::Mutex<Option<ClusterMeta>>,
    barrier: Barrier,
}

/// A descriptor held in reserve, given up when accept runs out of them (see the accept loop).
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Pauses between failed accepts, doubling from 10 ms to 1 s, and at most one log line a
/// second: a listener out of descriptors fails every accept at once, and the first version
/// logged "accept failed" about 200 times a second while retrying every 10 ms. Every failure
/// is counted (`shardlog_accept_failures_total`).
struct AcceptBackoff {
    failures: u32,
    unlogged: u64,
    last_log: Option<Instant>,
    spare: Option<std::fs::File>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Self {
            failures: 0,
            unlogged: 0,
            last_log: None,
            spare: spare_descriptor(),
        }
    }

    /// Records a failure; returns how long to wait before the next accept.
    fn failed(&mut self, shard: usize, e: &std::io::Error) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let pause = Self::FIRST
            .saturating_mul(1u32 << (self.failures - 1).min(10))
            .min(Self::MAX);
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(shard, error = %e, consecutive = self.failures, not_logged = self.unlogged, retry_ms = pause.as_millis() as u64, "accept failed");
            self.last_log = Some(Instant::now());
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        pause
    }

    fn succeeded(&mut self, shard: usize) {
        if self.failures > 0 {
            tracing::info!(
                shard,
                after_failures = self.failures,
                "accepting connections again"
            );
            self.failures = 0;
            self.unlogged = 0;
        }
        if self.spare.is_none() {
            self.spare = spare_descriptor();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn shard_main(
    id: usize,
    cfg: Arc<BrokerConfig>,
    global: Arc<Global>,
    meta_slot: Arc<MetaSlot>,
    mesh: MeshBuilder<MeshMsg, glommio::channels::channel_mesh::Full>,
    barrier: Arc<Barrier>,
    bind_failed: Arc<AtomicBool>,
    started: Instant,
    storage: BrokerStorage,
    clock: Clock,
    ready: &std::sync::mpsc::Sender<bool>,
) -> Result<(), BrokerError> {
    let n = cfg.cores;
    // This shard's logs time their writes and fdatasyncs into its metrics.
    shardlog_engine::disk_ops::set_observer(Some(crate::metrics::disk_op));
    shardlog_engine::disk_ops::set_slow_threshold(Duration::from_millis(cfg.slow_disk_op_ms));
    // Settle glommio's per-thread IOPOLL detection with a real block of data before any log
    // opens a file (see GlommioStorage::prepare); it also refuses a data dir without O_DIRECT.
    let prepared = if storage.is_real() {
        shardlog_engine::GlommioStorage::prepare(&cfg.data_dir)
            .await
            .map_err(|e| BrokerError::Shard {
                shard: id,
                message: format!("direct I/O in {}: {e}", cfg.data_dir.display()),
            })
    } else {
        Ok(())
    };
    if let Err(e) = prepared {
        // The others wait for shard 0's image at the barrier: arrive there, then stop.
        meta_slot.barrier.wait();
        return Err(e);
    }
    let mut authority = None;
    if id == 0 {
        let opened = crate::controller::quorum::open_log(&cfg, &storage).await;
        let image = match opened {
            Ok(log) => {
                let image = log.image().clone();
                // Orphans on the simulated disk stay (a test disk lives for one test).
                if storage.is_real() {
                    remove_orphans(&cfg.data_dir, &image);
                }
                authority = Some(MetadataAuthority::new(log));
                Some(image)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot open the metadata log");
                *meta_slot.image.lock().unwrap_or_else(|e| e.into_inner()) = None;
                meta_slot.barrier.wait();
                return Err(BrokerError::Metadata(e));
            }
        };
        *meta_slot.image.lock().unwrap_or_else(|e| e.into_inner()) = image;
    }
    meta_slot.barrier.wait();
    let Some(meta) = meta_slot
        .image
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    else {
        return Err(BrokerError::Shard {
            shard: id,
            message: "the metadata log did not open".into(),
        });
    };
    let (senders, receivers) = mesh.join().await.map_err(|e| BrokerError::Shard {
        shard: id,
        message: format!("joining the shard mesh: {e}"),
    })?;
    let shard = Shard::new(
        id,
        cfg.clone(),
        global.clone(),
        meta.clone(),
        authority,
        senders,
        crate::dispatch::serve,
        storage,
        clock,
    );
    shard.spawn_mesh_receivers(receivers);
    if let Some(io) = shard.quorum_io.clone() {
        if let Err(message) = crate::controller::transport::start(&shard, &io, &cfg) {
            tracing::error!(error = %message, "cannot start the controller transport");
            bind_failed.store(true, Ordering::SeqCst);
        }
        crate::controller::quorum::spawn_driver(shard.clone(), io);
    }
    for t in meta.topics.values() {
        shard.open_topic(t).await;
    }
    // Replay this shard's part of __consumer_offsets before any client can reach a group.
    crate::groups::coordinator::load(&shard).await;
    let listener = match TcpListener::bind(cfg.listen_addr()) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(shard = id, addr = %cfg.listen, error = %e, "cannot listen");
            bind_failed.store(true, Ordering::SeqCst);
            None
        }
    };
    barrier.wait();
    let listen_result = match (listener, bind_failed.load(Ordering::SeqCst)) {
        (Some(l), false) => Ok(l),
        _ => Err(BrokerError::Listen {
            addr: cfg.listen.clone(),
            source: std::io::Error::other("a shard could not bind the address"),
        }),
    };
    let listener = match listen_result {
        Ok(l) => l,
        Err(e) => {
            global.shutdown.store(true, Ordering::SeqCst);
            shard.close_all().await;
            return Err(e);
        }
    };
    // Registered with the controller (and unfenced) before any shard serves a client; the
    // other shards keep answering the mesh meanwhile (the registration's records reach
    // them as ShardReq::Apply).
    let mut session = None;
    if id == 0 {
        if shard.quorum_io.is_some() {
            session = Some(crate::controller::lifecycle::start(&shard).await);
        }
        global.registered.store(true, Ordering::SeqCst);
    } else {
        while !global.registered.load(Ordering::SeqCst) && !global.shutdown.load(Ordering::SeqCst) {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }
    let _ = ready.send(true);
    if id == 0 {
        let (host, port) = cfg.advertised_host_port();
        tracing::info!(listen = %cfg.listen, advertised = %format!("{host}:{port}"), shards = n, data_dir = %cfg.data_dir.display(), topics = meta.topics.len(), startup_ms = started.elapsed().as_millis() as u64, "shardlog ready");
        if let Some(addr) = cfg.admin_addr() {
            crate::admin::http::spawn(shard.clone(), addr, started);
        }
    }

    // Shutdown watcher: turns the process-wide flag into this shard's event.
    {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while !shard.is_shutting_down() {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            shard.shutdown_event.notify(usize::MAX);
        })
        .detach();
    }
    crate::groups::coordinator::spawn_timer(shard.clone());

    // Periodic log work.
    {
        let shard = shard.clone();
        let tick = Duration::from_millis(cfg.tick_interval_ms);
        let retention_every = Duration::from_millis(cfg.retention_check_interval_ms);
        let expiry_every = Duration::from_millis(cfg.producer_id_expiration_check_interval_ms);
        glommio::spawn_local(async move {
            let mut last_retention = Instant::now();
            let mut last_expiry = Instant::now();
            loop {
                glommio::timer::sleep(tick).await;
                if shard.global.drained.load(Ordering::SeqCst) >= shard.shards {
                    break;
                }
                let due = last_retention.elapsed() >= retention_every;
                if due {
                    last_retention = Instant::now();
                }
                let expiry_due = last_expiry.elapsed() >= expiry_every;
                if expiry_due {
                    last_expiry = Instant::now();
                }
                shard.tick_all(due, expiry_due).await;
                crate::alloc::release_pending();
            }
        })
        .detach();
    }

    let mut accept_backoff = AcceptBackoff::new();
    loop {
        let stop = shard.shutdown_event.listen();
        if shard.is_shutting_down() {
            break;
        }
        let accepted = match future::select(listener.accept().boxed_local(), stop).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => break,
        };
        match accepted {
            Ok(stream) => {
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                let ticket = match global.connections.try_admit(peer.ip()) {
                    Ok(t) => t,
                    Err(why) => {
                        tracing::warn!(%peer, "connection refused: {why}");
                        crate::metrics::connection_refused();
                        drop(stream);
                        continue;
                    }
                };
                accept_backoff.succeeded(id);
                shard.connections.set(shard.connections.get() + 1);
                crate::metrics::connection_accepted();
                tracing::debug!(shard = id, %peer, "accepted connection");
                let s = shard.clone();
                glommio::spawn_local(async move {
                    connection::serve(s.clone(), stream, peer).await;
                    s.connections.set(s.connections.get() - 1);
                    drop(ticket);
                })
                .detach();
            }
            Err(e) => {
                let e = std::io::Error::from(e);
                crate::metrics::accept_failed();
                let pause = accept_backoff.failed(id, &e);
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    // Out of descriptors: the connection waits in the backlog, and its client
                    // would hang until one frees up. Give up the spare descriptor, take the
                    // connection and close it at once, so the client sees a closed connection
                    // and retries (the technique of libuv and nginx).
                    accept_backoff.spare = None;
                    let one = future::select(
                        listener.accept().boxed_local(),
                        glommio::timer::sleep(Duration::from_millis(50)).boxed_local(),
                    )
                    .await;
                    drop(one);
                    accept_backoff.spare = spare_descriptor();
                }
                glommio::timer::sleep(pause).await;
            }
        }
    }
    drop(listener);
    if let Some(s) = &session {
        crate::controller::lifecycle::controlled_shutdown(&shard, s).await;
    }

    // Drain: wait for this shard's connections, then for every shard.
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    let t0 = Instant::now();
    while shard.connections.get() > 0 && t0.elapsed() < grace {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    if shard.connections.get() > 0 {
        tracing::warn!(
            shard = id,
            connections = shard.connections.get(),
            "shutdown grace period over; closing with requests in flight"
        );
    }
    global.drained.fetch_add(1, Ordering::SeqCst);
    while global.drained.load(Ordering::SeqCst) < n && t0.elapsed() < grace * 2 {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    shard.close_all().await;
    if let Some(s) = &session {
        s.write_clean_epoch(&shard);
    }
    tracing::info!(shard = id, "shard closed its logs");
    // Give peers a moment to finish closing before the mesh goes away.
    glommio::timer::sleep(Duration::from_millis(20)).await;
    shard.close_mesh();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_log_says_what_happened() {
        // The unprivileged case of the report: soft = hard = 8 MiB; "raising" to 8 MiB is
        // no raise.
        assert_eq!(
            memlock_change(8 << 20, 8 << 20, 8 << 20),
            MemlockChange::AtHardLimit
        );
        assert_eq!(
            memlock_change(8 << 20, 1 << 30, 64 << 20),
            MemlockChange::Raised
        );
        assert_eq!(
            memlock_change(8 << 20, 1 << 30, 8 << 20),
            MemlockChange::Unchanged
        );
    }
}
