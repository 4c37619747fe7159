//! The controller's decisions about brokers and partitions, as pure functions: broker
//! registration (KIP-631), heartbeats, session expiry and controlled shutdown, ISR changes
//! asked for by partition leaders (AlterPartition, KIP-497 with KIP-903's broker epochs),
//! leader election and replica placement.
//!
//! Each decision reads the metadata image it is given and returns the [`MetadataRecord`]s that
//! carry it out (or a refusal); nothing here does I/O or reads a clock (time is a parameter),
//! so every rule below is a unit test and random sequences of events are property tests. The
//! controller leader proposes the records; the image changes only when they are applied.
//!
//! ## How the caller must use it
//!
//! * Decide against the image *including* the records already decided and not yet committed
//!   (apply each decision's records to the leader's working image at once, as Kafka's
//!   controller does), so two decisions in a row never hand out the same broker epoch or
//!   base a partition change on a state that is about to be replaced.
//! * Commit the records of one decision together and in order: a partition change computed
//!   after a `BrokerState` assumes that state.
//! * [`Sessions`] lives only on the controller leader; a new leader starts a fresh one, and
//!   [`Sessions::expire`] gives every live broker it has not heard from a full session before
//!   fencing it (Kafka does the same on controller failover).
//!
//! ## Brokers
//!
//! * **Registration.** A broker registers with its id, an incarnation id random per process
//!   start, its address, and the broker epoch it had when it last shut down *cleanly* (or -1).
//!   The controller gives it a new broker epoch, strictly greater than every epoch any broker
//!   had: one more than the largest of the registered epochs and the image's applied log index
//!   (an epoch is never larger than the index of the record that carries it, so an epoch of a
//!   broker unregistered since is still below the applied index). The same incarnation
//!   registering again (a retried request) gets its epoch back and changes nothing. A
//!   different incarnation of an id that is unfenced and inside its session is refused with
//!   DUPLICATE_BROKER_REGISTRATION (two processes with one id); otherwise the old incarnation
//!   is replaced: it stops leading and leaves the ISRs as on fencing. A registered broker
//!   starts fenced.
//! * **Heartbeat.** Renews the session. A stale epoch gets STALE_BROKER_EPOCH, an unknown id
//!   BROKER_ID_NOT_REGISTERED. A fenced broker that reports its metadata caught up is unfenced,
//!   and offline partitions it may lead (see election) get it as leader.
//! * **Session expiry.** An unfenced broker not heard from for the session timeout is fenced.
//! * **Fencing and controlled shutdown** (KIP-841): the broker leaves every ISR, and the
//!   partitions it led get a new leader from the remaining ISR (new leader epoch). If it was
//!   the last ISR member the ISR is kept as the last known one and the partition goes offline
//!   (leader -1). A broker asking to shut down is answered `shutdown_ok` once it leads nothing,
//!   and is fenced then (as in Kafka), so its next incarnation may register at once.
//!
//! ## ISR changes (AlterPartition)
//!
//! In Kafka's order of checks: unknown topic/partition; a leader or partition epoch newer than
//! the image's: NOT_CONTROLLER (this controller is behind); an older leader epoch:
//! FENCED_LEADER_EPOCH; the requester's broker epoch not its registered one:
//! STALE_BROKER_EPOCH; the requester not the leader: NOT_LEADER_OR_FOLLOWER (Kafka answers
//! INVALID_REQUEST; the leader's core treats both as a refusal); an older partition epoch:
//! INVALID_UPDATE_VERSION; an ISR with duplicates, non-replicas, or without the leader:
//! INVALID_REQUEST; an ISR member that is not registered, fenced, shutting down, or given with
//! a broker epoch other than its registered one (KIP-903; -1 skips that check, as in Kafka):
//! INELIGIBLE_REPLICA. An accepted change is one `PartitionChange` with the partition epoch
//! plus one and the same leader epoch.
//!
//! ## Eligible leader replicas and the last replica standing (KIP-966)
//!
//! The replica core keeps the high watermark still while the ISR is smaller than
//! `m = min(min.insync.replicas, replication factor)` (KIP-966's strict min ISR). So a replica
//! that leaves the ISR while the remaining ISR is below `m` holds every record up to the high
//! watermark, which cannot move past it afterwards: it is as good a leader as an ISR member.
//! Those replicas form the partition's ELR:
//!
//! * after every change, if the ISR has at least `m` members the ELR is empty; otherwise it is
//!   (old ELR ∪ old ISR) minus the new ISR minus a replica known to have lost data, in
//!   assignment order. A fenced broker stays in the ELR (it is the one coming back).
//! * **Election** (only ever from these sets; no unclean election): the first replica in
//!   assignment order that is in the ISR and unfenced and not shutting down; else the first
//!   such replica in the ELR, which then becomes the whole ISR (the old ISR members move to the
//!   ELR by the rule above); else none: leader -1.
//! * **Unclean restart.** A broker registering with a previous epoch that is not its current
//!   registered one did not shut down cleanly. In every partition whose flush policy does not
//!   fsync each batch (`flush.messages=1` / `flush.ms=0`, or the broker default), it may have
//!   lost records it had acknowledged (written, never flushed), including records below the
//!   high watermark. It must then not be elected over a replica that may hold more committed
//!   data: it leaves the ELR, and it leaves the (last known) ISR too, unless it is the only
//!   replica left in ISR ∪ ELR (then it keeps its place there). In that last case no replica is known to hold more: every other
//!   replica left the ISR while the high watermark could still advance past it, so it stays,
//!   to be elected when it comes back (Kafka's "last known leader"; a single-replica partition
//!   needs this to come back at all). A partition that fsyncs every batch keeps it: followers
//!   fetch from their durable end there, so the high watermark only covers fsynced data.
//!
//! ## Placement
//!
//! [`place`] assigns replicas round-robin over the live brokers (registered, unfenced, not
//! shutting down) in id order: partition `p`'s replicas are the `rf` brokers starting at
//! position `p mod n`, so leaders (the first replica) and followers spread evenly, and
//! CreatePartitions continues the rotation where the topic's partitions end. A replication
//! factor above the live brokers is INVALID_REPLICATION_FACTOR.

