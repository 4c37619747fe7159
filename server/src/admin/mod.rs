//! The admin HTTP listener: `/metrics` (Prometheus text gathered from every shard at scrape
//! time) and `/health`.

pub mod http;
