//! Hostile plugins: each misbehaves in one way; each gives a clear typed error,
//! and the same host runs the next good call correctly.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dstream_core::Batch;
use dstream_wasm::{Cancel, Error, Limits, Plugin, Runtime};

fn limits() -> Limits {
    Limits {
        memory: 64 << 20,
        deadline: Duration::from_millis(300),
        ..Limits::default()
    }
}

/// Whether this host lends pages to plugins; says so when a test that
/// needs it is skipped.
#[cfg(target_os = "linux")]
#[allow(clippy::print_stderr)]
fn can_lend() -> bool {
    let yes = dstream_wasm::PagedBatch::lending_supported();
    if !yes {
        eprintln!("skipped: this kernel cannot move pages (MREMAP_DONTUNMAP); plugins get copies");
    }
    yes
}

fn load(rt: &Runtime, name: &str, path: &str) -> Plugin {
    rt.load(name, &std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn lines(v: &[&str]) -> Batch {
    v.iter().map(|l| ("", *l)).collect()
}

/// A good call on the same runtime still works after a bad one.
fn still_healthy(rt: &Runtime, hostile: &Plugin) {
    let input = lines(&["ok", "fine"]);
    assert_eq!(hostile.map("fail", &[], &input).unwrap(), input);
    let grep = load(rt, "grep", dstream_artifacts::GREP);
    let kept = grep
        .filter("grep", &[("pattern".into(), "fi".into())], &input)
        .unwrap();
    assert_eq!(kept, lines(&["fine"]));
}

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline() {
    let rt = Runtime::new(limits()).unwrap();
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    let start = Instant::now();
    let e = h.map("spin", &[], &lines(&["x"])).unwrap_err();
    let took = start.elapsed();
    assert!(matches!(e, Error::Deadline { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "operator `hostile/spin` ran past its deadline of 300ms and was stopped"
    );
    assert!(
        took >= Duration::from_millis(300),
        "stopped early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stopped late: {took:?}");
    still_healthy(&rt, &h);
}

#[test]
fn a_running_call_is_stopped_by_its_cancel_token() {
    // A deadline far away: only the token can stop the spin.
    let rt = Runtime::new(Limits {
        deadline: Duration::from_secs(600),
        ..limits()
    })
    .unwrap();
    let h = Arc::new(load(&rt, "hostile", dstream_artifacts::HOSTILE));
    let token = Cancel::new();
    let (spinner, in_scope) = (h.clone(), token.clone());
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = in_scope.scope(|| spinner.map("spin", &[], &lines(&["x"])));
        done.send(r.map(|_| ())).unwrap();
    });
    assert!(
        result.recv_timeout(Duration::from_millis(200)).is_err(),
        "the spin ended by itself"
    );
    token.cancel();
    let e = result
        .recv_timeout(Duration::from_secs(30))
        .expect("cancelling did not stop the call")
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled { .. }), "{e}");
    assert_eq!(e.to_string(), "operator `hostile/spin` was cancelled");
    // Under a cancelled token, a call stops before it starts; outside it,
    // the same plugin works.
    let e = token
        .scope(|| h.map("fail", &[], &lines(&["ok"])))
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled { .. }), "{e}");
    still_healthy(&rt, &h);
}

#[test]
fn a_memory_bomb_is_stopped_by_the_limit() {
    let rt = Runtime::new(limits()).unwrap();
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    let e = h.map("hog", &[], &lines(&["x"])).unwrap_err();
    match &e {
        Error::MemoryLimit { wanted, limit, .. } => {
            assert_eq!(*limit, 64 << 20);
            assert!(*wanted > *limit);
        }
        other => panic!("expected a memory limit error, got {other}"),
    }
    assert!(
        e.to_string()
            .starts_with("operator `hostile/hog` tried to grow its memory")
    );
    still_healthy(&rt, &h);
}

#[test]
fn a_trap_is_a_typed_error() {
    let rt = Runtime::new(limits()).unwrap();
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    assert_eq!(h.map("trap", &[], &lines(&["a"])).unwrap(), lines(&["a"]));
    let e = h.map("trap", &[], &lines(&["a", "trap"])).unwrap_err();
    match &e {
        Error::Trap {
            operator,
            trap,
            guest_message,
            ..
        } => {
            assert_eq!(operator, "trap");
            assert!(trap.contains("unreachable"), "{trap}");
            assert_eq!(guest_message, &None);
        }
        other => panic!("expected a trap, got {other}"),
    }
    still_healthy(&rt, &h);
}