use std::collections::BTreeMap;

use shardlog_replica::ErrorCode;

use crate::controller::metadata::{BrokerMeta, ClusterMeta, PartitionMeta, TopicMeta, NO_LEADER};
use crate::controller::records::MetadataRecord;
use crate::wire::errors;

/// A refused admin operation: the error code and the optional message of the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub message: Option<String>,
}

impl Refusal {
    pub(crate) fn new(code: i16, message: impl Into<Option<String>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Most brokers a cluster may register (bounds the image and the session table).
pub const MAX_BROKERS: usize = 1024;

/// A BrokerRegistration request (KIP-631).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub id: i32,
    /// Random per process start.
    pub incarnation: u128,
    /// The advertised Kafka address.
    pub host: String,
    pub port: u16,
    /// KIP-966's clean-shutdown detection: the broker epoch this broker had when it last shut
    /// down cleanly (every log flushed), or -1 (crash, first start, or unknown).
    pub previous_epoch: i64,
}

/// A BrokerHeartbeat request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub id: i32,
    pub epoch: i64,
    /// The broker has applied the metadata log up to its registration (it may be unfenced).
    pub caught_up: bool,
    pub want_shutdown: bool,
}

/// The BrokerHeartbeat answer, as it holds once the decision's records are committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub error: i16,
    pub fenced: bool,
    pub shutdown_ok: bool,
}

/// An AlterPartition request for one partition (KIP-497; broker epochs per KIP-903).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterPartitionReq {
    pub topic: String,
    /// 0: not given (then the name decides).
    pub topic_id: u128,
    pub partition: u32,
    /// The requesting broker, which claims to be the leader.
    pub leader: i32,
    pub leader_epoch: i32,
    /// The requesting broker's epoch.
    pub broker_epoch: i64,
    pub partition_epoch: i32,
    /// The proposed ISR: broker id and the broker epoch it fetched with (-1: unknown).
    pub new_isr: Vec<(i32, i64)>,
}

/// One broker's session on the controller leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    epoch: i64,
    last_ms: u64,
    /// Renewed by the broker itself (registration or heartbeat) in this term, not only
    /// granted by [`Sessions::expire`] to a broker this controller has not heard from yet.
    heard: bool,
    /// Its process is gone: its controller port refused a connection after `last_ms` (see
    /// [`Sessions::expire_with`]). The session is over without waiting for the timeout.
    gone: bool,
}

/// The controller leader's heartbeat table: one entry per registered broker (entries of
/// brokers no longer in the image are dropped), plus the settings broker decisions need.
#[derive(Clone, Debug)]
pub struct Sessions {
    timeout_ms: u64,
    default_flush_every_batch: bool,
    table: BTreeMap<i32, Session>,
}

