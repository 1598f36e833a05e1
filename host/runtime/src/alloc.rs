//! The memory allocator the `dstream` processes run with: mimalloc, told to
//! keep the memory a batch frees for the next batch.
//!
//! Every batch allocates its partitions afresh (tens to hundreds of MiB at
//! high rates) and frees them when the next batch no longer needs them. By
//! default mimalloc gives freed memory back to the kernel ("purges" it), so
//! later batches fault pages in again and the kernel zeroes them: at a
//! 100 ms interval that was a fifth of the engine's time in Grep (`engine`
//! bench on a 2-vCPU Xeon VM, 2026-12-07: 26.6-31.6 M rec/s sustained with
//! mimalloc's defaults against 34.7-36.7 M with purging off; WordCount
//! 6.29 M against 6.83 M). Purging later (`MIMALLOC_PURGE_DELAY` of 1 s,
//! mimalloc 3's default, or 10 s) measured like the default; only no
//! purging helped. The price: the process keeps its peak heap (maximum
//! resident size 315 MiB -> 423 MiB in that WordCount run); freed memory is
//! still reused by later allocations.
//!
//! A binary opts in with both lines:
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: dstream_runtime::alloc::Allocator = dstream_runtime::alloc::Allocator;
//!
//! fn main() {
//!     dstream_runtime::alloc::retain_freed_memory();
//!     // ...
//! }
//! ```

/// The global allocator of the `dstream` binaries (mimalloc).
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, the same
/// in mimalloc 2 and 3; the Rust bindings do not name it): milliseconds
/// before freed memory goes back to the kernel, -1 for never.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The environment variable through which mimalloc users set the same
/// option; when it is set, it wins.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Tells mimalloc never to give freed memory back to the kernel (unless
/// `MIMALLOC_PURGE_DELAY` says otherwise), so that each batch reuses the
/// pages the batches before it freed. Call it first thing in `main`; it
/// matters only to a process whose global allocator is [`Allocator`].
pub fn retain_freed_memory() {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: mimalloc's options may be set at any time, from any
        // thread; this one only decides when free memory is purged.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purging_is_turned_off() {
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            return;
        }
        // SAFETY: reading an option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        // mimalloc's default purge delay, 1000 ms in mimalloc 3 (the one
        // built) and 10 ms in mimalloc 2: option 15 is the one.
        assert!(matches!(get(), 10 | 1000), "option 15 is {}", get());
        retain_freed_memory();
        assert_eq!(get(), -1);
    }
}
