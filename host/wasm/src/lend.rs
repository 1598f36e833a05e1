//! Zero-copy input: a partition whose pages the host lends to a guest.
//!
//! Copying a partition into guest memory reads it from main memory once
//! more than a native operator does (grep: the copy was ~45% of the Wasm
//! time). A [`PagedBatch`] keeps its bytes in a sealed memfd, mapped
//! twice: a read-only view the host reads (which nothing writes and
//! lending never moves, so a batch can be read from many threads while
//! one call at a time has it lent), and a private writable mapping; for a
//! call, the host moves that mapping's pages into a region the guest set
//! aside (`lend` in the contract) and back out
//! afterwards, with Linux `mremap`: page tables move, no byte is copied
//! and no page faults in again. Measured without Wasm (`cargo run
//! --release -p dstream-benches --bin lending`, benches/README.md): before
//! a search over 10 MiB partitions, moving the pages in and back added
//! 4-11% to the search alone, copying them 51-72%, and mapping them from
//! the memfd on every call (a page-table entry built per 4 KiB page)
//! 240-270%.
//!
//! The lent pages are **copy-on-write**, so lending behaves exactly like a
//! copy: a guest may write into its input (with a store or with
//! `memory.fill`/`memory.copy`, which wasmtime runs in host code); the
//! write lands in a private copy of that page, never in the memfd, and
//! never faults where the host could not turn it into a trap (the reason
//! read-only lending had to stay off: such a write in host code killed the
//! process). After the call, the host finds the pages a write copied and
//! drops them, so the partition reads as it was: the check reads
//! `/proc/self/pagemap` for the window (present or swapped, and not the
//! file's page), but only when the calling thread took a page fault, minor
//! or major, during the call (`getrusage(RUSAGE_THREAD)`). A write to a
//! copy-on-write page always faults, on the thread that writes (a major
//! fault when the memfd's page had been swapped out: a review found that
//! counting only minor faults let such a write through), and only this
//! thread runs the guest; calls that fault for other reasons (a guest
//! touching new heap pages) are checked too. Where the page map cannot be
//! read, every page of the window is dropped (the memfd's page returns on
//! the next read). The partition's pages are never locked, even under
//! `mlockall` (the kernel refuses to drop copies from locked pages).
//!
//! Safety otherwise rests on these points (host/wasm/tests/hostile.rs tries
//! each). The region is checked to lie inside the instance's memory (two
//! lists, checked by wasmtime like any list), 64 KiB-aligned and as long
//! as asked. Pool memories never move (`memory_may_move(false)`), so its
//! address holds for the call. The guest's own pages in the region are
//! moved aside first and put back after, so its memory ends as it was even
//! if the region covered its data image (which wasmtime's reset would
//! otherwise not restore). The memfd is sealed (no write, grow or shrink):
//! no mapping of it can change the partition. Plugins with WASI imports
//! are still never lent to: their host functions could write into guest
//! memory from another thread or through the kernel, which the calling
//! thread's fault count would not see. A call lends only where 16 more
//! mappings fit in `vm.max_map_count` (its moves split mappings, and a
//! move back refused would abort). Moves that leave a range keep it
//! mapped (`MREMAP_DONTUNMAP`) while anything could still be placed there,
//! and nothing is charged to the commit limit (`MAP_NORESERVE`; under
//! strict overcommit, which ignores it, nothing is lent); a failure to
//! move the partition's pages in or back, or to drop a guest's copies,
//! aborts the process rather than leave the sandbox holding host memory
//! or the partition changed. And wasmtime is built without its
//! `memory-protection-keys` feature: moved pages keep the host's key,
//! which under MPK striping any instance of the pool could read.
//!
//! Two differences from a copy remain, both inside the job's own data: a
//! window's first and last 64 KiB pages may hold bytes of neighbouring
//! records, which the guest can read (a copy holds only the window's
//! records); and while a window is lent, the guest's own pages of its
//! region wait outside its memory and its writes make copies, up to the
//! window's size (8 MiB) of host memory per running call.
//!
//! Cheap lending also needs wasmtime's `pagemap_scan` reset (Linux 6.7 and
//! later): it resets only the pages an instance wrote. Without it, the pool
//! zeroes the first `keep_resident` bytes of a memory with memset, which
//! faults the (untouched) region in after every call: still correct, but
//! slower than a copy.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use dstream_core::Batch;
use rustix::fd::OwnedFd;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{Advice, MapFlags, MremapFlags, ProtFlags};