/// What happens to one partition.
#[derive(Clone, Debug)]
enum Event {
    /// The broker can no longer lead or be in the ISR (fenced, shutting down, replaced).
    Leave(i32),
    /// The broker restarted uncleanly and may have lost acknowledged records here.
    Lost(i32),
    /// Elect a leader if there is none (a broker became usable).
    Elect,
    /// The leader's proposed ISR.
    Isr(Vec<i32>),
}

impl Sessions {
    /// An empty table with the broker session timeout (Kafka's
    /// `broker.session.timeout.ms`). Until told otherwise
    /// ([`Sessions::default_flush_every_batch`]) a topic without explicit flush configs counts
    /// as not fsyncing every batch: the safe reading for the unclean-restart rule.
    pub fn new(session_timeout_ms: u64) -> Self {
        Self {
            timeout_ms: session_timeout_ms,
            default_flush_every_batch: false,
            table: BTreeMap::new(),
        }
    }

    /// Whether the broker's `default_flush` fsyncs every batch.
    #[must_use]
    pub fn default_flush_every_batch(mut self, yes: bool) -> Self {
        self.default_flush_every_batch = yes;
        self
    }

    pub fn session_timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// Number of sessions held (at most the registered brokers).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn alive(&self, id: i32, epoch: i64, now_ms: u64) -> bool {
        self.within_timeout(id, epoch, now_ms) && self.table.get(&id).is_some_and(|s| !s.gone)
    }

    /// The broker's session has not timed out (it may still be known to be gone).
    fn within_timeout(&self, id: i32, epoch: i64, now_ms: u64) -> bool {
        self.table.get(&id).is_some_and(|s| {
            s.epoch == epoch && now_ms.saturating_sub(s.last_ms) <= self.timeout_ms
        })
    }

    fn touch(&mut self, image: &ClusterMeta, id: i32, epoch: i64, now_ms: u64) {
        self.table.insert(
            id,
            Session {
                epoch,
                last_ms: now_ms,
                heard: true,
                gone: false,
            },
        );
        self.prune(image, Some(id));
    }

    /// Drops sessions of brokers the image does not have (keeping `keep`, registering now).
    fn prune(&mut self, image: &ClusterMeta, keep: Option<i32>) {
        if self.table.len() > image.brokers.len() + usize::from(keep.is_some()) {
            self.table
                .retain(|id, _| Some(*id) == keep || image.brokers.contains_key(id));
        }
    }

    /// BrokerRegistration: the new broker epoch and the records that register the broker
    /// (and, for a replaced incarnation or an unclean restart, the partition changes that
    /// follow). See the module docs for the rules.
    pub fn register(
        &mut self,
        image: &ClusterMeta,
        r: &Registration,
        now_ms: u64,
    ) -> Result<(i64, Vec<MetadataRecord>), Refusal> {
        if r.id < 0 {
            return Err(refusal(
                errors::INVALID_REQUEST,
                format!("broker id {} is negative", r.id),
            ));
        }
        if r.host.is_empty() || r.port == 0 {
            return Err(refusal(
                errors::INVALID_REQUEST,
                format!("broker {} registered without an address", r.id),
            ));
        }
        let existing = image.brokers.get(&r.id);
        if let Some(b) = existing {
            if b.incarnation == r.incarnation {
                if b.host != r.host || b.port != r.port {
                    return Err(refusal(
                        errors::INVALID_REQUEST,
                        format!(
                            "broker {} re-registered incarnation {:x} with another address",
                            r.id, r.incarnation
                        ),
                    ));
                }
                self.touch(image, r.id, b.epoch, now_ms);
                return Ok((b.epoch, Vec::new()));
            }
            if !b.fenced && self.alive(r.id, b.epoch, now_ms) {
                return Err(refusal(
                    errors::DUPLICATE_BROKER_REGISTRATION,
                    format!(
                        "broker {} is registered by another live incarnation (epoch {})",
                        r.id, b.epoch
                    ),
                ));
            }
        } else if image.brokers.len() >= MAX_BROKERS {
            return Err(refusal(
                errors::INVALID_REQUEST,
                format!("the cluster has {MAX_BROKERS} brokers registered, the most it takes"),
            ));
        }
        let epoch = image
            .brokers
            .values()
            .map(|b| b.epoch)
            .chain([i64::try_from(image.applied_index).unwrap_or(i64::MAX - 1)])
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let clean = existing.is_some_and(|b| r.previous_epoch >= 0 && r.previous_epoch == b.epoch);
        let mut work = Work::new(image);
        work.push(MetadataRecord::RegisterBroker {
            id: r.id,
            epoch,
            incarnation: r.incarnation,
            host: r.host.clone(),
            port: r.port,
        });
        // The old incarnation (or, in an image from before registration existed, the broker
        // the partitions name) stops leading until this one is unfenced.
        work.for_partitions(
            |p| p.leader == r.id || p.isr.contains(&r.id),
            Event::Leave(r.id),
        );
        if !clean {
            let every_batch = self.default_flush_every_batch;
            work.for_topics_partitions(
                |t, p| {
                    !flushes_every_batch(t, every_batch)
                        && (p.isr.contains(&r.id) || p.elr.contains(&r.id))
                },
                Event::Lost(r.id),
            );
        }
        self.touch(image, r.id, epoch, now_ms);
        Ok((epoch, work.out))
    }

    /// BrokerHeartbeat: renews the session, unfences a caught-up broker (electing it where
    /// partitions have no leader and it may lead), starts a controlled shutdown.
    pub fn heartbeat(
        &mut self,
        image: &ClusterMeta,
        hb: &Heartbeat,
        now_ms: u64,
    ) -> (HeartbeatAnswer, Vec<MetadataRecord>) {
        let Some(b) = image.brokers.get(&hb.id) else {
            return (
                answer(errors::BROKER_ID_NOT_REGISTERED, true, false),
                Vec::new(),
            );
        };
        if b.epoch != hb.epoch {
            return (
                answer(errors::STALE_BROKER_EPOCH, b.fenced, false),
                Vec::new(),
            );
        }
        self.touch(image, hb.id, hb.epoch, now_ms);
        let mut work = Work::new(image);
        if !hb.want_shutdown && b.shutting_down && !b.fenced {
            // Retired by `expire_with` for a refused connection, yet it is alive and does not
            // want to stop: take it back (it leads again only where a leader is missing).
            unfence(&mut work, b.id, b.epoch);
        } else if hb.want_shutdown {
            if !b.shutting_down {
                work.push(MetadataRecord::BrokerState {
                    id: b.id,
                    epoch: b.epoch,
                    fenced: b.fenced,
                    shutting_down: true,
                });
            }
            // Also when already shutting down: leaderships that could not move before may
            // move now, and a partition it still leads alone goes offline.
            work.for_partitions(
                |p| p.leader == b.id || p.isr.contains(&b.id),
                Event::Leave(b.id),
            );
        } else if b.fenced && !b.shutting_down && hb.caught_up {
            unfence(&mut work, b.id, b.epoch);
        }
        let shutdown_ok = hb.want_shutdown && !leads_anything(work.image(), hb.id);
        if shutdown_ok && !b.fenced {
            // As Kafka does once a shutting-down broker leads nothing: fence it, so the next
            // incarnation may register at once instead of waiting out this session.
            work.push(MetadataRecord::BrokerState {
                id: b.id,
                epoch: b.epoch,
                fenced: true,
                shutting_down: true,
            });
        }
        let fenced = work.image().brokers.get(&hb.id).is_none_or(|b| b.fenced);
        (answer(errors::NONE, fenced, shutdown_ok), work.out)
    }

    /// BrokerHeartbeat carrying the partitions whose log failed on the broker (`offline`:
    /// topic name and partition; a storage error on append or fsync, or a log that does not
    /// open): [`Sessions::heartbeat`], then on the image with its records
    /// [`offline_replicas`]. A broker reports them in every heartbeat while they are offline,
    /// so the decision is retried with the heartbeat and repeats nothing once carried out.
    pub fn heartbeat_reporting(
        &mut self,
        image: &ClusterMeta,
        hb: &Heartbeat,
        offline: &[(String, u32)],
        now_ms: u64,
    ) -> (HeartbeatAnswer, Vec<MetadataRecord>) {
        let (a, recs) = self.heartbeat(image, hb, now_ms);
        if a.error != errors::NONE || hb.want_shutdown {
            return (a, recs);
        }
        let mut work = Work::new(image);
        for r in recs {
            work.push(r);
        }
        let more = offline_replicas(work.image(), hb.id, offline);
        for r in more {
            work.push(r);
        }
        let fenced = work.image().brokers.get(&hb.id).is_none_or(|b| b.fenced);
        (answer(a.error, fenced, a.shutdown_ok), work.out)
    }

    /// Fences every unfenced broker whose session ran out by `now_ms`: it leaves the ISRs and
    /// its leaderships move. A live broker without a session (this controller just took over)
    /// gets one starting now.
    pub fn expire(&mut self, image: &ClusterMeta, now_ms: u64) -> Vec<MetadataRecord> {
        self.expire_with(image, now_ms, &BTreeMap::new())
    }

    /// [`Sessions::expire`], told which brokers' controller ports refused a connection and
    /// since when (`refused`: broker id -> the time of the first refusal since the last
    /// successful connection). A refused connection means no process listens there: the
    /// broker is dead (kill -9, crash, restarting), so its session is over at once, without
    /// waiting out the timeout, unless the broker registered or heartbeated after the refusal
    /// (a new process, or the same one reachable again). A broker this controller has not heard
    /// from in its term (it just took over) counts as not heard after the refusal. A paused
    /// or partitioned broker refuses nothing and is fenced by the timeout as before.
    ///
    /// Such a broker is *retired* at once, as a controlled shutdown does (shutting down,
    /// still unfenced: it leaves the ISRs and its leaderships move, nothing elects it) and
    /// fenced when its session times out. It stays in Metadata's broker list meanwhile: a
    /// client (librdkafka) that sees the new leader and the old leader's disappearance in the
    /// same answer drops the partition to "no leader" until its next scan, a second later.
    /// A new incarnation may register at once (the gone session is not alive); a heartbeat
    /// of the same one without a shutdown request takes it back (see `heartbeat`).
    pub fn expire_with(
        &mut self,
        image: &ClusterMeta,
        now_ms: u64,
        refused: &BTreeMap<i32, u64>,
    ) -> Vec<MetadataRecord> {
        self.prune(image, None);
        for b in image.brokers.values() {
            match self.table.get(&b.id) {
                Some(s) if s.epoch == b.epoch => {}
                _ => {
                    self.table.insert(
                        b.id,
                        Session {
                            epoch: b.epoch,
                            last_ms: now_ms,
                            heard: false,
                            gone: false,
                        },
                    );
                }
            }
        }
        for (id, since) in refused {
            if let Some(s) = self.table.get_mut(id) {
                if !s.heard || s.last_ms < *since {
                    s.gone = true;
                }
            }
        }
        let expired: Vec<i32> = image
            .brokers
            .values()
            .filter(|b| !b.fenced && !self.within_timeout(b.id, b.epoch, now_ms))
            .map(|b| b.id)
            .collect();
        let retired: Vec<i32> = image
            .brokers
            .values()
            .filter(|b| {
                !b.fenced
                    && !b.shutting_down
                    && self.within_timeout(b.id, b.epoch, now_ms)
                    && !self.alive(b.id, b.epoch, now_ms)
            })
            .map(|b| b.id)
            .collect();
        let mut work = Work::new(image);
        // Retired: out of service (shutting down) but not fenced until its session ends.
        for id in retired {
            take_out(&mut work, id, |_| (false, true));
        }
        for id in expired {
            take_out(&mut work, id, |b| (true, b.shutting_down));
        }
        work.out
    }
}

