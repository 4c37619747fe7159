fn main() { eprintln!("shardlog-bench: not built yet"); std::process::exit(2); }
