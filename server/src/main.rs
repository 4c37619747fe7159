fn main() {
    eprintln!("shardlog: the broker is not built yet");
    std::process::exit(2);
}