/// Partitions with no leader that a usable replica may lead, and partitions led by a broker
/// that may not lead (fenced, shutting down, unregistered): the changes that bring them in
/// line. A new controller leader runs this once, so a decision whose records were only partly
/// committed before a failover cannot leave a fenced leader behind.
pub fn repair(image: &ClusterMeta) -> Vec<MetadataRecord> {
    let mut work = Work::new(image);
    let bad: Vec<i32> = {
        let mut ids: Vec<i32> = image
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader != NO_LEADER && !usable(image, p.leader))
            .map(|p| p.leader)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    for id in bad {
        work.for_partitions(|p| p.leader == id, Event::Leave(id));
    }
    work.for_partitions(|p| p.leader == NO_LEADER, Event::Elect);
    work.out
}

/// A broker's offline replicas (KIP-858's offline log directories, per partition here):
/// `offline` lists the partitions whose log failed on broker `id` (name, partition). Each of
/// them it leads or is in the ISR of is treated as if the broker were fenced for that
/// partition alone: it leaves the ISR and a new leader is elected from the remaining ISR,
/// else from the ELR (new leader epoch, partition epoch plus one); as the last ISR member it
/// stays as the last known ISR and the partition goes offline (leader -1, no unclean
/// election). The ELR is kept: the replica's log is still what it was when it failed.
///
/// A usable broker's replica that is no longer reported offline (its log opened again) may
/// lead the partitions of which it is in the ISR or ELR and that have no leader, as on
/// unfencing. Names or partitions the image does not have, or of which the broker holds no
/// replica, are ignored (a topic deleted meanwhile).
pub fn offline_replicas(
    image: &ClusterMeta,
    id: i32,
    offline: &[(String, u32)],
) -> Vec<MetadataRecord> {
    let mut work = Work::new(image);
    if !image.brokers.contains_key(&id) {
        return work.out;
    }
    let reported: std::collections::BTreeSet<(&str, u32)> =
        offline.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    work.for_each_partition(|image, t, i, p| {
        if !p.replicas.contains(&id) {
            return None;
        }
        if reported.contains(&(t.name.as_str(), i)) {
            (p.leader == id || p.isr.contains(&id)).then_some(Event::Leave(id))
        } else if p.leader == NO_LEADER
            && (p.isr.contains(&id) || p.elr.contains(&id))
            && usable(image, id)
        {
            Some(Event::Elect)
        } else {
            None
        }
    });
    work.out
}

