//! Every guest example, built into a real component, run through the host on
//! generated input and compared with an independent computation (plain loops
//! here), and byte for byte with the same operator run natively.

use std::collections::{BTreeMap, HashMap};

use dstream_core::{Batch, Encoding, OperatorKind};
use dstream_wasm::{Limits, Plugin, Runtime, Stage};

/// A small deterministic generator (splitmix64).
type Rng = dstream_core::generate::SplitMix64;

const WORDS: &[&str] = &[
    "the",
    "a",
    "stream",
    "batch",
    "interval",
    "lineage",
    "partition",
    "wasm",
    "needle",
    "hay",
    "spark",
    "flink",
    "state",
    "window",
    "key",
    "value",
    "résumé",
    "naïve",
    "x",
    "yy",
];

fn lines(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let words = rng.below(12) as usize;
            let mut line = String::new();
            for i in 0..words {
                if i > 0 {
                    line.push_str(if rng.below(5) == 0 { "  " } else { " " });
                }
                line.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            }
            line
        })
        .collect()
}

fn batch_of<S: AsRef<str>>(lines: &[S]) -> Batch {
    lines.iter().map(|l| ("", l.as_ref())).collect()
}

/// Pipeline stages without parameters.
fn stages(ops: &[&str]) -> Vec<Stage> {
    ops.iter()
        .map(|op| Stage {
            op: op.to_string(),
            params: vec![],
        })
        .collect()
}

/// Default limits (lending on).
fn runtime() -> Runtime {
    Runtime::new(Limits::default()).expect("runtime")
}

fn load(rt: &Runtime, name: &str, path: &str) -> Plugin {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    rt.load(name, &bytes).unwrap_or_else(|e| panic!("{e}"))
}

fn u64s(b: &Batch) -> Vec<(String, u64)> {
    b.iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k.to_vec()).unwrap(),
                u64::from_le_bytes(v.try_into().unwrap()),
            )
        })
        .collect()
}

fn counts_batch(counts: &[(String, u64)]) -> Batch {
    counts
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.to_le_bytes().to_vec()))
        .collect()
}

/// Converts a host batch for the SDK's native runner, and back.
fn to_sdk(b: &Batch) -> dstream_sdk::Batch {
    let (data, bounds) = b.clone().into_parts();
    dstream_sdk::Batch { data, bounds }
}

fn from_sdk(b: dstream_sdk::Batch) -> Batch {
    Batch::from_parts(b.data, b.bounds).unwrap()
}

/// The same operator natively, through the SDK's batch code.
fn native(
    plugin: &dstream_sdk::Plugin,
    kind: dstream_sdk::Kind,
    op: &str,
    params: &[(&str, &str)],
    input: &Batch,
) -> Batch {
    from_sdk(plugin.call(kind, op, params, &to_sdk(input)).unwrap())
}

#[test]
fn pageviews_running_count_matches_a_plain_loop() {
    let rt = runtime();
    let pv = load(&rt, "pageviews", dstream_artifacts::PAGEVIEWS);
    let mut rng = Rng::new(7);
    let urls: Vec<String> = (0..50).map(|i| format!("/page/{i}.html")).collect();
    let mut running: BTreeMap<String, u64> = BTreeMap::new();
    let mut state: Vec<(String, u64)> = Vec::new();
    for interval in 0..20 {
        let views: Vec<String> = (0..500 + interval * 37)
            .map(|i| {
                let url = &urls[(rng.below(50) * rng.below(50) / 50) as usize];
                format!("{url} 10.0.0.{} agent/{i}", rng.below(255))
            })
            .collect();
        let input = batch_of(&views);
        let ones = pv.map("url_one", &[], &input).unwrap();
        assert_eq!(ones.len(), views.len());
        assert_eq!(
            ones,
            native(
                &pageviews::PLUGIN,
                dstream_sdk::Kind::Map,
                "url_one",
                &[],
                &input
            )
        );
        // Running count: this interval's counts merged into the old state.
        let mut both = counts_batch(&state);
        both.extend_from(&ones);
        let merged = pv.reduce("merge", &[], &both).unwrap();
        state = u64s(&merged);
        for v in &views {
            *running
                .entry(v.split(' ').next().unwrap().to_string())
                .or_default() += 1;
        }
        let got: BTreeMap<String, u64> = state.iter().cloned().collect();
        assert_eq!(got, running, "interval {interval}");
        assert_eq!(got.len(), state.len(), "one record per key");
    }
}

