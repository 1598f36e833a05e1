//! How a partition can reach a guest's memory, measured without Wasm: the
//! ways a host could put 10 MB partitions at a fixed address (the guest's
//! region) before a search reads them there, against the search reading
//! the partition where it lies (what a native operator does).
//!
//! `cargo run --release -p dstream-benches --bin lending [-- --runs N]`
//!
//! - `in place`: the search alone (native grep's case).
//! - `copy, 256 KiB pieces`: copy a piece into the region, search it, next
//!   piece (what `Plugin::filter` does; the piece is still in L2 when read).
//! - `memfd, mmap per call`: partitions in a memfd; each call maps the
//!   partition's pages at the region (`MAP_SHARED | MAP_FIXED`, read-only),
//!   searches, and maps fresh anonymous memory back (with and without
//!   `MAP_POPULATE`).
//! - `read-only anon, mremap+mprotect`: partitions in anonymous mappings
//!   of their own, read-only; each call moves the pages to the region and
//!   back (`MREMAP_DONTUNMAP`, then `mprotect` of the region), as
//!   `Plugin::filter_lent` did before copy-on-write lending (a write by
//!   `memory.fill` into such pages crashed the host).
//! - `copy-on-write memfd, mremap`: partitions in a memfd, each mapped
//!   once, private and writable (a write lands in a copy), page tables
//!   filled once (`MADV_POPULATE_READ`); each call moves the pages to the
//!   region and back, and reads `/proc/self/pagemap` for the region (to
//!   find copies) only if the thread took a page fault meanwhile
//!   (`getrusage(RUSAGE_THREAD)`): what `Plugin::filter_lent` does
//!   (host/wasm/src/lend.rs).
//! - `+ pagemap read every call`: the same, reading the page map after
//!   every call (the cost of a call that faulted).
//!
//! Every variant counts the same matches (checked). Linux only.
#![allow(clippy::print_stdout)]

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("lending: Linux only (memfd, mremap)");
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::c_void;
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use memchr::memmem::Finder;
    use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
    use rustix::mm::{MapFlags, MprotectFlags, MremapFlags, ProtFlags};

    /// Bytes per partition (a multiple of the page size).
    const PART: usize = 10 << 20;
    /// Partitions.
    const PARTS: usize = 10;
    /// Pieces copied at a time (dstream-wasm's `PIECE_BYTES`).
    const PIECE: usize = 256 << 10;

    #[derive(clap::Parser)]
    struct Args {
        /// Rounds: every variant runs once per round; medians reported.
        #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
    }

    /// A private anonymous mapping of `len` bytes, read-write.
    fn anon(len: usize) -> *mut u8 {
        // SAFETY: a fresh mapping placed by the kernel.
        unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .expect("mmap")
        .cast()
    }

    /// Deterministic text-like bytes with `needle` planted now and then.
    fn fill(dst: &mut [u8], seed: u64) {
        let mut x = seed;
        for b in dst.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = b"abcdefghijklmnopqrstuvwxyz    "[(x % 30) as usize];
        }
        // Never across the edge of a piece, so the pieces count them all.
        for at in (1000..dst.len() - 6).step_by(5003) {
            if at % PIECE <= PIECE - 6 {
                dst[at..at + 6].copy_from_slice(b"needle");
            }
        }
    }

    /// Page faults the calling thread has taken.
    fn thread_faults() -> libc::c_long {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: a writable rusage; RUSAGE_THREAD names this thread.
        assert_eq!(
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) },
            0
        );
        // SAFETY: filled by the call.
        unsafe { usage.assume_init() }.ru_minflt
    }

    /// Pages in `entries.len() / 8` pages at `at` that are present or
    /// swapped but not the file's (copies made by a write), read from
    /// `/proc/self/pagemap` into `entries`.
    fn copied(pagemap: &std::fs::File, at: *const u8, entries: &mut [u8]) -> usize {
        use std::os::unix::fs::FileExt;
        let page = rustix::param::page_size() as u64;
        pagemap
            .read_exact_at(entries, at as u64 / page * 8)
            .expect("reading /proc/self/pagemap");
        entries
            .chunks_exact(8)
            .map(|e| u64::from_le_bytes(e.try_into().expect("8 bytes")))
            .filter(|e| e & (3 << 62) != 0 && e & (1 << 61) == 0)
            .count()
    }

    fn count(f: &Finder<'_>, s: &[u8]) -> usize {
        f.find_iter(s).count()
    }

    pub(super) fn main() {
        let Args { runs } = clap::Parser::parse();
        let finder = Finder::new("needle");
        // The partitions, as anonymous mappings of their own (for mremap)
        // and as one memfd (for mmap).
        let parts: Vec<*mut u8> = (0..PARTS).map(|_| anon(PART)).collect();
        let fd = memfd_create("partitions", MemfdFlags::CLOEXEC).expect("memfd");
        ftruncate(&fd, (PART * PARTS) as u64).expect("ftruncate");
        // SAFETY: a fresh shared mapping of the whole memfd.
        let shared: *mut u8 = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                PART * PARTS,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .expect("mmap memfd")
        .cast();
        for (i, &p) in parts.iter().enumerate() {
            // SAFETY: our mappings of PART bytes each.
            let part = unsafe { std::slice::from_raw_parts_mut(p, PART) };
            fill(part, i as u64 + 1);
            // SAFETY: partition i of the memfd mapping.
            unsafe { std::ptr::copy_nonoverlapping(p, shared.add(i * PART), PART) };
        }
        // The "guest's" region, 64 KiB-aligned (mmap gives page alignment;
        // over-allocate and round up).
        let raw = anon(PART + (64 << 10));
        let region = raw.wrapping_add(raw.align_offset(64 << 10));
        // SAFETY: all in our mappings, as the variants' comments say.
        let read = |p: *const u8| unsafe { std::slice::from_raw_parts(p, PART) };
        let expected: usize = parts.iter().map(|&p| count(&finder, read(p))).sum();

        let in_place = || {
            parts
                .iter()
                .map(|&p| count(&finder, read(p)))
                .sum::<usize>()
        };
        let copy = || {
            let mut n = 0;
            for &p in &parts {
                for at in (0..PART).step_by(PIECE) {
                    // SAFETY: piece `at` of a partition into the region.
                    unsafe { std::ptr::copy_nonoverlapping(p.add(at), region, PIECE) };
                    // SAFETY: the region holds PIECE bytes just written.
                    n += count(&finder, unsafe {
                        std::slice::from_raw_parts(region, PIECE)
                    });
                }
            }
            n
        };
        let memfd = |populate: bool| {
            let mut n = 0;
            for i in 0..PARTS {
                let flags = MapFlags::SHARED
                    | MapFlags::FIXED
                    | if populate {
                        MapFlags::POPULATE
                    } else {
                        MapFlags::empty()
                    };
                // SAFETY: the region is ours; the memfd holds the partition.
                unsafe {
                    rustix::mm::mmap(
                        region.cast(),
                        PART,
                        ProtFlags::READ,
                        flags,
                        &fd,
                        (i * PART) as u64,
                    )
                }
                .expect("mmap at the region");
                n += count(&finder, read(region));
                // SAFETY: fresh anonymous memory over our region.
                unsafe {
                    rustix::mm::mmap_anonymous(
                        region.cast(),
                        PART,
                        ProtFlags::READ | ProtFlags::WRITE,
                        MapFlags::PRIVATE | MapFlags::FIXED,
                    )
                }
                .expect("anonymous memory back");
            }
            n
        };
        let mremap = || {
            let mut n = 0;
            for &p in &parts {
                let (host, guest): (*mut c_void, *mut c_void) = (p.cast(), region.cast());
                let flags = MremapFlags::MAYMOVE | MremapFlags::DONTUNMAP;
                // SAFETY: both ranges ours, page-aligned, PART bytes.
                unsafe { rustix::mm::mremap_fixed(host, PART, PART, flags, guest) }
                    .expect("move in");
                n += count(&finder, read(region));
                // SAFETY: as above, the other way.
                unsafe { rustix::mm::mremap_fixed(guest, PART, PART, flags, host) }
                    .expect("move back");
                // SAFETY: our region.
                unsafe {
                    rustix::mm::mprotect(guest, PART, MprotectFlags::READ | MprotectFlags::WRITE)
                }
                .expect("mprotect");
            }
            n
        };
        // Each partition mapped once from the memfd, private and writable:
        // a write would land in a private copy, never in the memfd.
        let private: Vec<*mut u8> = (0..PARTS)
            .map(|i| {
                // SAFETY: a fresh private mapping of partition i.
                let p = unsafe {
                    rustix::mm::mmap(
                        std::ptr::null_mut(),
                        PART,
                        ProtFlags::READ | ProtFlags::WRITE,
                        MapFlags::PRIVATE,
                        &fd,
                        (i * PART) as u64,
                    )
                }
                .expect("private mapping");
                // SAFETY: our mapping; fills page tables without writing.
                unsafe { rustix::mm::madvise(p, PART, rustix::mm::Advice::LinuxPopulateRead) }
                    .expect("populate");
                p.cast()
            })
            .collect();
        let pagemap = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
        let entries = std::cell::RefCell::new(vec![0u8; PART / rustix::param::page_size() * 8]);
        // What `Plugin::filter_lent` does: move the private pages in, search,
        // look for copies page by page if this thread faulted meanwhile (or
        // always, `check_always`: a call that faulted), move them back.
        let lend = |check_always: bool| {
            let mut n = 0;
            for &p in &private {
                let (host, guest): (*mut c_void, *mut c_void) = (p.cast(), region.cast());
                let flags = MremapFlags::MAYMOVE | MremapFlags::DONTUNMAP;
                // SAFETY: both ranges ours, page-aligned, PART bytes.
                unsafe { rustix::mm::mremap_fixed(host, PART, PART, flags, guest) }
                    .expect("move in");
                let faults = thread_faults();
                n += count(&finder, read(region));
                if check_always || thread_faults() != faults {
                    let copies = copied(&pagemap, region, &mut entries.borrow_mut());
                    assert_eq!(copies, 0, "a read copied a page");
                }
                // SAFETY: as above, the other way.
                unsafe { rustix::mm::mremap_fixed(guest, PART, PART, flags, host) }
                    .expect("move back");
            }
            n
        };
        // A write into the private pages is a copy, found and dropped; the
        // memfd's page comes back.
        {
            let p = private[0];
            let faults = thread_faults();
            // SAFETY: our private mapping; the write lands in a copy.
            unsafe { *p.add(5000) ^= 1 };
            assert!(thread_faults() > faults, "a copy-on-write fault");
            assert_eq!(copied(&pagemap, p, &mut entries.borrow_mut()), 1);
            // SAFETY: drops the copy of page 1.
            unsafe {
                rustix::mm::madvise(p.add(4096).cast(), 4096, rustix::mm::Advice::LinuxDontNeed)
            }
            .expect("madvise");
            assert_eq!(copied(&pagemap, p, &mut entries.borrow_mut()), 0);
            assert!(read(p) == read(parts[0]), "the memfd's bytes");
        }
        type Run<'a> = (&'static str, Box<dyn Fn() -> usize + 'a>);
        let variants: Vec<Run<'_>> = vec![
            ("in place (search only)", Box::new(in_place)),
            ("copy, 256 KiB pieces", Box::new(copy)),
            ("memfd, mmap per call", Box::new(|| memfd(false))),
            ("memfd, mmap + MAP_POPULATE", Box::new(|| memfd(true))),
            ("read-only anon, mremap+mprotect", Box::new(mremap)),
            ("copy-on-write memfd, mremap", Box::new(|| lend(false))),
            ("  + pagemap read every call", Box::new(|| lend(true))),
        ];
        let mut times = vec![Vec::<Duration>::new(); variants.len()];
        for _ in 0..runs {
            for (i, (name, run)) in variants.iter().enumerate() {
                let start = Instant::now();
                let n = black_box(run());
                times[i].push(start.elapsed());
                assert_eq!(n, expected, "{name}: wrong count");
            }
        }
        println!(
            "{PARTS} partitions x {} MiB, search for \"needle\" ({expected} matches); \
             {runs} rounds, medians",
            PART >> 20
        );
        let median = |t: &mut Vec<Duration>| {
            t.sort();
            t[t.len() / 2].as_secs_f64() * 1e3
        };
        let base = median(&mut times[0]);
        for ((name, _), t) in variants.iter().zip(&mut times) {
            let ms = median(t);
            println!("  {name:<34} {ms:>8.1} ms   {:>5.2}x in place", ms / base);
        }
    }
}
