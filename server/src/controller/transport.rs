//! The controller listener's transport (see `crate::controller::quorum`).

use shardlog_quorum::Voter;

use crate::config::BrokerConfig;

/// The voters configured for this broker (empty: it is its own sole voter).
pub fn voters(_cfg: &BrokerConfig) -> Vec<Voter> {
    Vec::new()
}