#[test]
fn pageviews_inverse_undoes_merge() {
    let rt = runtime();
    let pv = load(&rt, "pageviews", dstream_artifacts::PAGEVIEWS);
    let current = counts_batch(&[("/a".into(), 10), ("/b".into(), 3)]);
    let leaving = counts_batch(&[("/a".into(), 4), ("/b".into(), 3)]);
    let out = pv.inverse("unmerge", &[], &current, &leaving).unwrap();
    assert_eq!(
        u64s(&out),
        vec![("/a".to_string(), 6), ("/b".to_string(), 0)]
    );
    let e = pv
        .inverse("unmerge", &[], &current, &Batch::new())
        .unwrap_err();
    assert!(e.to_string().contains("equal length"), "{e}");
}

fn word_counts(lines: &[String]) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for l in lines {
        for w in l.split_ascii_whitespace() {
            *m.entry(w.to_string()).or_default() += 1;
        }
    }
    m
}

#[test]
fn wordcount_split_sum_and_pipeline_match_a_plain_loop() {
    let rt = runtime();
    let wc = load(&rt, "wordcount", dstream_artifacts::WORDCOUNT);
    let mut text = lines(11, 20_000);
    // Every kind of ASCII whitespace (and vertical tab, which is not), long
    // words across the 16- and 64-byte edges of the SIMD word splitter.
    text.push("a\tb\nc\x0cd\re\x0bf  \t ".into());
    text.push(format!("{} {} x", "w".repeat(63), "é".repeat(40)));
    let input = batch_of(&text);
    // Several pieces (calls) in one instance.
    assert!(input.byte_len() > 2 * dstream_wasm::PIECE_BYTES);
    let expected = word_counts(&text);

    let words = wc.flat_map("split", &[], &input).unwrap();
    assert_eq!(words.len() as u64, expected.values().sum::<u64>());
    assert_eq!(
        words,
        native(
            &wordcount::PLUGIN,
            dstream_sdk::Kind::FlatMap,
            "split",
            &[],
            &input
        )
    );
    let summed = wc.reduce("sum", &[], &words).unwrap();
    let got: HashMap<String, u64> = u64s(&summed).into_iter().collect();
    assert_eq!(got, expected);
    assert_eq!(got.len(), summed.len());

    // The fused pipeline gives the very same bytes as the two calls, and a
    // record-wise one (run in pieces) those of its one call.
    assert_eq!(
        wc.pipeline(&stages(&["split", "sum"]), &input).unwrap(),
        summed
    );
    assert_eq!(wc.pipeline(&stages(&["split"]), &input).unwrap(), words);
    // Keys come out in order of first appearance.
    let first: Vec<String> = text
        .iter()
        .flat_map(|l| l.split_ascii_whitespace().map(str::to_string))
        .fold(Vec::new(), |mut v, w| {
            if !v.contains(&w) {
                v.push(w);
            }
            v
        });
    assert_eq!(
        u64s(&summed)
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>(),
        first
    );
}