/// AlterPartition for one partition: the `PartitionChange` to commit, or the error code (see
/// the module docs for the checks and their order).
pub fn alter_partition(
    image: &ClusterMeta,
    req: &AlterPartitionReq,
) -> Result<MetadataRecord, i16> {
    let Some(topic) = image.topics.get(&req.topic) else {
        return Err(errors::UNKNOWN_TOPIC_OR_PARTITION);
    };
    if req.topic_id != 0 && req.topic_id != topic.id {
        return Err(errors::UNKNOWN_TOPIC_ID);
    }
    let Some(p) = topic.partitions.get(req.partition as usize) else {
        return Err(errors::UNKNOWN_TOPIC_OR_PARTITION);
    };
    if req.leader_epoch > p.leader_epoch || req.partition_epoch > p.partition_epoch {
        return Err(errors::NOT_CONTROLLER);
    }
    if req.leader_epoch < p.leader_epoch {
        return Err(ErrorCode::FencedLeaderEpoch.code());
    }
    if image
        .brokers
        .get(&req.leader)
        .is_none_or(|b| b.epoch != req.broker_epoch)
    {
        return Err(errors::STALE_BROKER_EPOCH);
    }
    if req.leader != p.leader {
        return Err(ErrorCode::NotLeaderOrFollower.code());
    }
    if req.partition_epoch < p.partition_epoch {
        return Err(errors::INVALID_UPDATE_VERSION);
    }
    let mut isr: Vec<i32> = Vec::with_capacity(req.new_isr.len());
    for &(id, _) in &req.new_isr {
        if isr.contains(&id) || !p.replicas.contains(&id) {
            return Err(errors::INVALID_REQUEST);
        }
        isr.push(id);
    }
    if !isr.contains(&p.leader) {
        return Err(errors::INVALID_REQUEST);
    }
    for &(id, epoch) in &req.new_isr {
        let eligible = image
            .brokers
            .get(&id)
            .is_some_and(|b| !b.fenced && !b.shutting_down && (epoch == -1 || epoch == b.epoch));
        if !eligible {
            return Err(errors::INELIGIBLE_REPLICA);
        }
    }
    // Kept in assignment order, like every ISR the controller writes.
    let isr: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| isr.contains(r))
        .collect();
    match next_state(image, topic, p, Event::Isr(isr)) {
        Some(next) => Ok(change_record(topic, req.partition, &next)),
        // The proposal is the ISR the partition has: the replica core never sends one (it
        // proposes additions and removals against the ISR of this partition epoch).
        None => Err(errors::INVALID_REQUEST),
    }
}

