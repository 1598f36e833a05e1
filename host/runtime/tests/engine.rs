//! Every operator and window kind of a job, run by the embedded engine with
//! the real guest-example components over many intervals, checked exactly
//! against plain loops over the same input; and a checkpoint restored into a
//! fresh engine continuing with identical bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use dstream_core::Batch;
use dstream_core::exec::Block;
use dstream_core::generate::SplitMix64;
use dstream_core::job::{Job, JobFile, NodeId};
use dstream_runtime::local::Engine;
use dstream_runtime::{checkpoint, plugins};
use dstream_wasm::{Limits, Runtime};

const JOB: &str = r#"
name = "every-operator"
interval = "1s"
partitions = 3
checkpoint_interval = "3s"
[plugins]
pv = "PAGEVIEWS"
wc = "WORDCOUNT"
grep = "GREP"
topk = "TOPK"
[sources.a]
kind = "tcp"
addr = "127.0.0.1:1"
[sources.b]
kind = "tcp"
addr = "127.0.0.1:1"
[sources.scores]
kind = "tcp"
addr = "127.0.0.1:1"

[streams.ones]
from = "a"
map = "pv/url_one"
[streams.running]
from = "ones"
running_reduce = "sum"
[streams.running_plugin]
from = "ones"
running_reduce = "pv/merge"
[streams.per_batch]
from = "ones"
count_by_key = true
[streams.words]
from = "a"
flat_map = "wc/split"
[streams.word_counts]
from = "words"
reduce_by_key = "wc/sum"
[streams.words_b]
from = "b"
flat_map = "wc/split"
[streams.word_counts_b]
from = "words_b"
reduce_by_key = "sum"
[streams.joined]
from = ["word_counts", "word_counts_b"]
join = true
[streams.top]
from = "word_counts"
transform = "wc/top"
params = { n = 2 }
[streams.hits]
from = "a"
filter = "grep/grep"
params = { pattern = "needle" }
[streams.hits_b]
from = "b"
filter = "grep/grep"
params = { pattern = "hay" }
[streams.both]
from = ["hits", "hits_b"]
union = true
[streams.recent]
from = "hits"
window = { length = "3s", slide = "2s" }
[streams.win_inv]
from = "words"
reduce_by_key_and_window = { reduce = "wc/sum", inverse = "wc/subtract", length = "4s", slide = "2s" }
[streams.win_noinv]
from = "words"
reduce_by_key_and_window = { reduce = "wc/sum", length = "4s", slide = "2s" }
[streams.win_native]
from = "ones"
reduce_by_key_and_window = { reduce = "sum", inverse = "subtract", length = "3s" }
[streams.win_max]
from = "ones"
reduce_by_key_and_window = { reduce = "max", length = "3s" }
[streams.count_win]
from = "a"
count_by_window = { length = "3s", slide = "1s" }
[streams.parsed]
from = "scores"
map = "topk/parse"
[streams.leaders]
from = "parsed"
update_state_by_key = "topk/top"
params = { k = 2 }
[streams.shown]
from = "leaders"
map = "topk/show"
"#;

const BATCHES: u64 = 14;

const WORDS: &[&str] = &[
    "/a", "/b", "/c", "needle", "hay", "stream", "batch", "lineage", "wasm", "résumé", "x",
];

