"""Network-fault harness for shardlog clusters: each broker in its own network namespace,
connected through a router namespace whose routing rules drop traffic between chosen nodes.

See `netfault.cluster` (the harness) and docs/RELIABILITY.md, section "Network partitions and
power loss in a cluster"."""