/// Lent pages are copy-on-write: a plugin writing into its input, with a
/// store (`scribble`) or with `memory.fill`/`memory.copy` (`smear`, which
/// wasmtime runs in host code, where a fault would kill the process),
/// changes only its own view, as with a copy. It reads back what it wrote,
/// the output equals the copied call's, the copies are found and dropped,
/// and the partition, read by the host and lent again, is as it was.
#[cfg(target_os = "linux")]
#[test]
fn writes_into_lent_input_change_only_the_plugins_view() {
    if !can_lend() {
        return;
    }
    let rt = Runtime::new(limits()).unwrap();
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    let grep = load(&rt, "grep", dstream_artifacts::GREP);
    let params = [("pattern".to_string(), "t".to_string())];
    let small = lines(&["one", "two", "three"]);
    // Over 8 MiB: more than one window, each written all over.
    let big: Batch = (0..100_000)
        .map(|i| (String::new(), format!("{i:>6} {}", "tx".repeat(46))))
        .collect();
    assert!(big.byte_len() > 9 << 20);
    for op in ["scribble", "smear"] {
        for input in [&small, &big] {
            assert_eq!(&h.filter(op, &[], input).unwrap(), input, "{op} copied");
            let paged = dstream_wasm::PagedBatch::new(input).unwrap();
            assert_eq!(&h.filter_lent(op, &[], &paged).unwrap(), input, "{op} lent");
            let stats = paged.lend_stats();
            assert!(
                stats.windows >= if input.byte_len() > 8 << 20 { 2 } else { 1 },
                "{stats:?}"
            );
            assert_eq!(stats.checked, stats.windows, "{op}: every window faulted");
            assert!(stats.dropped_pages > 0, "{op}: {stats:?}");
            assert_eq!(&paged.to_batch(), input, "{op}: the partition changed");
            let expected = grep.filter("grep", &params, input).unwrap();
            for _ in 0..3 {
                assert_eq!(grep.filter_lent("grep", &params, &paged).unwrap(), expected);
            }
            assert_eq!(
                paged.lend_stats().dropped_pages,
                stats.dropped_pages,
                "grep wrote"
            );
        }
    }
    still_healthy(&rt, &h);
}

/// The host reads a lent batch through a view that lending never moves and
/// nothing can write: while plugins on two threads write all over their
/// lent input (`smear`) from the same shared batch, a third thread reading
/// it sees the partition unchanged; each call's output is the copied
/// call's (a call that finds the pages lent copies).
#[cfg(target_os = "linux")]
#[test]
fn a_lent_batch_reads_the_same_from_every_thread_meanwhile() {
    if !can_lend() {
        return;
    }
    let rt = Runtime::new(limits()).unwrap();
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    let input: Batch = (0..100_000)
        .map(|i| (String::new(), format!("{i:>6} {}", "tx".repeat(46))))
        .collect();
    let paged = Arc::new(dstream_wasm::PagedBatch::new(&input).unwrap());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (paged, done, data) = (Arc::clone(&paged), Arc::clone(&done), input.data().to_vec());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) || reads == 0 {
                assert!(paged.data() == &data[..], "the host saw a plugin's write");
                reads += 1;
            }
            reads
        })
    };
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..4 {
                    assert_eq!(h.filter_lent("smear", &[], &paged).unwrap(), input);
                }
            });
        }
    });
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let stats = paged.lend_stats();
    assert!(stats.windows >= 2 && stats.dropped_pages > 0, "{stats:?}");
    assert_eq!(paged.to_batch(), input);
}

/// A `lend` that lies about its region (too short, not aligned, outside
/// the memory) is refused with a typed error naming the plugin and
/// operator, before any page moves; the partition stays whole and the same
/// host runs the next calls right.
#[cfg(target_os = "linux")]
#[test]
fn a_lying_lend_is_refused_before_any_page_moves() {
    if !can_lend() {
        return;
    }
    let rt = Runtime::new(limits()).unwrap();
    let liar = load(&rt, "hostile-lend", dstream_artifacts::HOSTILE_LEND);
    let input = lines(&["one", "two", "three"]);
    let paged = dstream_wasm::PagedBatch::new(&input).unwrap();
    for (op, want) in [
        ("short", "`lend(65536)` gave a region of 32768 bytes"),
        (
            "unaligned",
            "`lend(65536)` gave a region of 65536 bytes, not aligned to 64 KiB",
        ),
        ("outside", "out of bounds"),
    ] {
        let e = liar.filter_lent(op, &[], &paged).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("hostile-lend"), "{op}: {text}");
        assert!(text.contains(op), "{op}: {text}");
        assert!(text.contains(want), "{op}: {text}");
        if op != "outside" {
            assert!(matches!(e, Error::BadOutput { .. }), "{op}: {e:?}");
        }
        assert_eq!(paged.to_batch(), input, "{op}");
        // The copying path of the same plugin is unaffected.
        assert_eq!(liar.filter(op, &[], &input).unwrap(), input, "{op}");
    }
    let grep = load(&rt, "grep", dstream_artifacts::GREP);
    let params = [("pattern".to_string(), "o".to_string())];
    let kept = grep.filter_lent("grep", &params, &paged).unwrap();
    assert_eq!(kept, lines(&["one", "two"]));
}