#[test]
fn wordcount_split_checks_an_ascii_piece_once_and_still_refuses_bad_text() {
    let rt = runtime();
    let wc = load(&rt, "wordcount", dstream_artifacts::WORDCOUNT);
    // ASCII lines over several pieces: the SDK checks each piece once, in
    // 64-byte blocks (simd128), instead of each record.
    let mut text: Vec<String> = lines(5, 30_000)
        .into_iter()
        .map(|l| l.replace(|c: char| !c.is_ascii(), "z"))
        .collect();
    // Lines of every length around the 64-byte blocks.
    text.extend((0..130).map(|n| "k".repeat(n)));
    let input = batch_of(&text);
    assert!(input.byte_len() > 2 * dstream_wasm::PIECE_BYTES);
    let got: HashMap<String, u64> = u64s(&wc.pipeline(&stages(&["split", "sum"]), &input).unwrap())
        .into_iter()
        .collect();
    assert_eq!(got, word_counts(&text));
    // One record of valid non-ASCII text among ASCII ones is read as text.
    let mut mixed = text.clone();
    mixed[7_000] = "déjà vu".into();
    let got: HashMap<String, u64> = u64s(
        &wc.pipeline(&stages(&["split", "sum"]), &batch_of(&mixed))
            .unwrap(),
    )
    .into_iter()
    .collect();
    assert_eq!(got, word_counts(&mixed));
    // One record that is not UTF-8 is refused, by its number in the
    // partition, wherever its piece is and wherever in a 64-byte block its
    // bad byte falls.
    let cases = [0, 7_000, text.len() - 1]
        .map(|at| (&text[..], at, 3))
        .into_iter()
        .chain((0..64).map(|k| (&text[..200], 150, k)));
    for (text, at, k) in cases {
        let mut bad = Batch::new();
        for (i, l) in text.iter().enumerate() {
            if i == at {
                let mut line = vec![b'o'; k];
                line.extend_from_slice(b"\xff no");
                bad.push(b"", &line);
            } else {
                bad.push(b"", l.as_bytes());
            }
        }
        let e = wc.flat_map("split", &[], &bad).unwrap_err();
        // The same through the pipeline with the reduce (fed piece by
        // piece when there are several).
        let fed = wc.pipeline(&stages(&["split", "sum"]), &bad).unwrap_err();
        for e in [e, fed] {
            match &e {
                dstream_wasm::Error::Operator {
                    record, message, ..
                } => {
                    assert_eq!(*record, Some(at as u32), "{e}");
                    assert!(message.contains("expected UTF-8 text"), "{e}");
                }
                other => panic!("{other}"),
            }
        }
    }
}

#[test]
fn wordcount_windowed_sum_with_inverse_equals_recomputing_the_window() {
    let rt = runtime();
    let wc = load(&rt, "wordcount", dstream_artifacts::WORDCOUNT);
    let slices: Vec<Vec<String>> = (0..8).map(|i| lines(100 + i, 300)).collect();
    let counts: Vec<Batch> = slices
        .iter()
        .map(|s| {
            wc.reduce(
                "sum",
                &[],
                &wc.flat_map("split", &[], &batch_of(s)).unwrap(),
            )
            .unwrap()
        })
        .collect();
    // A window of 3 slices sliding by 1: add the entering slice, subtract the
    // leaving one with the inverse function.
    let mut window = {
        let mut all = counts[0].clone();
        all.extend_from(&counts[1]);
        all.extend_from(&counts[2]);
        wc.reduce("sum", &[], &all).unwrap()
    };
    for t in 3..slices.len() {
        let mut all = window.clone();
        all.extend_from(&counts[t]);
        let added = wc.reduce("sum", &[], &all).unwrap();
        // Align the leaving counts with the window's keys (zero when absent).
        let leaving_map: HashMap<String, u64> = u64s(&counts[t - 3]).into_iter().collect();
        let leaving = counts_batch(
            &u64s(&added)
                .iter()
                .map(|(k, _)| (k.clone(), leaving_map.get(k).copied().unwrap_or(0)))
                .collect::<Vec<_>>(),
        );
        window = wc.inverse("subtract", &[], &added, &leaving).unwrap();
        let got: HashMap<String, u64> = u64s(&window).into_iter().filter(|(_, v)| *v > 0).collect();
        let recomputed = word_counts(&slices[t - 2..=t].concat());
        assert_eq!(got, recomputed, "window ending at slice {t}");
    }
}