use crate::Error;

/// Alignment and granule of lent ranges: a Wasm page, which is a multiple of
/// the host's page size on every platform wasmtime supports.
pub(crate) const LEND_ALIGN: usize = 64 << 10;

/// Records per lend are cut into windows of at most this many bytes (or
/// the limits' [`call_input`](crate::Limits::call_input), when smaller), so
/// the region a guest sets aside stays small next to its memory limit.
pub(crate) const LEND_BYTES: usize = 8 << 20;

/// A partition whose data buffer lives in pages of its own (a sealed
/// memfd), so that [`Plugin::filter_lent`](crate::Plugin::filter_lent) can
/// lend its pages to a guest instead of copying them. Linux only.
///
/// The host reads the bytes through a read-only mapping of the sealed
/// file, which nothing writes and lending never moves: `&self`
/// is enough to read and to lend, from any thread. A second, private
/// mapping is what a lend moves into the sandbox, one call at a time
/// (a call that finds it lent already copies instead).
///
/// ```
/// use dstream_core::Batch;
/// use dstream_wasm::PagedBatch;
///
/// let b: Batch = [("", "a needle"), ("", "hay")].into_iter().collect();
/// let paged = PagedBatch::new(&b).expect("memory for its pages");
/// assert_eq!(paged.to_batch(), b);
/// assert_eq!(paged.lend_stats().windows, 0);
/// ```
pub struct PagedBatch {
    /// The host's view: a read-only mapping of the sealed memfd
    /// (page-aligned); the data is its first `bytes`.
    view: NonNull<u8>,
    /// What is lent: a private, writable (copy-on-write) mapping of the
    /// same file, page tables filled; moved into a guest during a call.
    pages: NonNull<u8>,
    /// Held while `pages` are lent (or being put back).
    lending: std::sync::Mutex<()>,
    /// Length of the file and of both mappings: `bytes` rounded up to
    /// [`LEND_ALIGN`], at least one.
    map_len: usize,
    /// Length of the data buffer.
    bytes: usize,
    bounds: Vec<u32>,
    windows: AtomicU64,
    checked: AtomicU64,
    dropped_pages: AtomicU64,
    copied: AtomicU64,
}

/// What lending did with one [`PagedBatch`] so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LendStats {
    /// Windows of records whose pages were lent to a guest (one call each).
    pub windows: u64,
    /// Lent windows checked page by page afterwards, because the call took
    /// a page fault (as any write into lent pages does).
    pub checked: u64,
    /// Pages a guest wrote into (its private copies), dropped afterwards.
    pub dropped_pages: u64,
    /// Calls that could have lent but copied: another call had the pages,
    /// the process was too close to `vm.max_map_count`, or the kernel
    /// refused to move the guest's pages aside.
    pub copied: u64,
}

// SAFETY: both mappings are owned and freed once, on drop; the view is
// never written (read-only, of a sealed file), and the lent mapping is
// only touched under `lending`.
unsafe impl Send for PagedBatch {}
// SAFETY: as above.
unsafe impl Sync for PagedBatch {}

impl std::fmt::Debug for PagedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagedBatch")
            .field("records", &self.len())
            .field("bytes", &self.bytes)
            .field("stats", &self.lend_stats())
            .finish_non_exhaustive()
    }
}

fn os_error(what: &str, e: rustix::io::Errno) -> Error {
    Error::Pages(format!("{what}: {e}"))
}