/// Under a small memory limit the host lends smaller windows (the region
/// the guest sets aside stays within `Limits::call_input()`), so a
/// partition several times that size is still filtered, lent, exactly as
/// when copied.
#[cfg(target_os = "linux")]
#[test]
fn a_small_memory_limit_lends_smaller_windows() {
    let rt = Runtime::new(Limits {
        memory: 4 << 20,
        ..limits()
    })
    .unwrap();
    assert_eq!(rt.limits().call_input(), 512 << 10);
    let grep = load(&rt, "grep", dstream_artifacts::GREP);
    let text: Vec<String> = (0..450_000)
        .map(|i| format!("line {i} {}", if i % 7 == 0 { "needle" } else { "hay" }))
        .collect();
    let input: Batch = text.iter().map(|l| ("", l.as_str())).collect();
    assert!(
        input.byte_len() > rt.limits().memory,
        "bigger than the memory"
    );
    let params = [("pattern".to_string(), "needle".to_string())];
    let copied = grep.filter("grep", &params, &input).unwrap();
    assert_eq!(copied.len(), 450_000_usize.div_ceil(7));
    let paged = dstream_wasm::PagedBatch::new(&input).unwrap();
    assert_eq!(grep.filter_lent("grep", &params, &paged).unwrap(), copied);
}

/// A `lend` over the plugin's own data segment: the guest's pages there
/// are moved aside for the call and put back, so later instances in the
/// same pool slot still find their data (wasmtime's reset would not restore
/// an image page that was replaced).
#[cfg(target_os = "linux")]
#[test]
fn a_lend_over_the_data_image_leaves_it_intact() {
    if !can_lend() {
        return;
    }
    let rt = Runtime::new(Limits {
        instances: 1,
        ..limits()
    })
    .unwrap();
    let liar = load(&rt, "hostile-lend", dstream_artifacts::HOSTILE_LEND);
    let input = lines(&["one", "two", "three"]);
    assert_eq!(liar.filter("probe", &[], &input).unwrap(), input);
    let paged = dstream_wasm::PagedBatch::new(&input).unwrap();
    assert_eq!(liar.filter_lent("image", &[], &paged).unwrap(), input);
    assert_eq!(paged.to_batch(), input);
    for _ in 0..3 {
        assert_eq!(liar.filter("probe", &[], &input).unwrap(), input);
    }
}

/// Lending is on by default and can be turned off: then `filter_lent`
/// copies (no window lent) and gives the same output.
#[cfg(target_os = "linux")]
#[test]
fn lending_can_be_turned_off() {
    assert!(Limits::default().lend_input);
    let rt = Runtime::new(Limits {
        lend_input: false,
        ..limits()
    })
    .unwrap();
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    let input = lines(&["one", "two", "three"]);
    let paged = dstream_wasm::PagedBatch::new(&input).unwrap();
    assert_eq!(h.filter_lent("smear", &[], &paged).unwrap(), input);
    assert_eq!(paged.lend_stats(), dstream_wasm::LendStats::default());
    assert_eq!(paged.to_batch(), input);
}

#[test]
fn a_panic_reports_its_message() {
    let rt = Runtime::new(limits()).unwrap();
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    let e = h.map("boom", &[], &lines(&["a", "boom"])).unwrap_err();
    match &e {
        Error::Trap {
            guest_message: Some(m),
            ..
        } => {
            assert!(m.contains("boom at \"boom\""), "{m}");
        }
        other => panic!("expected a trap with the panic message, got {other}"),
    }
    assert!(
        e.to_string().contains("(the plugin said: panicked at"),
        "{e}"
    );
    still_healthy(&rt, &h);
}

#[test]
fn a_guest_error_names_the_record() {
    let rt = Runtime::new(limits()).unwrap();
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    let e = h
        .map("fail", &[], &lines(&["ok", "ok", "so bad"]))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "operator `hostile/fail` failed at record 2: refusing \"so bad\""
    );
    // A partition run in several pieces numbers the record in the whole
    // partition, not in its piece.
    let line = "x".repeat(1000);
    let mut many: Vec<&str> = vec![&line; 3 * dstream_wasm::PIECE_BYTES / 1000];
    let at = many.len() - 5;
    many[at] = "bad one";
    let e = h.map("fail", &[], &lines(&many)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("operator `hostile/fail` failed at record {at}: refusing \"bad one\"")
    );
    still_healthy(&rt, &h);
}

