//! Zero-copy input: a partition whose pages the host lends to a guest.
//!
//! Copying a partition into guest memory reads it from main memory once
//! more than a native operator does (grep: the copy was ~45% of the Wasm
//! time). A [`PagedBatch`] keeps its bytes in pages of their own, read-only;
//! for a call, the host moves those pages into a region the guest set aside
//! (`lend` in the contract) and back out afterwards, with Linux `mremap`:
//! page tables move, no byte is copied and no page faults in again.
//! Measured without Wasm (`cargo run --release -p dstream-benches --bin
//! lending`, benches/README.md): before a search over 10 MiB partitions,
//! moving the pages in and back added 13-25% to the search alone, copying
//! them 51-64%, and mapping them from a memfd (a page-table entry built per
//! 4 KiB page on every call) 240-270%.
//!
//! **Experimental, off by default** ([`Limits::lend_input`](crate::Limits::lend_input)):
//! wasmtime runs `memory.fill`, `memory.copy` and `memory.init` in host
//! code (libcalls), so a plugin that writes into its lent, read-only input
//! with one of them faults in host code and the process dies instead of
//! trapping (found by review, reproduced; Rust's wasm32 std emits these
//! instructions for every `memcpy`/`memset`). Only scalar stores trap. The
//! way out, not built yet: lend private copy-on-write pages of a memfd
//! (guest writes land in private copies, found afterwards through
//! `/proc/self/pagemap` and dropped), so that no write can fault.
//!
//! Safety otherwise rests on these points (host/wasm/tests/hostile.rs tries each).
//! The region is checked to lie inside the instance's memory (two lists,
//! checked by wasmtime like any list), 64 KiB-aligned and as long as asked.
//! Pool memories never move (`memory_may_move(false)`), so its address
//! holds for the call. The guest's own pages in the region are moved aside
//! first and put back after, so its memory ends as it was even if the
//! region covered its data image (which wasmtime's reset would otherwise
//! not restore). The partition's pages stay read-only in the sandbox, so a
//! plugin cannot change them: a store traps. While pages are lent, only
//! calls whose arguments are numbers run, and plugins with WASI imports
//! (whose results wasmtime writes into guest memory) are never lent to:
//! nothing writes into the sandbox from host code, where a read-only page
//! would crash the process instead of trapping. Moves that leave a range
//! keep it mapped (`MREMAP_DONTUNMAP`) while anything could still be placed
//! there, and nothing is charged to the commit limit (`MAP_NORESERVE`); a
//! failure to put pages back aborts the process rather than leave the
//! sandbox holding host memory. And wasmtime is built without its
//! `memory-protection-keys` feature: moved pages keep the host's key, which
//! under MPK striping any instance of the pool could read.
//!
//! Cheap lending also needs wasmtime's `pagemap_scan` reset (Linux 6.7 and
//! later): it resets only the pages an instance wrote. Without it, the pool
//! zeroes the first `keep_resident` bytes of a memory with memset, which
//! faults the (untouched) region in after every call: still correct, but
//! slower than a copy.

use std::ffi::c_void;
use std::ptr::NonNull;

use dstream_core::Batch;
use rustix::mm::{MapFlags, MprotectFlags, MremapFlags, ProtFlags};

use crate::Error;

/// Alignment and granule of lent ranges: a Wasm page, which is a multiple of
/// the host's page size on every platform wasmtime supports.
pub(crate) const LEND_ALIGN: usize = 64 << 10;

/// Records per lend are cut into windows of at most this many bytes (or
/// the limits' [`call_input`](crate::Limits::call_input), when smaller), so
/// the region a guest sets aside stays small next to its memory limit.
pub(crate) const LEND_BYTES: usize = 8 << 20;

/// A partition whose data buffer lives in pages of its own (an anonymous
/// mapping, read-only once filled), so that
/// [`Plugin::filter_lent`](crate::Plugin::filter_lent) can lend its pages to
/// a guest instead of copying them. Linux only.
///
/// ```
/// use dstream_core::Batch;
/// use dstream_wasm::PagedBatch;
///
/// let b: Batch = [("", "a needle"), ("", "hay")].into_iter().collect();
/// let paged = PagedBatch::new(&b).expect("memory for its pages");
/// assert_eq!(paged.to_batch(), b);
/// ```
pub struct PagedBatch {
    /// Start of the mapping (page-aligned); the data is its first `bytes`.
    pages: NonNull<u8>,
    /// Length of the mapping: `bytes` rounded up to [`LEND_ALIGN`], at least
    /// one.
    map_len: usize,
    /// Length of the data buffer.
    bytes: usize,
    bounds: Vec<u32>,
}

// SAFETY: the mapping is owned, immutable while shared (`&self` only reads
// it; lending needs `&mut self`), and freed once, on drop.
unsafe impl Send for PagedBatch {}
// SAFETY: as above.
unsafe impl Sync for PagedBatch {}