impl PagedBatch {
    /// A copy of `b` in pages of its own.
    pub fn new(b: &Batch) -> Result<Self, Error> {
        let data = b.data();
        let map_len = data.len().next_multiple_of(LEND_ALIGN).max(LEND_ALIGN);
        let file =
            sealed_file(data, map_len).map_err(|e| os_error("a memfd for a partition", e))?;
        let map = |prot, flags| {
            // SAFETY: a fresh mapping of our file, placed by the kernel.
            let p =
                unsafe { rustix::mm::mmap(std::ptr::null_mut(), map_len, prot, flags, &file, 0) }
                    .map_err(|e| os_error("mapping a partition's pages", e))?;
            // Page tables filled once, for reading (Linux 5.14; before it,
            // the first read of each page faults it in).
            // SAFETY: our mapping; populating for read copies nothing.
            let _ = unsafe { rustix::mm::madvise(p, map_len, Advice::LinuxPopulateRead) };
            // Never locked (a host under mlockall(MCL_FUTURE) would lock
            // it): the kernel refuses to drop a guest's copies from locked
            // pages.
            // SAFETY: our mapping.
            let _ = unsafe { rustix::mm::munlock(p, map_len) };
            Ok::<_, Error>(NonNull::new(p.cast::<u8>()).expect("mmap does not return null"))
        };
        // The host's view: read-only, of a file sealed against writes.
        // Private, not shared: before Linux 6.7 a shared mapping of a
        // memfd sealed against writes is refused even read-only.
        let view = map(ProtFlags::READ, MapFlags::PRIVATE)?;
        // What is lent: private and writable, so a write (the guest's)
        // lands in a copy of the page, never in the file. Not charged to
        // the commit limit (copies are few and dropped after each call)
        // where the kernel honours MAP_NORESERVE (not under
        // vm.overcommit_memory=2, where nothing is lent: see `supported`).
        let pages = match map(
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        ) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: the view just made, used by no one.
                let _ = unsafe { rustix::mm::munmap(view.as_ptr().cast(), map_len) };
                return Err(e);
            }
        };
        // The mappings keep the file; its descriptor is not needed.
        drop(file);
        Ok(Self {
            view,
            pages,
            lending: std::sync::Mutex::new(()),
            map_len,
            bytes: data.len(),
            bounds: b.bounds().to_vec(),
            windows: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            dropped_pages: AtomicU64::new(0),
            copied: AtomicU64::new(0),
        })
    }

    /// Whether this host lends pages to plugins (Linux 5.13 or later, pages
    /// that divide 64 KiB); where it does not,
    /// [`Plugin::filter_lent`](crate::Plugin::filter_lent) copies.
    pub fn lending_supported() -> bool {
        supported()
    }

    /// What lending did with this batch so far.
    pub fn lend_stats(&self) -> LendStats {
        LendStats {
            windows: self.windows.load(Ordering::Relaxed),
            checked: self.checked.load(Ordering::Relaxed),
            dropped_pages: self.dropped_pages.load(Ordering::Relaxed),
            copied: self.copied.load(Ordering::Relaxed),
        }
    }

    /// The data buffer (keys and values).
    pub fn data(&self) -> &[u8] {
        // SAFETY: the first `bytes` of the view, a read-only mapping of the
        // sealed file: initialised in `new`, never changed, never
        // moved, unmapped only on drop.
        unsafe { std::slice::from_raw_parts(self.view.as_ptr(), self.bytes) }
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

    /// Counts a call that could have lent but copied.
    pub(crate) fn note_copied(&self) {
        self.copied.fetch_add(1, Ordering::Relaxed);
    }

    /// The right to lend this batch's pages, held by one call at a time:
    /// `None` while another call holds it, or when the process is too
    /// close to `vm.max_map_count` for the moves (the caller copies).
    pub(crate) fn lender(&self) -> Option<Lender<'_>> {
        if !map_room(MAP_ROOM) {
            tracing::warn!("too close to vm.max_map_count to lend pages; copying");
            self.note_copied();
            return None;
        }
        let held = match self.lending.try_lock() {
            Ok(held) => held,
            Err(std::sync::TryLockError::WouldBlock) => {
                self.note_copied();
                return None;
            }
            // A panic while lent put the pages back on its way out (`Lent`
            // drops, and aborts if it cannot finish): nothing is half done.
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        Some(Lender {
            batch: self,
            _held: held,
        })
    }
}