#[test]
fn wordcount_top_transform_sorts_and_truncates() {
    let rt = runtime();
    let wc = load(&rt, "wordcount", dstream_artifacts::WORDCOUNT);
    let text = lines(5, 2000);
    let summed = wc
        .pipeline(&stages(&["split", "sum"]), &batch_of(&text))
        .unwrap();
    let top = wc
        .transform("top", &[("n".into(), "5".into())], &summed)
        .unwrap();
    let mut expected: Vec<(String, u64)> = word_counts(&text).into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    expected.truncate(5);
    assert_eq!(u64s(&top), expected);
    // The default n is 10.
    assert_eq!(wc.transform("top", &[], &summed).unwrap().len(), 10);
    let e = wc
        .transform("top", &[("n".into(), "many".into())], &summed)
        .unwrap_err();
    assert!(e.to_string().contains("parameter `n`"), "{e}");
}

#[test]
fn grep_keeps_exactly_the_lines_containing_the_pattern() {
    let rt = runtime();
    let grep = load(&rt, "grep", dstream_artifacts::GREP);
    let text = lines(3, 20_000);
    let input = batch_of(&text);
    #[cfg(target_os = "linux")]
    let paged = dstream_wasm::PagedBatch::new(&input).unwrap();
    assert!(input.byte_len() > 2 * dstream_wasm::PIECE_BYTES);
    for pattern in ["needle", "é", "a", "stream batch", "absent-pattern"] {
        let params = [("pattern".to_string(), pattern.to_string())];
        let kept = grep.filter("grep", &params, &input).unwrap();
        #[cfg(target_os = "linux")]
        assert_eq!(grep.filter_lent("grep", &params, &paged).unwrap(), kept);
        let expected: Vec<&str> = text
            .iter()
            .map(String::as_str)
            .filter(|l| {
                l.as_bytes()
                    .windows(pattern.len())
                    .any(|w| w == pattern.as_bytes())
            })
            .collect();
        let got: Vec<&str> = kept
            .iter()
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
            .collect();
        assert_eq!(got, expected, "pattern {pattern:?}");
        assert_eq!(
            kept,
            native(
                &grep::PLUGIN,
                dstream_sdk::Kind::Filter,
                "grep",
                &[("pattern", pattern)],
                &input
            )
        );
    }
}

