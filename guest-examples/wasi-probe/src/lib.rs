//! A plugin built for `wasm32-wasip2`, as components from other toolchains
//! are: through Rust's std it imports WASI (clocks, random, environment,
//! files, stdout). Its `probe` operator reports what it saw, so that tests can
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

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "wasi:clocks/wall-clock@0.2.0")]
unsafe extern "C" {
    /// WASI's `now`, which the host writes through `ret` (guest memory).
    #[link_name = "now"]
    fn wall_now(ret: *mut u8);
}

/// Asks WASI for the time with its return area inside its own input, and
/// keeps every line: the host writes the answer into the input from its
/// own code, which is why it never lends to WASI plugins.
#[dstream::filter]
pub fn clobber(line: &[u8]) -> bool {
    #[cfg(target_arch = "wasm32")]
    {
        let p = (line.as_ptr() as usize + 8) & !7;
        // SAFETY: none; a plugin pointing the host at its input.
        unsafe { wall_now(p as *mut u8) };
    }
    let _ = line;
    true
}

dstream::plugin!(probe, clobber);