/// Replica assignments for `partitions` new partitions numbered from `first_partition`, with
/// `rf` replicas each, round-robin over the live brokers (see the module docs).
pub fn place(
    image: &ClusterMeta,
    partitions: u32,
    rf: u16,
    first_partition: u32,
) -> Result<Vec<Vec<i32>>, Refusal> {
    let live: Vec<i32> = image
        .brokers
        .values()
        .filter(|b| !b.fenced && !b.shutting_down)
        .map(|b| b.id)
        .collect();
    if rf == 0 {
        return Err(refusal(
            errors::INVALID_REPLICATION_FACTOR,
            "replication factor must be at least 1".to_string(),
        ));
    }
    if usize::from(rf) > live.len() {
        return Err(refusal(
            errors::INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor {rf} is larger than the {} available (registered, unfenced) broker(s)",
                live.len()
            ),
        ));
    }
    let n = live.len() as u64;
    Ok((0..partitions)
        .map(|i| {
            let start = u64::from(first_partition) + u64::from(i);
            (0..u64::from(rf))
                .map(|j| live[((start + j) % n) as usize])
                .collect()
        })
        .collect())
}

/// Whether a topic fsyncs every batch: `flush.messages=1` or `flush.ms=0`; any other explicit
/// flush setting does not; neither set means the broker default (the mapping of
/// [`crate::controller::metadata::log_config`]).
pub fn flushes_every_batch(t: &TopicMeta, default_every_batch: bool) -> bool {
    let get = |k: &str| t.configs.get(k).and_then(|v| v.parse::<i64>().ok());
    match (get("flush.messages"), get("flush.ms")) {
        (Some(1), _) | (_, Some(0)) => true,
        (None, None) => default_every_batch,
        _ => false,
    }
}