/// The sandbox's own substring search (`dstream::text::Finder`, simd128
/// blocks of 64 and 16 starts, then one by one) over bytes from a tiny
/// alphabet, so that partial matches are everywhere: values of every length
/// from empty to larger than a piece, matches at their starts and ends, in
/// keys, and across two records. Checked against a plain scan of each value.
#[test]
fn grep_finds_the_pattern_wherever_it_lies() {
    let rt = runtime();
    let grep = load(&rt, "grep", dstream_artifacts::GREP);
    let mut rng = Rng::new(5);
    let text = |len: u64, rng: &mut Rng| -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|_| b"nedl "[rng.below(5) as usize]).collect();
        if len >= 6 && rng.below(3) == 0 {
            let at = match rng.below(3) {
                0 => 0,
                1 => len - 6,
                _ => rng.below(len - 5),
            } as usize;
            v[at..at + 6].copy_from_slice(b"needle");
        }
        v
    };
    let mut input = Batch::new();
    let mut values = Vec::new();
    for i in 0..3000u64 {
        let key = if rng.below(4) == 0 {
            text(rng.below(12), &mut rng)
        } else {
            Vec::new()
        };
        let len = match i {
            0..=299 => i,
            _ if rng.below(50) == 0 => 2 * dstream_wasm::PIECE_BYTES as u64 / 3,
            _ => rng.below(300),
        };
        let value = text(len, &mut rng);
        input.push(&key, &value);
        values.push(value);
    }
    // Enough long values after them for more than one window to lend.
    while input.byte_len() <= 9 << 20 {
        let value = text(2 * dstream_wasm::PIECE_BYTES as u64 / 3, &mut rng);
        input.push(b"", &value);
        values.push(value);
    }
    assert!(input.byte_len() > 4 * dstream_wasm::PIECE_BYTES);
    #[cfg(target_os = "linux")]
    let paged = dstream_wasm::PagedBatch::new(&input).unwrap();
    let long = "needle ".repeat(12);
    for pattern in [
        "needle",
        "ne",
        "d",
        "e n",
        "dle n",
        "needle needle",
        long.trim_end(),
    ] {
        let params = [("pattern".to_string(), pattern.to_string())];
        let kept = grep.filter("grep", &params, &input).unwrap();
        let expected: Batch = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.windows(pattern.len()).any(|w| w == pattern.as_bytes()))
            .map(|(i, _)| input.get(i))
            .collect();
        assert!(
            !expected.is_empty() || pattern.len() > 20,
            "{pattern:?} never occurs"
        );
        assert_eq!(kept, expected, "pattern {pattern:?}");
        // Lent instead of copied: windows of up to 8 MiB, each starting
        // inside a 64 KiB page, the same records kept.
        #[cfg(target_os = "linux")]
        assert_eq!(
            grep.filter_lent("grep", &params, &paged).unwrap(),
            expected,
            "lent, pattern {pattern:?}"
        );
    }
    #[cfg(target_os = "linux")]
    {
        assert_eq!(paged.to_batch(), input, "the lent pages came back intact");
        // Lent, not silently copied: two windows per pattern; grep writes
        // nothing into its input, so no page was dropped.
        let stats = paged.lend_stats();
        assert!(
            !dstream_wasm::PagedBatch::lending_supported() || stats.windows >= 14,
            "{stats:?}"
        );
        assert_eq!(stats.dropped_pages, 0, "{stats:?}");
    }
    // Empty; one record smaller than a page; a record bigger than a window
    // ending on a 64 KiB edge, then an empty one (whose window starts at
    // the end of the pages).
    #[cfg(target_os = "linux")]
    let params = [("pattern".to_string(), "ne".to_string())];
    #[cfg(target_os = "linux")]
    let mut edge = Batch::new();
    #[cfg(target_os = "linux")]
    edge.push(b"", &b"ne".repeat(((8 << 20) + (64 << 10)) / 2));
    #[cfg(target_os = "linux")]
    edge.push(b"", b"");
    #[cfg(target_os = "linux")]
    for b in [
        Batch::new(),
        [("k", "a needle")].into_iter().collect(),
        edge,
    ] {
        let paged = dstream_wasm::PagedBatch::new(&b).unwrap();
        assert_eq!(
            grep.filter_lent("grep", &params, &paged).unwrap(),
            grep.filter("grep", &params, &b).unwrap()
        );
    }
}

#[test]
fn topk_keeps_the_top_k_per_group_across_intervals() {
    let rt = runtime();
    let topk = load(&rt, "topk", dstream_artifacts::TOPK);
    let mut rng = Rng::new(99);
    let mut best: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut state = Batch::new();
    let params = [("k".to_string(), "4".to_string())];
    for _ in 0..10 {
        let lines: Vec<String> = (0..400)
            .map(|_| {
                format!(
                    "g{} item{} {}",
                    rng.below(6),
                    rng.below(40),
                    rng.below(1000)
                )
            })
            .collect();
        for l in &lines {
            let f: Vec<&str> = l.split(' ').collect();
            let s: u64 = f[2].parse().unwrap();
            let e = best
                .entry(f[0].into())
                .or_default()
                .entry(f[1].into())
                .or_default();
            *e = (*e).max(s);
        }
        let parsed = topk.map("parse", &[], &batch_of(&lines)).unwrap();
        state = topk.update_state("top", &params, &parsed, &state).unwrap();
        let sdk_state = native(
            &topk::PLUGIN,
            dstream_sdk::Kind::Map,
            "parse",
            &[],
            &batch_of(&lines),
        );
        assert_eq!(parsed, sdk_state);
        assert_eq!(state.len(), best.len());
        for (k, v) in state.iter() {
            let group = std::str::from_utf8(k).unwrap();
            let dstream_sdk::Postcard(top): dstream_sdk::Postcard<Vec<(String, u64)>> =
                dstream_sdk::Decode::decode(v).unwrap();
            let mut expected: Vec<(String, u64)> =
                best[group].iter().map(|(i, s)| (i.clone(), *s)).collect();
            expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            expected.truncate(4);
            assert_eq!(top, expected, "group {group}");
        }
    }
    let bad = topk
        .map("parse", &[], &batch_of(&["g1 item 5", "g1 item five"]))
        .unwrap_err();
    assert!(
        matches!(
            bad,
            dstream_wasm::Error::Operator {
                record: Some(1),
                ..
            }
        ),
        "{bad}"
    );
}