/// The right to lend a batch's pages (see [`PagedBatch::lender`]).
pub(crate) struct Lender<'a> {
    batch: &'a PagedBatch,
    _held: std::sync::MutexGuard<'a, ()>,
}

impl<'a> Lender<'a> {
    /// The batch whose pages it lends.
    pub(crate) fn batch(&self) -> &'a PagedBatch {
        self.batch
    }

    /// Moves the pages `w.pages` to `guest` (the start of a region of at
    /// least that length inside a guest's memory) until the returned guard
    /// drops. The guest's own pages there are first moved aside (to a fresh
    /// reservation of ours) and are put back when the guard drops, so the
    /// guest's memory ends as it was, whatever the region covered (its data
    /// image included); pages the guest wrote meanwhile are dropped first.
    /// An error moving them aside leaves everything as it was; one moving
    /// the partition's pages in aborts (see below).
    ///
    /// # Safety
    /// `guest..guest + w.pages.len()` must be page-aligned memory of a
    /// guest that nothing else uses until the guard drops (a region the
    /// guest's `lend` named, inside a memory that cannot move), and only
    /// the calling thread may run that guest until then.
    pub(crate) unsafe fn lend(
        &mut self,
        w: &Window,
        guest: NonNull<u8>,
    ) -> Result<Lent<'_>, Error> {
        let batch = self.batch;
        let len = w.pages.len();
        // SAFETY: `w.pages` is within our mapping (from `windows`).
        let host = unsafe { batch.pages.add(w.pages.start) };
        // A fresh reservation for the guest's pages.
        let aside = fresh(len).map_err(|e| os_error("reserving room for a guest's pages", e))?;
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
        batch.windows.fetch_add(1, Ordering::Relaxed);
        Ok(Lent {
            _lender: std::marker::PhantomData,
            batch,
            host,
            guest,
            aside,
            len,
            faults: thread_faults(),
        })
    }
}

impl Drop for PagedBatch {
    fn drop(&mut self) {
        for p in [self.view, self.pages] {
            // SAFETY: our mappings, no longer borrowed (the memfd goes with
            // the last).
            if let Err(e) = unsafe { rustix::mm::munmap(p.as_ptr().cast(), self.map_len) } {
                tracing::error!("unmapping a partition's pages: {e}");
            }
        }
    }
}

/// A memfd of `len` bytes starting with `data`, sealed: no one can write,
/// grow or shrink it any more.
fn sealed_file(data: &[u8], len: usize) -> rustix::io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(
        "dstream-partition",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    let mut at = 0;
    while at < data.len() {
        at += rustix::io::pwrite(&fd, &data[at..], at as u64)?;
    }
    let seals = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
    rustix::fs::fcntl_add_seals(&fd, seals)?;
    Ok(fd)
}

/// Records lent in one call: their range in the batch, the pages holding
/// them, and the offset of their first byte in those pages.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub(crate) records: std::ops::Range<usize>,
    pub(crate) pages: std::ops::Range<usize>,
    pub(crate) at: usize,
}