/// `min(min.insync.replicas, replication factor)`, at least 1: the ISR size below which the
/// replica core holds the high watermark (its `effective_min_isr`).
pub fn effective_min_isr(t: &TopicMeta, replicas: usize) -> usize {
    let configured = t
        .configs
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1);
    configured.min(replicas).max(1)
}

fn refusal(code: i16, message: String) -> Refusal {
    Refusal {
        code,
        message: Some(message),
    }
}

fn answer(error: i16, fenced: bool, shutdown_ok: bool) -> HeartbeatAnswer {
    HeartbeatAnswer {
        error,
        fenced,
        shutdown_ok,
    }
}

/// May lead and be in an ISR: registered, unfenced, not shutting down.
fn usable(image: &ClusterMeta, id: i32) -> bool {
    image
        .brokers
        .get(&id)
        .is_some_and(|b| !b.fenced && !b.shutting_down)
}

/// Takes broker `id` (in `epoch`) back into service: unfenced, not shutting down, and
/// elected where a partition it may lead (ISR or ELR member) has no leader.
fn unfence(work: &mut Work<'_>, id: i32, epoch: i64) {
    work.push(MetadataRecord::BrokerState {
        id,
        epoch,
        fenced: false,
        shutting_down: false,
    });
    work.for_partitions(
        |p| p.leader == NO_LEADER && (p.isr.contains(&id) || p.elr.contains(&id)),
        Event::Elect,
    );
}

/// Takes broker `id` out of service with the (fenced, shutting_down) state `state` gives for
/// its current registration, moving its leaderships and removing it from every ISR.
fn take_out(work: &mut Work<'_>, id: i32, state: impl Fn(&BrokerMeta) -> (bool, bool)) {
    let Some(b) = work.image().brokers.get(&id).cloned() else {
        return;
    };
    let (fenced, shutting_down) = state(&b);
    work.push(MetadataRecord::BrokerState {
        id,
        epoch: b.epoch,
        fenced,
        shutting_down,
    });
    work.for_partitions(|p| p.leader == id || p.isr.contains(&id), Event::Leave(id));
}

fn leads_anything(image: &ClusterMeta, id: i32) -> bool {
    image
        .topics
        .values()
        .any(|t| t.partitions.iter().any(|p| p.leader == id))
}

fn change_record(t: &TopicMeta, partition: u32, p: &PartitionMeta) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        name: t.name.clone(),
        id: t.id,
        partition,
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        elr: p.elr.clone(),
    }
}

/// `xs` in the order of `replicas`, keeping those `keep` accepts.
fn in_order(replicas: &[i32], keep: impl Fn(i32) -> bool) -> Vec<i32> {
    replicas.iter().copied().filter(|&r| keep(r)).collect()
}