/// The input lines of each source at batch `n`: some batches are empty, the
/// sizes vary, every line has at least one word.
fn input(n: u64) -> [Vec<String>; 3] {
    let mut rng = SplitMix64::new(n * 7919);
    let mut lines = |count: u64| -> Vec<String> {
        (0..count)
            .map(|_| {
                let words = 1 + rng.below(5);
                (0..words)
                    .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let a = if n == 5 {
        Vec::new()
    } else {
        lines(20 + n * 13 % 37)
    };
    let b = if n == 9 {
        Vec::new()
    } else {
        lines(10 + n * 7 % 23)
    };
    let mut rng = SplitMix64::new(n * 31);
    let scores = (0..(n % 4) * 5)
        .map(|_| format!("g{} item{} {}", rng.below(3), rng.below(8), rng.below(100)))
        .collect();
    [a, b, scores]
}

fn lines_batch(lines: &[String]) -> Batch {
    lines.iter().map(|l| ("", l.as_str())).collect()
}

fn load_job() -> (Job, BTreeMap<String, dstream_wasm::Plugin>) {
    load_job_with(JOB, &Limits::default())
}

/// `text` with the guest examples' paths for their names in capitals,
/// parsed, its plugins loaded under `limits`, resolved.
fn load_job_with(text: &str, limits: &Limits) -> (Job, BTreeMap<String, dstream_wasm::Plugin>) {
    let text = text
        .replace("PAGEVIEWS", dstream_artifacts::PAGEVIEWS)
        .replace("WORDCOUNT", dstream_artifacts::WORDCOUNT)
        .replace("GREP", dstream_artifacts::GREP)
        .replace("TOPK", dstream_artifacts::TOPK)
        .replace("HOSTILE", dstream_artifacts::HOSTILE);
    let file = JobFile::parse(&text).unwrap();
    let runtime = Runtime::new(limits.clone()).unwrap();
    let loaded: BTreeMap<_, _> = file
        .plugins()
        .map(|(name, loc)| {
            let p =
                plugins::load(&runtime, name, loc, Path::new("."), file.plugin_wasi(name)).unwrap();
            (name.to_string(), p)
        })
        .collect();
    let job = file.resolve(&plugins::infos(&loaded)).unwrap();
    (job, loaded)
}

fn engine() -> Engine {
    let (job, plugins) = load_job();
    Engine::new(job, plugins, 2).unwrap()
}

fn run(engine: &Engine, n: u64) {
    let job = engine.job();
    let [a, b, s] = input(n);
    let received = BTreeMap::from([
        (job.node_by_name("a").unwrap(), lines_batch(&a)),
        (job.node_by_name("b").unwrap(), lines_batch(&b)),
        (job.node_by_name("scores").unwrap(), lines_batch(&s)),
    ]);
    engine.run_batch(n, received).unwrap();
}

/// The partitions of a stream at batch `n` (`None` when it has no dataset).
fn parts(engine: &Engine, stream: &str, n: u64) -> Option<Vec<Batch>> {
    let id: NodeId = engine.job().node_by_name(stream).unwrap();
    engine.dataset(id, n).map(|v| {
        v.iter()
            .map(|b| match &**b {
                Block::Part(p) => p.clone(),
                Block::Buckets(_) => panic!("a stream's dataset is partitions"),
            })
            .collect()
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn u64_of(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap())
}

/// A stream's records as a map of UTF-8 keys to u64 values; every key once.
fn counts(engine: &Engine, stream: &str, n: u64) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for p in parts(engine, stream, n).unwrap_or_else(|| panic!("{stream}@{n} missing")) {
        for (k, v) in p.iter() {
            assert!(
                m.insert(text(k), u64_of(v)).is_none(),
                "{stream}@{n}: key {} twice",
                text(k)
            );
        }
    }
    m
}

/// The values, in order over partitions.
fn values(engine: &Engine, stream: &str, n: u64) -> Vec<String> {
    parts(engine, stream, n)
        .unwrap()
        .iter()
        .flat_map(|p| p.iter().map(|(_, v)| text(v)).collect::<Vec<_>>())
        .collect()
}

fn count_words<'a>(lines: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for l in lines {
        for w in l.split_ascii_whitespace() {
            *m.entry(w.to_string()).or_default() += 1;
        }
    }
    m
}

fn count_urls<'a>(lines: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.split_ascii_whitespace().next().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

/// Lines of source `a` in batches `(n - len, n]`.
fn window_a(n: u64, len: u64) -> Vec<String> {
    (n.saturating_sub(len) + 1..=n)
        .flat_map(|b| input(b)[0].clone())
        .collect()
}

#[test]
fn every_operator_matches_a_plain_loop_over_many_intervals() {
    let engine = engine();
    let mut running: BTreeMap<String, u64> = BTreeMap::new();
    let mut best: HashMap<String, HashMap<String, u64>> = HashMap::new();
    for n in 1..=BATCHES {
        run(&engine, n);
        let [a, b, scores] = input(n);

        // map: (url, 1) in input order.
        let ones: Vec<(String, u64)> = parts(&engine, "ones", n)
            .unwrap()
            .iter()
            .flat_map(|p| {
                p.iter()
                    .map(|(k, v)| (text(k), u64_of(v)))
                    .collect::<Vec<_>>()
            })
            .collect();
        let want: Vec<(String, u64)> = a
            .iter()
            .map(|l| (l.split(' ').next().unwrap().to_string(), 1))
            .collect();
        assert_eq!(ones, want, "ones@{n}");

        // running_reduce, native and plugin.
        for (k, v) in count_urls(&a) {
            *running.entry(k).or_default() += v;
        }
        assert_eq!(counts(&engine, "running", n), running, "running@{n}");
        assert_eq!(
            counts(&engine, "running_plugin", n),
            running,
            "running_plugin@{n}"
        );

        // count_by_key, flat_map + reduce_by_key (plugin and built-in).
        assert_eq!(
            counts(&engine, "per_batch", n),
            count_urls(&a),
            "per_batch@{n}"
        );
        let wa = count_words(&a);
        let wb = count_words(&b);
        assert_eq!(counts(&engine, "word_counts", n), wa, "word_counts@{n}");
        assert_eq!(counts(&engine, "word_counts_b", n), wb, "word_counts_b@{n}");

        // join: one pair per key in both.
        let mut joined = BTreeMap::new();
        for p in parts(&engine, "joined", n).unwrap() {
            for (k, v) in p.iter() {
                let (l, r) = dstream_core::reduce::split_pair(v).unwrap();
                joined.insert(text(k), (u64_of(l), u64_of(r)));
            }
        }
        let want: BTreeMap<String, (u64, u64)> = wa
            .iter()
            .filter_map(|(k, l)| wb.get(k).map(|r| (k.clone(), (*l, *r))))
            .collect();
        assert_eq!(joined, want, "joined@{n}");

        // transform: the top 2 of each partition of word_counts.
        let wc_parts = parts(&engine, "word_counts", n).unwrap();
        let top = parts(&engine, "top", n).unwrap();
        for (p, (input, out)) in wc_parts.iter().zip(&top).enumerate() {
            let mut v: Vec<(String, u64)> =
                input.iter().map(|(k, v)| (text(k), u64_of(v))).collect();
            v.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            v.truncate(2);
            let got: Vec<(String, u64)> = out.iter().map(|(k, v)| (text(k), u64_of(v))).collect();
            assert_eq!(got, v, "top@{n} partition {p}");
        }

        // filter (order kept), union.
        let hits: Vec<String> = a.iter().filter(|l| l.contains("needle")).cloned().collect();
        assert_eq!(values(&engine, "hits", n), hits, "hits@{n}");
        let mut both: Vec<String> = hits.clone();
        both.extend(b.iter().filter(|l| l.contains("hay")).cloned());
        both.sort();
        let mut got = values(&engine, "both", n);
        got.sort();
        assert_eq!(got, both, "both@{n}");

        // window: every 2 batches, the last 3 batches of hits.
        if n % 2 == 0 {
            let mut want: Vec<String> = window_a(n, 3)
                .into_iter()
                .filter(|l| l.contains("needle"))
                .collect();
            want.sort();
            let mut got = values(&engine, "recent", n);
            got.sort();
            assert_eq!(got, want, "recent@{n}");
        } else {
            assert!(
                parts(&engine, "recent", n).is_none(),
                "recent@{n} should not exist"
            );
        }

        // Windowed reduces, with and without inverse, equal the window
        // recomputed from scratch; keys that left are gone.
        if n % 2 == 0 {
            let want = count_words(&window_a(n, 4));
            assert_eq!(counts(&engine, "win_inv", n), want, "win_inv@{n}");
            assert_eq!(counts(&engine, "win_noinv", n), want, "win_noinv@{n}");
        } else {
            assert!(parts(&engine, "win_inv", n).is_none());
        }
        let w3 = window_a(n, 3);
        assert_eq!(
            counts(&engine, "win_native", n),
            count_urls(&w3),
            "win_native@{n}"
        );
        let maxes: BTreeMap<String, u64> = count_urls(&w3).into_keys().map(|k| (k, 1)).collect();
        assert_eq!(counts(&engine, "win_max", n), maxes, "win_max@{n}");
        let c = counts(&engine, "count_win", n);
        if w3.is_empty() {
            assert!(c.is_empty());
        } else {
            assert_eq!(
                c,
                BTreeMap::from([(String::new(), w3.len() as u64)]),
                "count_win@{n}"
            );
        }

        // update_state_by_key: per group, the 2 best items by best score.
        for l in &scores {
            let f: Vec<&str> = l.split(' ').collect();
            let s: u64 = f[2].parse().unwrap();
            let e = best
                .entry(f[0].into())
                .or_default()
                .entry(f[1].into())
                .or_default();
            *e = (*e).max(s);
        }
        let mut got: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for p in parts(&engine, "leaders", n).unwrap() {
            for (k, v) in p.iter() {
                let top: Vec<(String, u64)> = postcard::from_bytes(v).unwrap();
                got.insert(text(k), top);
            }
        }
        let want: BTreeMap<String, Vec<(String, u64)>> = best
            .iter()
            .map(|(g, items)| {
                let mut v: Vec<(String, u64)> =
                    items.iter().map(|(i, s)| (i.clone(), *s)).collect();
                v.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
                v.truncate(2);
                (g.clone(), v)
            })
            .collect();
        assert_eq!(got, want, "leaders@{n}");
        let shown: BTreeMap<String, String> = parts(&engine, "shown", n)
            .unwrap()
            .iter()
            .flat_map(|p| {
                p.iter()
                    .map(|(k, v)| (text(k), text(v)))
                    .collect::<Vec<_>>()
            })
            .collect();
        let want: BTreeMap<String, String> = want
            .iter()
            .map(|(g, top)| {
                let items: Vec<String> = top.iter().map(|(i, s)| format!("{i}:{s}")).collect();
                (g.clone(), items.join(" "))
            })
            .collect();
        assert_eq!(shown, want, "shown@{n}");

        engine.finish_batch(n);
    }
    // Retention: old batches are gone, state and window contents stay.
    let (blocks, _) = engine.store().size();
    assert!(blocks < 200, "the store keeps {blocks} blocks");
}

/// Every block of every stream at batch `n`, for byte comparison.
fn snapshot(engine: &Engine, n: u64) -> BTreeMap<String, Option<Vec<Batch>>> {
    engine
        .job()
        .nodes
        .iter()
        .map(|node| (node.name.clone(), parts(engine, &node.name, n)))
        .collect()
}

#[test]
fn a_restored_checkpoint_continues_with_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let first = engine();
    let mut reference = BTreeMap::new();
    for n in 1..=BATCHES {
        run(&first, n);
        reference.insert(n, snapshot(&first, n));
        first.finish_batch(n);
        if n % first.job().checkpoint_every == 0 && n <= 10 {
            checkpoint::write(dir.path(), first.job(), first.store(), n).unwrap();
        }
    }
    assert_eq!(checkpoint::latest(dir.path()).unwrap(), Some(9));
    // Only the two newest are kept (6 and 9, not 3).
    let kept: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");

    let second = engine();
    let from = checkpoint::restore(dir.path(), second.job(), second.store()).unwrap();
    assert_eq!(from, Some(9));
    for n in 10..=BATCHES {
        run(&second, n);
        assert_eq!(
            snapshot(&second, n),
            reference[&n],
            "batch {n} after restore"
        );
        second.finish_batch(n);
    }

    // A fresh engine without the checkpoint cannot run batch 7: its state
    // is missing, and it says so.
    let third = engine();
    let job = third.job();
    let e = third
        .run_batch(
            7,
            BTreeMap::from([(job.node_by_name("a").unwrap(), Batch::new())]),
        )
        .unwrap_err();
    assert!(e.to_string().contains("not in the store"), "{e}");
}

#[test]
fn a_checkpoint_of_another_job_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    run(&e, 1);
    e.finish_batch(1);
    checkpoint::write(dir.path(), e.job(), e.store(), 1).unwrap();
    let (mut job, plugins) = load_job();
    job.partitions = 4;
    let other = Engine::new(job, plugins, 1).unwrap();
    let err = checkpoint::restore(dir.path(), other.job(), other.store()).unwrap_err();
    assert!(
        err.to_string()
            .contains("different version of job `every-operator`"),
        "{err}"
    );
}