/// Pages lent to a guest; dropping it drops the pages the guest wrote,
/// moves the rest back, and the guest's own pages back into its memory.
pub(crate) struct Lent<'a> {
    _lender: std::marker::PhantomData<&'a mut ()>,
    batch: &'a PagedBatch,
    host: NonNull<u8>,
    guest: NonNull<u8>,
    /// Where the guest's own pages wait.
    aside: *mut c_void,
    len: usize,
    /// The calling thread's page faults (minor and major) when the pages
    /// moved in.
    faults: Option<libc::c_long>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        // A panic in here (a logger's, an allocation's) would leave the
        // pages half moved, and the next lend would lend an empty range:
        // abort instead. (One while already unwinding aborts anyway.)
        struct AbortOnPanic(bool);
        impl Drop for AbortOnPanic {
            fn drop(&mut self) {
                if std::thread::panicking() && !self.0 {
                    std::process::abort();
                }
            }
        }
        let _abort = AbortOnPanic(std::thread::panicking());
        let (host, guest): (*mut c_void, *mut c_void) =
            (self.host.as_ptr().cast(), self.guest.as_ptr().cast());
        let len = self.len;
        // A write into a lent page faults on the thread that writes: no new
        // fault on this one (the only one running the guest), no copy.
        if self.faults.is_none() || thread_faults() != self.faults {
            self.batch.checked.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the lent range, still ours until moved back below.
            let dropped = unsafe { drop_copies(guest, len) };
            self.batch
                .dropped_pages
                .fetch_add(dropped, Ordering::Relaxed);
        }
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
            // partition, or wasmtime would reset a file's range: none is
            // safe to run on with.
            tracing::error!("taking lent pages back from the sandbox failed: {e}; aborting");
            std::process::abort();
        }
    }
}

/// Free map-count entries a call needs before it lends: while a window is
/// lent the process holds about 5 more mappings (the guest's memory and
/// ours split around it, a reservation), the kernel refuses a move within
/// 3 entries of `vm.max_map_count`, and a move back refused would have to
/// abort (a review found one, 4 entries from the limit). Checked once per
/// call (each window ends with the count where it began); another thread
/// mapping memory meanwhile can still take the room.
const MAP_ROOM: usize = 16;

/// Whether the process can make `n` more mappings now: `n` one-page
/// mappings made (one mapping split by `n` holes: `n + 1` system calls)
/// and unmapped at once.
fn map_room(n: usize) -> bool {
    let page = rustix::param::page_size();
    let len = 2 * n * page;
    let Ok(base) = fresh(len) else {
        return false;
    };
    // Every hole splits off one more mapping; a split refused is no room.
    // SAFETY: pages of our own mapping.
    let room = (0..n)
        .all(|i| unsafe { rustix::mm::munmap(base.byte_add((2 * i + 1) * page), page) }.is_ok());
    // SAFETY: the whole range, ours (holes included).
    let _ = unsafe { rustix::mm::munmap(base, len) };
    room
}

/// Page faults the calling thread has taken, minor and major
/// (`getrusage(RUSAGE_THREAD)`), or `None` where that cannot be read. Both
/// count: a write into a lent page whose memfd page was swapped out is a
/// major fault (found by review, with swap on zram).
fn thread_faults() -> Option<libc::c_long> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a writable rusage; RUSAGE_THREAD names this thread.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    (rc == 0).then(|| {
        // SAFETY: filled by a successful call.
        let u = unsafe { usage.assume_init() };
        u.ru_minflt.wrapping_add(u.ru_majflt)
    })
}

/// Drops the pages in `len` bytes at `at` that a write copied (present or
/// swapped, and not the file's page: `/proc/self/pagemap`), so the file's
/// page returns on the next read; every page of the range where the page
/// map cannot be read. Returns how many were dropped. Aborts if the kernel
/// refuses to drop them (the partition would stay changed).
///
/// # Safety
/// `at..at + len` must be a page-aligned range of a private mapping of a
/// file that nothing reads until this returns.
unsafe fn drop_copies(at: *mut c_void, len: usize) -> u64 {
    let page = rustix::param::page_size();
    let runs = copied_pages(at, len).unwrap_or_else(|e| {
        tracing::warn!("reading /proc/self/pagemap: {e}; dropping every lent page");
        let every = 0..len / page;
        vec![every]
    });
    let mut dropped = 0;
    for run in runs {
        // SAFETY: pages within the range, as the caller promises.
        let (from, len) = (unsafe { at.byte_add(run.start * page) }, run.len() * page);
        // SAFETY: as above. On a private file mapping MADV_DONTNEED drops
        // the copies; it refuses locked pages (an mlockall(MCL_CURRENT)
        // after the batch was made), so those are unlocked and tried again.
        let r = unsafe { rustix::mm::madvise(from, len, Advice::LinuxDontNeed) }.or_else(|_| {
            // SAFETY: as above.
            unsafe { rustix::mm::munlock(from, len) }?;
            // SAFETY: as above.
            unsafe { rustix::mm::madvise(from, len, Advice::LinuxDontNeed) }
        });
        if let Err(e) = r {
            tracing::error!("dropping pages a plugin wrote into its lent input: {e}; aborting");
            std::process::abort();
        }
        dropped += run.len() as u64;
    }
    dropped
}