impl std::fmt::Debug for PagedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagedBatch")
            .field("records", &self.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

fn os_error(what: &str, e: rustix::io::Errno) -> Error {
    Error::Engine(format!("{what}: {e}"))
}

impl PagedBatch {
    /// A copy of `b` in pages of its own.
    pub fn new(b: &Batch) -> Result<Self, Error> {
        let data = b.data();
        let map_len = data.len().next_multiple_of(LEND_ALIGN).max(LEND_ALIGN);
        // Not charged to the commit limit (but under strict overcommit a
        // move can still fail, and then aborts).
        let p = fresh(
            map_len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::NORESERVE,
        )
        .map_err(|e| os_error("mapping pages for a partition", e))?;
        let pages = NonNull::new(p.cast::<u8>()).expect("mmap does not return null");
        // SAFETY: the mapping is `map_len >= data.len()` bytes, writable,
        // and ours alone.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), pages.as_ptr(), data.len()) };
        let this = Self {
            pages,
            map_len,
            bytes: data.len(),
            bounds: b.bounds().to_vec(),
        };
        // SAFETY: our mapping; from now on it is only read.
        unsafe { rustix::mm::mprotect(p, map_len, MprotectFlags::READ) }
            .map_err(|e| os_error("making a partition's pages read-only", e))?;
        Ok(this)
    }

    /// Whether this host lends pages to plugins (Linux 5.7 or later, pages
    /// that divide 64 KiB); where it does not,
    /// [`Plugin::filter_lent`](crate::Plugin::filter_lent) copies.
    pub fn lending_supported() -> bool {
        supported()
    }

    /// The data buffer (keys and values).
    pub fn data(&self) -> &[u8] {
        // SAFETY: the first `bytes` of our mapping, initialised in
        // `new`, and in place whenever `&self` is available (lending holds
        // `&mut self` and puts the pages back before it returns).
        unsafe { std::slice::from_raw_parts(self.pages.as_ptr(), self.bytes) }
    }

    /// The offsets, laid out as in [`Batch`].
    pub fn bounds(&self) -> &[u32] {
        &self.bounds
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.bounds.len() / 2
    }

    /// True when there is no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same records as a [`Batch`] (a copy).
    pub fn to_batch(&self) -> Batch {
        Batch::from_parts(self.data().to_vec(), self.bounds.clone())
            .expect("bounds checked when the batch was built")
    }

    /// The records at `indices` (ascending, in range), copied into a batch.
    pub(crate) fn select(&self, indices: &[u32]) -> Result<Batch, dstream_core::Error> {
        Batch::select_from(self.data(), &self.bounds, indices)
    }

    /// Windows of whole records of at most `max_bytes` (a bigger record
    /// alone): their records, their [`LEND_ALIGN`]-aligned byte range in the
    /// mapping, and where their first byte falls in that range.
    pub(crate) fn windows(&self, max_bytes: usize) -> Vec<Window> {
        Batch::cuts_of(&self.bounds, max_bytes)
            .into_iter()
            .map(|records| {
                let start = self.bounds[2 * records.start] as usize;
                let end = self.bounds[2 * records.end] as usize;
                // Empty records at the very end start at `map_len`: their
                // window still lends one page, the last.
                let from = (start - start % LEND_ALIGN).min(self.map_len - LEND_ALIGN);
                let to = end.next_multiple_of(LEND_ALIGN).max(from + LEND_ALIGN);
                Window {
                    records,
                    pages: from..to.min(self.map_len),
                    at: start - from,
                }
            })
            .collect()
    }

    /// Moves the pages `w.pages` to `guest` (the start of a region of at
    /// least that length inside a guest's memory) until the returned guard
    /// drops. The guest's own pages there are first moved aside (to a fresh
    /// reservation of ours) and are put back when the guard drops, so the
    /// guest's memory ends as it was, whatever the region covered (its data
    /// image included). An error moving them aside leaves everything as it
    /// was; one moving the partition's pages in aborts (see below).
    ///
    /// # Safety
    /// `guest..guest + w.pages.len()` must be page-aligned memory of a
    /// guest that nothing else uses until the guard drops (a region the
    /// guest's `lend` named, inside a memory that cannot move).
    pub(crate) unsafe fn lend<'a>(
        &'a mut self,
        w: &Window,
        guest: NonNull<u8>,
    ) -> Result<Lent<'a>, Error> {
        let len = w.pages.len();
        // SAFETY: `w.pages` is within our mapping (from `windows`).
        let host = unsafe { self.pages.add(w.pages.start) };
        // A fresh reservation for the guest's pages.
        let aside = fresh(len, ProtFlags::empty(), MapFlags::NORESERVE)
            .map_err(|e| os_error("reserving room for a guest's pages", e))?;
        let dontunmap = MremapFlags::MAYMOVE | MremapFlags::DONTUNMAP;
        // SAFETY: the guest's range (as the caller promises) over our
        // reservation; DONTUNMAP leaves the guest's range mapped (empty), so
        // nothing else can be placed there meanwhile.
        if let Err(e) =
            unsafe { rustix::mm::mremap_fixed(guest.as_ptr().cast(), len, len, dontunmap, aside) }
        {
            // The guest's range is untouched, but the kernel may already
            // have unmapped our reservation, and another thread's mapping
            // may sit there now: leave it (address space only), never unmap.
            return Err(os_error("moving a guest's pages aside", e));
        }
        // SAFETY: our pages (page-aligned, `len` bytes of our mapping) to the
        // guest's emptied range; DONTUNMAP keeps our range mapped (empty).
        let moved = unsafe {
            rustix::mm::mremap_fixed(
                host.as_ptr().cast(),
                len,
                len,
                dontunmap,
                guest.as_ptr().cast(),
            )
        };
        if let Err(e) = moved {
            // The kernel may have unmapped the guest's range before it
            // failed, leaving a hole in the sandbox's memory that another
            // thread's mapping could fill before the guest's pages return.
            tracing::error!("lending a partition's pages to the sandbox failed: {e}; aborting");
            std::process::abort();
        }
        Ok(Lent {
            _batch: std::marker::PhantomData,
            host,
            guest,
            aside,
            len,
        })
    }
}