/// An engine of 2 threads for the job `text`, whose plugins run in a 4 MiB
/// sandbox (a call takes 512 KiB of input), and those limits.
fn small_sandbox(text: &str) -> (Engine, Limits) {
    let limits = Limits {
        memory: 4 << 20,
        ..Limits::default()
    };
    let (job, loaded) = load_job_with(text, &limits);
    (Engine::new(job, loaded, 2).unwrap(), limits)
}

/// A job whose one partition is many times what one sandboxed call may
/// take: the engine cuts record-wise calls (and a reduce's) into pieces.
#[test]
fn a_partition_bigger_than_one_call_is_cut_into_pieces_with_the_same_output() {
    const BIG: &str = r#"
name = "big-partition"
interval = "1s"
partitions = 1
[plugins]
wc = "WORDCOUNT"
grep = "GREP"
[sources.a]
kind = "tcp"
addr = "127.0.0.1:1"
[streams.words]
from = "a"
flat_map = "wc/split"
[streams.counts]
from = "words"
reduce_by_key = "wc/sum"
[streams.hits]
from = "a"
filter = "grep/grep"
params = { pattern = "needle" }
"#;
    let (engine, limits) = small_sandbox(BIG);
    // 6 MB of lines in one partition: 12 times a call's 512 KiB, and more
    // than the whole 4 MiB sandbox.
    let mut rng = SplitMix64::new(7);
    let lines: Vec<String> = (0..100_000)
        .map(|_| {
            (0..12)
                .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let input = lines_batch(&lines);
    assert!(input.byte_len() > 10 * limits.call_input());
    let a = engine.job().node_by_name("a").unwrap();
    let stats = engine
        .run_batch(1, BTreeMap::from([(a, input)]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts(&engine, "counts", 1), count_words(&lines));
    let hits: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("needle"))
        .cloned()
        .collect();
    assert_eq!(values(&engine, "hits", 1), hits);
    // At least 12 pieces for each of the two operators.
    assert!(stats.wasm_calls >= 24, "{stats:?}");
}

#[test]
fn an_operator_error_in_a_cut_partition_names_its_record_in_the_partition() {
    const JOB: &str = r#"
name = "big-failure"
interval = "1s"
partitions = 1
[plugins]
h = "HOSTILE"
[sources.a]
kind = "tcp"
addr = "127.0.0.1:1"
[streams.checked]
from = "a"
map = "h/fail"
"#;
    let (engine, limits) = small_sandbox(JOB);
    // 3 MB in one partition: six of the engine's 512 KiB cuts, each run in
    // pieces by the sandbox; the refused line is in the last cut.
    let mut lines: Vec<String> = (0..30_000).map(|i| format!("{i:0>99}")).collect();
    let at = 29_000;
    lines[at] = "a bad line".into();
    let input = lines_batch(&lines);
    assert!(input.byte_len() > 5 * limits.call_input());
    let a = engine.job().node_by_name("a").unwrap();
    let e = engine
        .run_batch(1, BTreeMap::from([(a, input)]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("failed at record {at}: refusing \"a bad line\"")),
        "{e}"
    );
}