/// The partition's next state after `ev`, or `None` when nothing changes. Leader and ISR per
/// the module docs; the leader epoch grows when the leader changes, the partition epoch with
/// every change.
fn next_state(
    image: &ClusterMeta,
    t: &TopicMeta,
    cur: &PartitionMeta,
    ev: Event,
) -> Option<PartitionMeta> {
    let m = effective_min_isr(t, cur.replicas.len());
    let mut isr = cur.isr.clone();
    let mut elr = cur.elr.clone();
    let mut lost = None;
    let mut gone = None;
    match ev {
        Event::Leave(b) => {
            gone = Some(b);
            if isr.contains(&b) && isr.len() > 1 {
                isr.retain(|&r| r != b);
            }
        }
        Event::Lost(b) => {
            // The only replica left that may hold the committed records stays (see the
            // module docs: the last replica standing).
            if isr.iter().chain(&elr).any(|&r| r != b) {
                lost = Some(b);
                elr.retain(|&r| r != b);
                isr.retain(|&r| r != b);
            }
        }
        Event::Elect => {}
        Event::Isr(new) => isr = new,
    }
    let elr_for = |isr: &[i32], elr: &[i32], old_isr: &[i32]| -> Vec<i32> {
        if isr.len() >= m {
            Vec::new()
        } else {
            in_order(&cur.replicas, |r| {
                (elr.contains(&r) || old_isr.contains(&r)) && !isr.contains(&r) && Some(r) != lost
            })
        }
    };
    elr = elr_for(&isr, &elr, &cur.isr);
    let can_lead = |r: i32| Some(r) != gone && usable(image, r);
    let mut leader = if cur.leader != NO_LEADER && isr.contains(&cur.leader) && can_lead(cur.leader)
    {
        cur.leader
    } else {
        NO_LEADER
    };
    if leader == NO_LEADER {
        if let Some(&r) = cur
            .replicas
            .iter()
            .find(|&&r| isr.contains(&r) && can_lead(r))
        {
            leader = r;
        } else if let Some(&r) = cur
            .replicas
            .iter()
            .find(|&&r| elr.contains(&r) && can_lead(r))
        {
            leader = r;
            let old_isr = std::mem::replace(&mut isr, vec![r]);
            elr = elr_for(&isr, &elr, &old_isr);
        }
    }
    if leader == cur.leader && isr == cur.isr && elr == cur.elr {
        return None;
    }
    Some(PartitionMeta {
        leader,
        leader_epoch: if leader == cur.leader {
            cur.leader_epoch
        } else {
            cur.leader_epoch.saturating_add(1)
        },
        partition_epoch: cur.partition_epoch.saturating_add(1),
        replicas: cur.replicas.clone(),
        isr,
        elr,
    })
}

/// A decision in progress: the records so far and, once there is one, the image with them
/// applied (cloned on the first record, so a decision that changes nothing copies nothing).
struct Work<'a> {
    base: &'a ClusterMeta,
    image: Option<ClusterMeta>,
    out: Vec<MetadataRecord>,
}

impl<'a> Work<'a> {
    fn new(base: &'a ClusterMeta) -> Self {
        Self {
            base,
            image: None,
            out: Vec::new(),
        }
    }

    fn image(&self) -> &ClusterMeta {
        self.image.as_ref().unwrap_or(self.base)
    }

    fn push(&mut self, rec: MetadataRecord) {
        self.image
            .get_or_insert_with(|| self.base.clone())
            .apply(&rec);
        self.out.push(rec);
    }

    fn for_partitions(&mut self, which: impl Fn(&PartitionMeta) -> bool, ev: Event) {
        self.for_topics_partitions(|_, p| which(p), ev);
    }

    /// Applies `ev` to every partition `which` selects, in topic and partition order.
    fn for_topics_partitions(
        &mut self,
        which: impl Fn(&TopicMeta, &PartitionMeta) -> bool,
        ev: Event,
    ) {
        self.for_each_partition(|_, t, _, p| which(t, p).then(|| ev.clone()));
    }

    /// Applies to every partition, in topic and partition order, the event `choose` picks
    /// for it (none: left as it is), all chosen against the image as it was before.
    fn for_each_partition(
        &mut self,
        choose: impl Fn(&ClusterMeta, &TopicMeta, u32, &PartitionMeta) -> Option<Event>,
    ) {
        let changes: Vec<MetadataRecord> = {
            let image = self.image();
            image
                .topics
                .values()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .enumerate()
                        .filter_map(|(i, p)| {
                            let i = u32::try_from(i).ok()?;
                            let ev = choose(image, t, i, p)?;
                            next_state(image, t, p, ev).map(|next| change_record(t, i, &next))
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        for rec in changes {
            self.push(rec);
        }
    }
}

#[cfg(test)]
mod tests;
