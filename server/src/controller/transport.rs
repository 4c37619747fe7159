//! The controller listener's transport (see `crate::controller::quorum`).

use shardlog_quorum::Voter;

use crate::config::BrokerConfig;

/// The voters configured for this broker (empty: it is its own sole voter). The string was
/// checked when the configuration was loaded.
pub fn voters(cfg: &BrokerConfig) -> Vec<Voter> {
    cfg.voters
        .as_deref()
        .and_then(|v| shardlog_quorum::parse_voters(v).ok())
        .unwrap_or_default()
}
