//! Hostile operators: test fixtures for the sandbox, not examples to follow.
//! Each misbehaves in one way the host must contain.

use std::hint::black_box;

/// Never returns (the host's deadline must stop it).
#[dstream::map]
pub fn spin(line: &[u8]) -> Vec<u8> {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(line.len() as u64 + 1));
        if black_box(n) == 0 {
            return line.to_vec();
        }
    }
}

/// Allocates without end (the host's memory limit must stop it).
#[dstream::map]
pub fn hog(line: &[u8]) -> Vec<u8> {
    let mut v: Vec<Vec<u8>> = Vec::new();
    loop {
        v.push(vec![1u8; 1 << 20]);
        if black_box(&v).len() == usize::MAX {
            return line.to_vec();
        }
    }
}

/// Executes `unreachable` when a line says "trap".
#[dstream::map]
pub fn trap(line: &str) -> String {
    if line == "trap" {
        #[cfg(target_arch = "wasm32")]
        core::arch::wasm32::unreachable();
        #[cfg(not(target_arch = "wasm32"))]
        std::process::abort();
    }
    line.to_string()
}

/// Panics with a message when a line says "boom".
#[dstream::map]
pub fn boom(line: &str) -> String {
    if line == "boom" {
        panic!("boom at {line:?}");
    }
    line.to_string()
}

/// Fails with an error (not a trap) on lines containing "bad".
#[dstream::map]
pub fn fail(line: &str) -> Result<String, String> {
    if line.contains("bad") {
        return Err(format!("refusing {line:?}"));
    }
    Ok(line.to_string())
}

/// Logs a lot: the host must cap it.
#[dstream::map]
pub fn chatty(line: &str) -> String {
    for i in 0..100_000 {
        dstream::log(dstream::Level::Info, &format!("chatter {i}"));
    }
    line.to_string()
}

/// Writes into its input with a store (which a host may have lent,
/// copy-on-write) and keeps every line.
#[dstream::filter]
pub fn scribble(line: &[u8]) -> bool {
    if !line.is_empty() {
        // SAFETY: none; a hostile plugin writing through a shared borrow.
        unsafe { std::ptr::write_volatile(line.as_ptr().cast_mut(), b'#') };
    }
    true
}

/// Overwrites its input with bulk-memory instructions (`memory.fill`,
/// then `memory.copy`, which wasmtime runs in host code) and keeps a line
/// only if it then reads back what it wrote: with a copy, or with lent
/// copy-on-write pages, it keeps every line.
#[dstream::filter]
pub fn smear(line: &[u8]) -> bool {
    let n = line.len();
    if n == 0 {
        return true;
    }
    // Laundered, so the compiler cannot see the writes go through a shared
    // borrow (and drop them).
    let p = std::hint::black_box(line.as_ptr().cast_mut());
    // SAFETY: none; a hostile plugin writing through a shared borrow
    // (lengths unknown at compile time: bulk-memory instructions).
    unsafe {
        std::ptr::write_bytes(p, b'#', n);
        std::ptr::copy(p, p.add(n / 2), n - n / 2);
    }
    // SAFETY: as above; the reads must not be folded away.
    (0..n).all(|i| unsafe { std::ptr::read_volatile(p.add(i)) } == b'#')
}

/// Returns a filter selection that is out of order (the host must reject it).
/// Built by hand: the attributes cannot produce a bad selection.
pub mod bad_select {
    pub use dstream::Unfused as __Stage;
    /// The operator.
    pub const OPERATOR: dstream::Operator = dstream::Operator {
        name: "bad_select",
        kind: dstream::Kind::Filter,
        description: "returns indices 1..=n for n records: the last is past the end",
        params: <() as dstream::Params>::specs,
        input: (dstream::Encoding::None, dstream::Encoding::Bytes),
        output: (dstream::Encoding::None, dstream::Encoding::Bytes),
        runner: dstream::Runner::Select(run),
    };
    fn run(
        input: dstream::Records<'_>,
        _: &dstream::RawParams<'_>,
        keep: &mut Vec<u32>,
    ) -> Result<(), dstream::OpError> {
        keep.extend(1..=input.len() as u32);
        Ok(())
    }
}

dstream::plugin!(
    spin, hog, trap, boom, fail, chatty, scribble, smear, bad_select
);
