//! A plugin built for `wasm32-wasip2`, as components from other toolchains
//! are: through Rust's std it imports WASI (clocks, random, environment,
//! files, stdout). Its one operator reports what it saw, so that tests can
//! check the host's deterministic stand-ins: a frozen clock, randomness
//! seeded by the host, no environment, no files, stdout discarded.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends to each line what the plugin sees of the world: the wall clock
/// (seconds since 1970) after sleeping an hour, a hash seeded from WASI
/// randomness, whether `HOME` is set, the arguments, and whether `/` can be
/// listed.
#[dstream::map]
#[allow(clippy::print_stdout)] // on purpose: the host must discard it
pub fn probe(line: &str) -> String {
    println!("stdout goes nowhere: {line}");
    // Under the frozen clock, a sleep returns at once.
    std::thread::sleep(std::time::Duration::from_secs(3600));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(-1, |d| d.as_secs() as i64);
    let hash = RandomState::new().hash_one(line);
    let home = std::env::var("HOME").is_ok();
    let args = std::env::args().count();
    let files = std::fs::read_dir("/").is_ok();
    format!("{line} time={now} hash={hash:016x} home={home} args={args} files={files}")
}

dstream::plugin!(probe);
