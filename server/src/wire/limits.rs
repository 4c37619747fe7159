//! Broker-wide connection admission: `max_connections` in total and
//! `max_connections_per_ip` per client address.
//!
//! Every shard accepts on its own `SO_REUSEPORT` socket, so the counts are shared by all
//! shards behind one mutex; it is taken once per accept and once per close, never on the
//! request path. An admitted connection holds a [`Ticket`] that gives its place back when
//! dropped, however the connection ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("max_connections ({0}) reached")]
    Total(usize),
    #[error("max_connections_per_ip ({limit}) reached for {ip}")]
    PerIp { ip: IpAddr, limit: usize },
}

#[derive(Default)]
struct Counts {
    open: usize,
    by_ip: HashMap<IpAddr, usize>,
}

pub struct ConnectionLimits {
    total: usize,
    /// 0: no per-address limit.
    per_ip: usize,
    counts: Mutex<Counts>,
}

/// One admitted connection; dropping it releases the place.
pub struct Ticket {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(total: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_ip,
            counts: Mutex::new(Counts::default()),
        })
    }

    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        // The counts stay consistent even if a holder panicked: every update is one step.
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if c.open >= self.total {
            return Err(Refusal::Total(self.total));
        }
        let from_ip = c.by_ip.get(&ip).copied().unwrap_or(0);
        if self.per_ip > 0 && from_ip >= self.per_ip {
            return Err(Refusal::PerIp {
                ip,
                limit: self.per_ip,
            });
        }
        c.open += 1;
        c.by_ip.insert(ip, from_ip + 1);
        Ok(Ticket {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open broker-wide.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self
            .limits
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.open = c.open.saturating_sub(1);
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn per_ip_limit_counts_each_address_and_releases_on_drop() {
        let l = ConnectionLimits::new(10, 2);
        let a1 = l.try_admit(ip(1)).unwrap();
        let _a2 = l.try_admit(ip(1)).unwrap();
        assert_eq!(
            l.try_admit(ip(1)).err(),
            Some(Refusal::PerIp {
                ip: ip(1),
                limit: 2
            })
        );
        // Another address is not affected.
        let _b1 = l.try_admit(ip(2)).unwrap();
        assert_eq!(l.open(), 3);
        drop(a1);
        assert_eq!(l.open(), 2);
        let _a3 = l.try_admit(ip(1)).unwrap();
    }

    #[test]
    fn total_limit_applies_across_addresses_and_zero_per_ip_means_unlimited() {
        let l = ConnectionLimits::new(3, 0);
        let t: Vec<_> = (1..=3).map(|i| l.try_admit(ip(i)).unwrap()).collect();
        assert_eq!(l.try_admit(ip(9)).err(), Some(Refusal::Total(3)));
        drop(t);
        assert_eq!(l.open(), 0);
        let same: Vec<_> = (0..3).map(|_| l.try_admit(ip(1)).unwrap()).collect();
        assert_eq!(same.len(), 3);
        assert!(l.counts.lock().unwrap().by_ip.len() == 1);
        drop(same);
        assert!(l.counts.lock().unwrap().by_ip.is_empty());
    }
}