impl Drop for PagedBatch {
    fn drop(&mut self) {
        // SAFETY: our mapping, no longer borrowed.
        if let Err(e) = unsafe { rustix::mm::munmap(self.pages.as_ptr().cast(), self.map_len) } {
            tracing::error!("unmapping a partition's pages: {e}");
        }
    }
}

/// Records lent in one call: their range in the batch, the pages holding
/// them, and the offset of their first byte in those pages.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub(crate) records: std::ops::Range<usize>,
    pub(crate) pages: std::ops::Range<usize>,
    pub(crate) at: usize,
}

/// Pages lent to a guest; dropping it moves them back, and the guest's own
/// pages back into its memory.
pub(crate) struct Lent<'a> {
    _batch: std::marker::PhantomData<&'a mut PagedBatch>,
    host: NonNull<u8>,
    guest: NonNull<u8>,
    /// Where the guest's own pages wait.
    aside: *mut c_void,
    len: usize,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let (host, guest): (*mut c_void, *mut c_void) =
            (self.host.as_ptr().cast(), self.guest.as_ptr().cast());
        let len = self.len;
        let dontunmap = MremapFlags::MAYMOVE | MremapFlags::DONTUNMAP;
        // SAFETY: the partition's pages go back from the guest's range to
        // ours (whose empty mapping they replace; the guest's range stays
        // mapped, empty); then the guest's own pages go back over that
        // range from where they waited, which leaves that place unmapped
        // (no DONTUNMAP: no memory charged).
        let back = unsafe { rustix::mm::mremap_fixed(guest, len, len, dontunmap, host) }.and_then(
            |_| unsafe {
                rustix::mm::mremap_fixed(self.aside, len, len, MremapFlags::MAYMOVE, guest)
            },
        );
        if let Err(e) = back {
            // The sandbox would keep host memory, the host would lose a
            // partition, or wasmtime would reset a read-only range: none is
            // safe to run on with.
            tracing::error!("taking lent pages back from the sandbox failed: {e}; aborting");
            std::process::abort();
        }
    }
}

/// A new private anonymous mapping of `len` bytes, placed by the kernel.
fn fresh(len: usize, prot: ProtFlags, flags: MapFlags) -> rustix::io::Result<*mut c_void> {
    // SAFETY: a mapping nothing else knows of; it replaces nothing.
    unsafe {
        rustix::mm::mmap_anonymous(std::ptr::null_mut(), len, prot, MapFlags::PRIVATE | flags)
    }
}

/// Whether this host can lend: its page size divides [`LEND_ALIGN`] and
/// its kernel moves pages with `MREMAP_DONTUNMAP` (Linux 5.7 and later),
/// tried once on scratch pages. Where it cannot, callers copy instead.
pub(crate) fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        if !LEND_ALIGN.is_multiple_of(rustix::param::page_size()) {
            return false;
        }
        let scratch = || {
            fresh(
                LEND_ALIGN,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::empty(),
            )
        };
        let (Ok(a), Ok(b)) = (scratch(), scratch()) else {
            return false;
        };
        let flags = MremapFlags::MAYMOVE | MremapFlags::DONTUNMAP;
        // SAFETY: both mappings are ours, page-aligned, LEND_ALIGN bytes,
        // and unmapped below (`b` now holds `a`'s pages).
        let moved = unsafe { rustix::mm::mremap_fixed(a, LEND_ALIGN, LEND_ALIGN, flags, b) };
        for p in [a, b] {
            // SAFETY: as above.
            let _ = unsafe { rustix::mm::munmap(p, LEND_ALIGN) };
        }
        if let Err(e) = &moved {
            tracing::info!("this kernel cannot lend pages to plugins ({e}); they get copies");
        }
        moved.is_ok()
    })
}
