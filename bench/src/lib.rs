//! shardlog-bench: a load generator for Kafka-compatible brokers that measures throughput and
//! tail latency (publish and end-to-end) with HdrHistogram.
#![warn(missing_docs)]

pub mod dist;
pub mod experiment;
pub mod guarantees;
pub mod lab;
pub mod lab_files;
pub mod lab_report;
pub mod plot;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;
