//! A host that locks its memory (`mlockall`) still lends safely: the
//! kernel refuses to drop pages from a locked range, so a plugin's copies
//! of lent pages could not be dropped (a review found the host aborting
//! there). Alone in its test binary: `mlockall` is process-wide. Skipped,
//! with a message, where the process may not lock its memory.
#![cfg(target_os = "linux")]

use dstream_core::Batch;
use dstream_wasm::{Limits, PagedBatch, Runtime};
use rustix::mm::MlockAllFlags;

#[test]
#[allow(clippy::print_stderr)]
fn a_host_under_mlockall_lends_and_drops_a_plugins_copies() {
    if !PagedBatch::lending_supported() {
        eprintln!("skipped: this kernel cannot lend pages");
        return;
    }
    let rt = Runtime::new(Limits {
        instances: 2,
        ..Limits::default()
    })
    .unwrap();
    let hostile = rt
        .load(
            "hostile",
            &std::fs::read(dstream_artifacts::HOSTILE).unwrap(),
        )
        .unwrap();
    let input: Batch = [("", "one"), ("", "two"), ("", "three")]
        .into_iter()
        .collect();
    // A batch made before every mapping is locked (MCL_CURRENT locks it
    // after the fact), and one made after (MCL_FUTURE locks it at birth).
    let early = PagedBatch::new(&input).unwrap();
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT;
    if let Err(e) = rustix::mm::mlockall(flags) {
        eprintln!("skipped: mlockall: {e}");
        return;
    }
    let late = PagedBatch::new(&input).unwrap();
    for paged in [&early, &late] {
        for op in ["scribble", "smear"] {
            assert_eq!(hostile.filter_lent(op, &[], paged).unwrap(), input, "{op}");
        }
        let stats = paged.lend_stats();
        assert!(stats.windows >= 2 && stats.dropped_pages >= 2, "{stats:?}");
        assert_eq!(paged.to_batch(), input);
    }
    rustix::mm::munlockall().unwrap();
}