#[test]
fn a_malformed_filter_selection_is_refused() {
    let rt = Runtime::new(limits()).unwrap();
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    let e = h
        .filter("bad_select", &[], &lines(&["a", "b"]))
        .unwrap_err();
    assert!(matches!(e, Error::BadOutput { .. }), "{e}");
    // Over several pieces, each piece's indices are checked against that
    // piece (one past its end would otherwise pick the next piece's first
    // record).
    let line = "x".repeat(1000);
    let many = vec![line.as_str(); 3 * dstream_wasm::PIECE_BYTES / 1000];
    let e = h.filter("bad_select", &[], &lines(&many)).unwrap_err();
    assert!(matches!(e, Error::BadOutput { .. }), "{e}");
    assert!(e.to_string().contains("(a call over "), "{e}");
    still_healthy(&rt, &h);
}

#[test]
fn the_output_of_a_call_in_pieces_is_held_to_the_memory_limit() {
    let rt = Runtime::new(Limits {
        memory: 4 << 20,
        ..limits()
    })
    .unwrap();
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    // 6 MB through a map that copies each line: every piece fits the
    // sandbox, the whole output does not.
    let line = "x".repeat(1000);
    let many = vec![line.as_str(); 6_000];
    let e = h.map("fail", &[], &lines(&many)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "operator `hostile/fail` produced over 4194304 bytes of output for one partition \
         (the memory limit) and was stopped"
    );
    still_healthy(&rt, &h);
}

/// Counts the plugin log events this thread emits.
struct Count(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if e.metadata().target() == dstream_wasm::GUEST_LOG_TARGET {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn a_chatty_plugin_is_capped() {
    use tracing_subscriber::layer::SubscriberExt;
    let rt = Runtime::new(Limits::default()).unwrap();
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    let n = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(Count(n.clone()));
    tracing::subscriber::with_default(subscriber, || {
        assert_eq!(h.map("chatty", &[], &lines(&["x"])).unwrap(), lines(&["x"]));
    });
    assert_eq!(n.load(Ordering::Relaxed), 1000);
}

const WASI_IMPORTER: &str = r#"
(component
  (import "wasi:filesystem/preopens@0.2.0" (instance))
  (instance $ops)
  (export "dstream:plugin/operators@0.2.0" (instance $ops))
)"#;

#[test]
fn bad_components_are_refused_at_load() {
    let rt = Runtime::new(limits()).unwrap();
    let wat = |s: &str| wat::parse_str(s).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "wasi",
            wat(WASI_IMPORTER),
            "plugin `wasi` imports `wasi:filesystem/preopens@0.2.0`, which dstream does not allow: plugins get no WASI",
        ),
        (
            "core",
            wat("(module (func (export \"f\")))"),
            "plugin `core` is a core WebAssembly module, not a component",
        ),
        (
            "noise",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            "plugin `noise` is not a WebAssembly binary",
        ),
        (
            "truncated",
            std::fs::read(dstream_artifacts::GREP).unwrap()[..3000].to_vec(),
            "plugin `truncated` is not a valid component",
        ),
        (
            "other-world",
            wat("(component (instance $i) (export \"acme:thing/api@1.0.0\" (instance $i)))"),
            "plugin `other-world` does not export dstream:plugin/operators (it exports: acme:thing/api@1.0.0)",
        ),
        (
            "empty",
            wat("(component)"),
            "plugin `empty` does not export dstream:plugin/operators (it exports: nothing)",
        ),
        (
            "future",
            wat(
                "(component (instance $i) (export \"dstream:plugin/operators@0.3.0\" (instance $i)))",
            ),
            "plugin `future` was built for dstream:plugin@0.3.0, but this host speaks @0.2.1",
        ),
        (
            // The contract before `feed`.
            "past",
            wat(
                "(component (instance $i) (export \"dstream:plugin/operators@0.1.0\" (instance $i)))",
            ),
            "plugin `past` was built for dstream:plugin@0.1.0, but this host speaks @0.2.1",
        ),
    ];
    for (name, bytes, want) in cases {
        let e = rt.load(name, &bytes).unwrap_err();
        assert!(e.to_string().starts_with(want), "{name}: got {e}");
    }
    let small = Runtime::new(Limits {
        component_size: 1000,
        ..limits()
    })
    .unwrap();
    let e = small
        .load("big", &std::fs::read(dstream_artifacts::GREP).unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 1000, .. }), "{e}");
    let h = load(&rt, "hostile", dstream_artifacts::HOSTILE);
    still_healthy(&rt, &h);
}