/// Runs of pages (indices from `at`) in `len` bytes at `at` that are
/// present or swapped but not the mapped file's own: copies made by a
/// write.
fn copied_pages(at: *const c_void, len: usize) -> std::io::Result<Vec<std::ops::Range<usize>>> {
    use std::os::unix::fs::FileExt;
    // Opened per check (rare: calls that faulted), so a forked child never
    // reads its parent's page map.
    let pagemap = std::fs::File::open("/proc/self/pagemap")?;
    let page = rustix::param::page_size();
    let mut entries = vec![0u8; len / page * 8];
    pagemap.read_exact_at(&mut entries, (at as usize / page * 8) as u64)?;
    const PRESENT_OR_SWAPPED: u64 = 3 << 62;
    const FILE_PAGE: u64 = 1 << 61;
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, e) in entries.chunks_exact(8).enumerate() {
        let e = u64::from_le_bytes(e.try_into().expect("8 bytes"));
        if e & PRESENT_OR_SWAPPED != 0 && e & FILE_PAGE == 0 {
            match runs.last_mut() {
                Some(run) if run.end == i => run.end += 1,
                _ => runs.push(i..i + 1),
            }
        }
    }
    Ok(runs)
}

/// A new private anonymous mapping of `len` bytes, inaccessible, placed by
/// the kernel and not charged to the commit limit.
fn fresh(len: usize) -> rustix::io::Result<*mut c_void> {
    // SAFETY: a mapping nothing else knows of; it replaces nothing.
    unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            len,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    }
}

/// Whether this host can lend: its page size divides [`LEND_ALIGN`], it
/// does not use strict overcommit, it has memfds, and its kernel moves a
/// file's pages with `MREMAP_DONTUNMAP` (Linux 5.13 and later), tried once
/// on scratch pages. Where it cannot, callers copy instead.
pub(crate) fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        if !LEND_ALIGN.is_multiple_of(rustix::param::page_size()) {
            return false;
        }
        // Under strict overcommit MAP_NORESERVE is ignored and every move
        // is charged to the commit limit: one refused moving the
        // partition's pages in would have to abort.
        if std::fs::read_to_string("/proc/sys/vm/overcommit_memory").is_ok_and(|m| m.trim() == "2")
        {
            tracing::info!("vm.overcommit_memory=2: plugins get copies, not lent pages");
            return false;
        }
        // The very mappings a batch makes, and a move of its lendable one.
        let batch = match PagedBatch::new(&Batch::default()) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::info!("this host cannot map pages for lending ({e}); plugins get copies");
                return false;
            }
        };
        let tried = fresh(LEND_ALIGN).and_then(|to| {
            let flags = MremapFlags::MAYMOVE | MremapFlags::DONTUNMAP;
            // SAFETY: the batch's lendable mapping (LEND_ALIGN bytes, used
            // by nothing) onto our scratch mapping; DONTUNMAP leaves the
            // batch's range mapped, which it unmaps when it drops.
            let from = batch.pages.as_ptr().cast();
            let moved =
                unsafe { rustix::mm::mremap_fixed(from, LEND_ALIGN, LEND_ALIGN, flags, to) };
            // SAFETY: the scratch mapping, ours (holding the moved pages).
            let _ = unsafe { rustix::mm::munmap(to, LEND_ALIGN) };
            moved.map(|_| ())
        });
        if let Err(e) = &tried {
            tracing::info!("this kernel cannot lend pages to plugins ({e}); they get copies");
        }
        tried.is_ok()
    })
}
