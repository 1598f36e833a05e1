//! Lending leaves the process's memory mappings as it found them: a guest
//! that names a different (honest) region on every call does not make the
//! host's mapping count grow, which would end at `vm.max_map_count` with a
//! move that fails; and partitions hold no file descriptors. Alone in its
//! test binary, so no other test's mappings come and go meanwhile.
#![cfg(target_os = "linux")]

use dstream_core::Batch;
use dstream_wasm::{Limits, PagedBatch, Runtime};

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn lending_at_moving_regions_keeps_the_mapping_count() {
    if !PagedBatch::lending_supported() {
        return;
    }
    let rt = Runtime::new(Limits {
        instances: 2,
        ..Limits::default()
    })
    .unwrap();
    let bytes = std::fs::read(dstream_artifacts::HOSTILE_LEND).unwrap();
    let wander = rt.load("hostile-lend", &bytes).unwrap();
    let input: Batch = [("", "one"), ("", "two"), ("", "three")]
        .into_iter()
        .collect();
    let paged = PagedBatch::new(&input).unwrap();
    let run = |k: usize, paged: &PagedBatch| {
        let params = [("pages".to_string(), (k % 7).to_string())];
        assert_eq!(wander.filter_lent("wander", &params, paged).unwrap(), input);
    };
    // Warm the pool's slots first.
    for k in 0..20 {
        run(k, &paged);
    }
    let before = mappings();
    for k in 0..1000 {
        run(k, &paged);
    }
    let after = mappings();
    assert!(
        after <= before + 20,
        "mappings grew from {before} to {after} over 1000 lent calls"
    );
    assert_eq!(paged.to_batch(), input);
    // A batch holds no file descriptor (its memfd lives on in its mapping):
    // more batches than a default `ulimit -n` of 1024 at once.
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    let many: Vec<PagedBatch> = (0..1500)
        .map(|_| PagedBatch::new(&input).unwrap())
        .collect();
    assert!(fds() <= before + 5, "{before} -> {} descriptors", fds());
    assert!(many.iter().all(|b| b.to_batch() == input));
}
