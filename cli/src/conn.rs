//! The connection options every cluster command shares, and how they become a client.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use shardlog_client::{Client, ClientConfig};

use crate::error::{CliError, CliResult};
use crate::output::Format;
use crate::profile;

/// Options shared by every command that talks to a cluster.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// Bootstrap brokers, comma-separated [default: --profile, $SHARDLOG_BROKERS,
    /// $SHARDLOG_PROFILE, the profile file's current profile, then 127.0.0.1:9092].
    #[arg(long, short = 'b', value_name = "HOST:PORT[,...]", global = true)]
    pub brokers: Option<String>,
    /// Take the brokers from this profile of ~/.config/shardlog/cli.toml.
    #[arg(long, value_name = "NAME", global = true)]
    pub profile: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// How long one request may take, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS", global = true)]
    pub timeout_ms: u64,
}

impl Conn {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// The broker list and where it came from (flags, environment, profile file).
    pub fn resolve(&self) -> CliResult<profile::Resolved> {
        profile::resolve(self.brokers.as_deref(), self.profile.as_deref(), &|k| {
            std::env::var(k).ok()
        })
    }

    /// Connects to the first reachable bootstrap broker.
    pub async fn connect(&self) -> Result<Arc<Client>, CliError> {
        let resolved = self.resolve()?;
        let mut cfg = ClientConfig::new(resolved.brokers.clone());
        if cfg.bootstrap.is_empty() {
            return Err(CliError::Usage(format!(
                "the broker list is empty ({})",
                resolved.source
            )));
        }
        cfg.conn.client_id = "shardlog-cli".into();
        cfg.conn.connect_timeout = self.timeout().min(Duration::from_secs(10));
        cfg.conn.request_timeout = self.timeout();
        Client::connect(cfg).await.map(Arc::new).map_err(|e| {
            CliError::Failed(format!(
                "cannot reach the cluster at {} ({}): {e}\n{}",
                resolved.brokers,
                resolved.source,
                resolved.hint()
            ))
        })
    }
}
