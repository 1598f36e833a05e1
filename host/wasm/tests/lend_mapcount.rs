//! Lending near `vm.max_map_count`: every move of pages may split
//! mappings, and the kernel refuses one close to the limit. A review found
//! a lend that moved the partition's pages in and then could not move them
//! back (the process aborted) with 4 map entries left. Now a lend keeps
//! room for its moves first, or copies. Alone in its test binary: it fills
//! the process's map count.
#![cfg(target_os = "linux")]

use dstream_core::Batch;
use dstream_wasm::{Limits, PagedBatch, Runtime};
use rustix::mm::{MapFlags, ProtFlags};

#[test]
#[allow(clippy::print_stderr)]
fn a_lend_close_to_the_map_count_limit_copies_or_lends_but_never_aborts() {
    if !PagedBatch::lending_supported() {
        eprintln!("skipped: this kernel cannot lend pages");
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let rt = Runtime::new(Limits {
        instances: 2,
        ..Limits::default()
    })
    .unwrap();
    let grep = rt
        .load("grep", &std::fs::read(dstream_artifacts::GREP).unwrap())
        .unwrap();
    // Three windows of records, a few of them kept.
    let input: Batch = (0..200_000)
        .map(|i| (String::new(), format!("{i:>6} {}", "tx".repeat(46))))
        .collect();
    let params = [("pattern".to_string(), "99999".to_string())];
    let expected = grep.filter("grep", &params, &input).unwrap();
    assert_eq!(expected.len(), 2);
    let paged = PagedBatch::new(&input).unwrap();
    assert_eq!(grep.filter_lent("grep", &params, &paged).unwrap(), expected);
    // Fill the map count with one-page mappings (alternately readable, so
    // that neighbours never merge), then give entries back a few at a time.
    let page = rustix::param::page_size();
    let mut fill = Vec::with_capacity(1 << 17);
    // SAFETY: fresh one-page mappings, unmapped below.
    while let Ok(p) = unsafe {
        let prot = if fill.len() % 2 == 0 {
            ProtFlags::empty()
        } else {
            ProtFlags::READ
        };
        rustix::mm::mmap_anonymous(std::ptr::null_mut(), page, prot, MapFlags::PRIVATE)
    } {
        fill.push(p);
    }
    let mut lent_at = None;
    for free in 1..=40 {
        // SAFETY: ours, one page.
        let _ = unsafe { rustix::mm::munmap(fill.pop().unwrap(), page) };
        // Below ~3 free entries even the copy's allocations may fail (and
        // Rust aborts on those); from there on every call must succeed.
        if free < 4 {
            continue;
        }
        let before = paged.lend_stats().windows;
        assert_eq!(
            grep.filter_lent("grep", &params, &paged).unwrap(),
            expected,
            "{free} map entries free"
        );
        if lent_at.is_none() && paged.lend_stats().windows > before {
            lent_at = Some(free);
        }
    }
    for p in fill {
        // SAFETY: ours, one page.
        let _ = unsafe { rustix::mm::munmap(p, page) };
    }
    assert_eq!(paged.to_batch(), input);
    eprintln!("lent again from {lent_at:?} free map entries on");
    assert!(lent_at.is_some(), "never lent again");
    assert!(paged.lend_stats().copied > 0, "{:?}", paged.lend_stats());
}