#[test]
fn describe_lists_kinds_params_and_encodings() {
    let rt = runtime();
    let wc = load(&rt, "wordcount", dstream_artifacts::WORDCOUNT);
    let info = wc.info();
    assert_eq!(info.name, "wordcount");
    let split = info.operator("split").unwrap();
    assert_eq!(split.kind, OperatorKind::FlatMap);
    assert_eq!(split.input, (Encoding::None, Encoding::Utf8));
    assert_eq!(split.output, (Encoding::Utf8, Encoding::U64));
    let top = info.operator("top").unwrap();
    assert_eq!(top.kind, OperatorKind::Transform);
    assert_eq!(top.params.len(), 1);
    assert!(!top.params[0].required);
    assert_eq!(top.params[0].description, "How many words to keep.");
    // Wrapped doc comment lines join into one line.
    assert_eq!(
        top.description,
        "The `n` most frequent words of a partition of (word, count), most frequent first, ties in word order."
    );
    let grep = load(&rt, "grep", dstream_artifacts::GREP);
    assert!(grep.info().operators[0].params[0].required);
    let topk = load(&rt, "topk", dstream_artifacts::TOPK);
    let t = topk.info().operator("top").unwrap();
    assert_eq!(t.kind, OperatorKind::UpdateState);
    assert_eq!(t.output, (Encoding::Utf8, Encoding::Postcard));
}

#[test]
fn host_checks_operator_name_kind_and_params_before_running() {
    let rt = runtime();
    let grep = load(&rt, "grep", dstream_artifacts::GREP);
    let input = batch_of(&["a"]);
    let e = grep.filter("nope", &[], &input).unwrap_err();
    assert_eq!(
        e.to_string(),
        "plugin `grep` has no operator `nope` (it has: grep)"
    );
    let e = grep.map("grep", &[], &input).unwrap_err();
    assert_eq!(e.to_string(), "operator `grep/grep` is a filter, not a map");
    let e = grep.filter("grep", &[], &input).unwrap_err();
    assert_eq!(
        e.to_string(),
        "operator `grep/grep` needs parameter `pattern`"
    );
    // Unknown parameters are refused by the plugin itself.
    let e = grep
        .filter(
            "grep",
            &[
                ("pattern".into(), "a".into()),
                ("colour".into(), "x".into()),
            ],
            &input,
        )
        .unwrap_err();
    assert!(e.to_string().contains("unknown parameter `colour`"), "{e}");
}

#[test]
fn many_calls_and_threads_reuse_the_instance_pool() {
    let rt = Runtime::new(Limits {
        instances: 4,
        ..Limits::default()
    })
    .unwrap();
    let grep = std::sync::Arc::new(load(&rt, "grep", dstream_artifacts::GREP));
    let input = batch_of(&lines(1, 100));
    let params = [("pattern".to_string(), "a".to_string())];
    let expected = grep.filter("grep", &params, &input).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (grep, input, params, expected) = (
                grep.clone(),
                input.clone(),
                params.clone(),
                expected.clone(),
            );
            std::thread::spawn(move || {
                for _ in 0..50 {
                    assert_eq!(grep.filter("grep", &params, &input).unwrap(), expected);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
