//! A plugin that imports WASI (built for wasm32-wasip2, as components from
//! other toolchains are): refused by default; under the deterministic
//! policy it runs, sees no files, environment or arguments, a frozen clock
//! and seeded randomness, and gives the same bytes on every run and host.

use dstream_core::Batch;
use dstream_core::job::Wasi;
use dstream_wasm::{Error, Limits, Runtime};

fn lines(v: &[&str]) -> Batch {
    v.iter().map(|l| ("", *l)).collect()
}

fn values(b: &Batch) -> Vec<String> {
    b.iter()
        .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
        .collect()
}

#[test]
fn a_wasi_plugin_runs_only_under_deterministic_stand_ins() {
    let bytes = std::fs::read(dstream_artifacts::WASI_PROBE).unwrap();
    let rt = Runtime::new(Limits::default()).unwrap();
    let e = rt.load("probe", &bytes).unwrap_err();
    assert!(matches!(e, Error::ForbiddenImport { .. }), "{e}");
    assert!(
        e.to_string().contains("wasi = \"deterministic\""),
        "the refusal says how to allow it: {e}"
    );

    let probe = rt.load_with("probe", &bytes, Wasi::Deterministic).unwrap();
    let input = lines(&["a", "b", "a"]);
    // Each record sleeps an hour: under the frozen clock the sleep returns
    // at once (a real one would hold the host thread past every deadline).
    let started = std::time::Instant::now();
    let first = probe.map("probe", &[], &input).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the plugin's sleep blocked the host"
    );
    let seen = values(&first);
    assert_eq!(seen.len(), 3);
    for (line, out) in ["a", "b", "a"].iter().zip(&seen) {
        // The wall clock is frozen at 1970, nothing of the host shows.
        assert!(out.starts_with(&format!("{line} time=0 hash=")), "{out}");
        assert!(out.ends_with(" home=false args=0 files=false"), "{out}");
    }
    // Seeded randomness: every run, in a fresh instance or in another
    // runtime, gives the same bytes.
    assert_eq!(probe.map("probe", &[], &input).unwrap(), first);
    let other = Runtime::new(Limits::default()).unwrap();
    let again = other
        .load_with("probe", &bytes, Wasi::Deterministic)
        .unwrap();
    assert_eq!(again.map("probe", &[], &input).unwrap(), first);
}

/// A WASI plugin is never lent its input: WASI imports write their results
/// into guest memory from host code (here `wall-clock.now`, told to write
/// into the plugin's input), which could happen where the calling thread's
/// fault count, which finds writes into lent pages, would not see it.
/// `filter_lent` copies for it, and gives `filter`'s output.
#[cfg(target_os = "linux")]
#[test]
fn a_wasi_plugin_is_copied_to_never_lent() {
    let bytes = std::fs::read(dstream_artifacts::WASI_PROBE).unwrap();
    let rt = Runtime::new(Limits::default()).unwrap();
    let probe = rt.load_with("probe", &bytes, Wasi::Deterministic).unwrap();
    let input = lines(&[
        "a line long enough to hold a datetime",
        "and another one as long as that one",
    ]);
    assert_eq!(probe.filter("clobber", &[], &input).unwrap(), input);
    let paged = dstream_wasm::PagedBatch::new(&input).unwrap();
    assert_eq!(probe.filter_lent("clobber", &[], &paged).unwrap(), input);
    assert_eq!(paged.to_batch(), input);
    assert_eq!(paged.lend_stats().windows, 0, "copied, not lent");
}
