//! Shared pieces of the dstream benchmarks: the data set, the three ways of
//! running each operator, and the checks that they agree.
//!
//! Two operators are measured, each three ways over the same bytes:
//!
//! - **grep**: the `grep` filter of `guest-examples/grep`, keeping the lines
//!   that contain [`PATTERN`];
//! - **wordcount map side**: the `split` flat-map then the `sum` reduce of
//!   `guest-examples/wordcount`, i.e. words of a partition with their counts
//!   combined within the partition.
//!
//! The three ways are: the Wasm component through the host
//! ([`dstream_wasm::Plugin`], one call and one fresh instance per partition,
//! the guest called once per [`dstream_wasm::PIECE_BYTES`] piece inside it),
//! the same guest crate compiled natively and called through the SDK's native
//! path ([`dstream_sdk::Plugin`]), and a hand-written loop over the batch
//! ([`grep_by_hand`], [`wordcount_by_hand`]).
//!
//! The data set ([`partitions`]) is deterministic: [`RECORDS`] records of
//! exactly [`RECORD_LEN`] bytes of lowercase words drawn from a Zipf-like
//! vocabulary by a seeded [`SplitMix64`], [`PATTERN`] planted in about
//! [`MATCH_PER_MILLE`] per mille of them, cut into partitions of
//! [`PARTITION`] records.

pub mod rate;

use std::collections::BTreeMap;
use std::path::Path;

use dstream_core::Batch;
use dstream_sdk::{Kind, RawParams, Records};
use dstream_wasm::{Plugin, Runtime, Stage};
use memchr::memmem::Finder;
use rustc_hash::FxHashMap;

/// Bytes in every record (the value; keys are empty).
pub const RECORD_LEN: usize = 100;
/// Records in the full data set.
pub const RECORDS: usize = 1_000_000;
/// Records per partition: one operator call per partition.
pub const PARTITION: usize = 100_000;
/// Records of the sample run with one Wasm call per record.
pub const PER_RECORD_SAMPLE: usize = 20_000;
/// What grep looks for. No vocabulary word contains it.
pub const PATTERN: &str = "needle";
/// How many records in a thousand contain [`PATTERN`] (about).
pub const MATCH_PER_MILLE: u64 = 20;
/// Distinct words of the vocabulary (besides [`PATTERN`]).
pub const VOCABULARY: usize = 4096;
/// Seed of the data set.
pub const SEED: u64 = 0x6473_7472_6561_6d21;

/// The splitmix64 generator: small, fast, and the same everywhere.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), by multiply-high (bias below 2^-32).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// `n` distinct lowercase words of 2 to 10 letters, none containing
/// [`PATTERN`], in rank order (most frequent first under [`zipf_rank`]).
pub fn vocabulary(rng: &mut SplitMix64, n: usize) -> Vec<Vec<u8>> {
    let mut seen = rustc_hash::FxHashSet::default();
    let mut words = Vec::with_capacity(n);
    while words.len() < n {
        let len = 2 + rng.below(9) as usize;
        let word: Vec<u8> = (0..len).map(|_| b'a' + rng.below(26) as u8).collect();
        if Finder::new(PATTERN).find(&word).is_none() && seen.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// A rank in `0..n`, Zipf-like: rank `r` has probability about proportional
/// to `1 / (r + 1)` (log-uniform over `1..=n`).
pub fn zipf_rank(rng: &mut SplitMix64, n: usize) -> usize {
    let r = ((n as f64 + 1.0).ln() * rng.unit()).exp() as usize;
    r.saturating_sub(1).min(n - 1)
}

/// Appends one record of exactly [`RECORD_LEN`] bytes to `out`: words
/// separated by one space, padded with spaces; with probability
/// [`MATCH_PER_MILLE`]/1000 one of its first four words is [`PATTERN`].
pub fn record(rng: &mut SplitMix64, vocabulary: &[Vec<u8>], out: &mut Vec<u8>) {
    let start = out.len();
    let needle_at = (rng.below(1000) < MATCH_PER_MILLE).then(|| rng.below(4) as usize);
    for k in 0.. {
        let word: &[u8] = if needle_at == Some(k) {
            PATTERN.as_bytes()
        } else {
            &vocabulary[zipf_rank(rng, vocabulary.len())]
        };
        let used = out.len() - start;
        let sep = usize::from(used > 0);
        if used + sep + word.len() > RECORD_LEN {
            break;
        }
        if sep == 1 {
            out.push(b' ');
        }
        out.extend_from_slice(word);
    }
    out.resize(start + RECORD_LEN, b' ');
}

/// The data set: `records` unkeyed records (see [`record`]) from [`SEED`], in
/// partitions of `per_partition` records (the last one may be shorter).
pub fn partitions(records: usize, per_partition: usize) -> Vec<Batch> {
    let mut rng = SplitMix64::new(SEED);
    let vocabulary = vocabulary(&mut rng, VOCABULARY);
    let mut parts = Vec::with_capacity(records.div_ceil(per_partition));
    let mut line = Vec::with_capacity(RECORD_LEN);
    let mut left = records;
    while left > 0 {
        let n = left.min(per_partition);
        let mut batch = Batch::with_capacity(n, n * RECORD_LEN);
        for _ in 0..n {
            line.clear();
            record(&mut rng, &vocabulary, &mut line);
            batch.push(b"", &line);
        }
        parts.push(batch);
        left -= n;
    }
    parts
}

/// Every record of `batch` as a batch of its own (for one call per record).
pub fn singletons(batch: &Batch) -> Vec<Batch> {
    batch
        .iter()
        .map(|(k, v)| {
            let mut b = Batch::with_capacity(1, k.len() + v.len());
            b.push(k, v);
            b
        })
        .collect()
}

/// A core batch seen as the SDK's records, without copying.
pub fn records(batch: &Batch) -> Records<'_> {
    Records::new(batch.data(), batch.bounds())
}

/// Hand-written grep: the records of `input` whose value contains what
/// `finder` looks for (see [`grep_each`]), copied to a batch.
pub fn grep_by_hand(finder: &Finder<'_>, input: &Batch) -> Batch {
    let mut out = Batch::new();
    grep_each(finder, input, |i| {
        let (k, v) = input.get(i);
        out.push(k, v);
    });
    out
}

/// Calls `kept` with the index of each record of `input` whose value
/// contains what `finder` looks for, in order, found as grep tools do: one
/// search over the partition's bytes, each match mapped to its record (a
/// match in a key or across two records does not count).
pub fn grep_each(finder: &Finder<'_>, input: &Batch, mut kept: impl FnMut(usize)) {
    let (data, bounds) = (input.data(), input.bounds());
    let len = finder.needle().len();
    let (mut at, mut i) = (0, 0);
    while i < input.len() {
        let Some(found) = finder.find(&data[at..]) else {
            break;
        };
        let found = at + found;
        while bounds[2 * i + 2] as usize <= found {
            i += 1;
        }
        let (value, end) = (bounds[2 * i + 1] as usize, bounds[2 * i + 2] as usize);
        if found >= value && found + len <= end {
            kept(i);
            i += 1;
            at = end;
        } else {
            at = found + 1;
        }
    }
}

/// The words of a line: runs of non-ASCII-whitespace bytes (what
/// `str::split_ascii_whitespace` does, on bytes).
pub fn words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
}

/// Hand-written wordcount map side: the count of every word of `input`'s
/// values, combined within the partition.
pub fn wordcount_by_hand(input: &Batch) -> FxHashMap<&[u8], u64> {
    let mut counts = FxHashMap::default();
    for (_, v) in input.iter() {
        for w in words(v) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// Word counts from records of (word, little-endian `u64` count), as the
/// `sum` reduce emits them.
///
/// # Panics
/// If a word appears twice or a count is not 8 bytes.
pub fn counts_of<'a>(
    records: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> BTreeMap<Vec<u8>, u64> {
    let mut out = BTreeMap::new();
    for (k, v) in records {
        let n = u64::from_le_bytes(v.try_into().expect("a count is a u64"));
        let old = out.insert(k.to_vec(), n);
        assert!(
            old.is_none(),
            "word {:?} appears twice",
            String::from_utf8_lossy(k)
        );
    }
    out
}

/// Word counts from a hand-written combine, in the form of [`counts_of`].
pub fn counts_of_map(map: &FxHashMap<&[u8], u64>) -> BTreeMap<Vec<u8>, u64> {
    map.iter().map(|(k, v)| (k.to_vec(), *v)).collect()
}

/// Loads the component at `path` into `runtime` as `name`, or the one at
/// `$DSTREAM_BENCH_<NAME>_WASM` when that is set (to compare two builds of
/// a plugin side by side: two processes at once see the same machine).
///
/// # Panics
/// If the file cannot be read or the component does not load.
pub fn load(runtime: &Runtime, name: &str, path: &str) -> Plugin {
    let var = format!("DSTREAM_BENCH_{}_WASM", name.to_uppercase());
    let given = std::env::var(&var).ok();
    let path = given.as_deref().unwrap_or(path);
    let bytes = std::fs::read(Path::new(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    runtime
        .load(name, &bytes)
        .unwrap_or_else(|e| panic!("loading {path}: {e}"))
}

/// Grep, three ways.
#[derive(Debug)]
pub struct Grep {
    plugin: Plugin,
    params: Vec<(String, String)>,
    finder: Finder<'static>,
}

impl Grep {
    /// Loads the grep component into `runtime`, to look for [`PATTERN`].
    pub fn new(runtime: &Runtime) -> Self {
        Self {
            plugin: load(runtime, "grep", dstream_artifacts::GREP),
            params: vec![("pattern".into(), PATTERN.into())],
            finder: Finder::new(PATTERN.as_bytes()).into_owned(),
        }
    }

    /// The Wasm operator through the host: one call, one fresh instance (the
    /// guest called once per piece inside it).
    pub fn wasm(&self, input: &Batch) -> Batch {
        self.plugin
            .filter("grep", &self.params, input)
            .expect("wasm grep")
    }

    /// The Wasm operator with the partition's pages lent to the guest
    /// instead of copied into it (one fresh instance, one `filter-lent` call
    /// per 8 MiB window). Linux only.
    #[cfg(target_os = "linux")]
    pub fn wasm_lent(&self, input: &dstream_wasm::PagedBatch) -> Batch {
        self.plugin
            .filter_lent("grep", &self.params, input)
            .expect("wasm grep, lent input")
    }

    /// The same operator compiled natively, through the SDK.
    pub fn native(&self, input: &Batch) -> dstream_sdk::Batch {
        grep::PLUGIN
            .run(
                Kind::Filter,
                "grep",
                &RawParams::new(&self.params),
                records(input),
            )
            .expect("native grep")
    }

    /// The hand-written loop.
    pub fn by_hand(&self, input: &Batch) -> Batch {
        grep_by_hand(&self.finder, input)
    }

    /// Checks that the three ways keep the same records of every partition,
    /// and that one Wasm call per record of `sample` keeps the same records
    /// as one call over it. Returns the number of records kept in `parts`.
    ///
    /// # Panics
    /// If any two disagree, or nothing matches.
    pub fn check(&self, parts: &[Batch], sample: &Batch) -> usize {
        let mut kept = 0;
        for (i, p) in parts.iter().enumerate() {
            let wasm = self.wasm(p);
            let native = self.native(p);
            let hand = self.by_hand(p);
            assert_eq!(
                wasm, hand,
                "grep partition {i}: wasm and hand-written differ"
            );
            assert_eq!(
                (wasm.data(), wasm.bounds()),
                (&native.data[..], &native.bounds[..]),
                "grep partition {i}: wasm and native differ"
            );
            #[cfg(target_os = "linux")]
            {
                let paged = dstream_wasm::PagedBatch::new(p).expect("pages for a partition");
                assert_eq!(
                    self.wasm_lent(&paged),
                    wasm,
                    "grep partition {i}: wasm with lent and with copied input differ"
                );
            }
            kept += wasm.len();
        }
        assert!(kept > 0, "the pattern never matched");
        let mut one_by_one = Batch::new();
        for b in singletons(sample) {
            one_by_one.extend_from(&self.wasm(&b));
        }
        assert_eq!(
            one_by_one,
            self.wasm(sample),
            "grep: per-record and per-partition calls differ"
        );
        kept
    }
}

/// The wordcount map side (split then sum within the partition), three ways.
#[derive(Debug)]
pub struct WordCount {
    plugin: Plugin,
    stages: Vec<Stage>,
    native_stages: Vec<(String, Vec<(String, String)>)>,
}

impl WordCount {
    /// Loads the wordcount component into `runtime`.
    pub fn new(runtime: &Runtime) -> Self {
        let ops = ["split", "sum"];
        Self {
            plugin: load(runtime, "wordcount", dstream_artifacts::WORDCOUNT),
            stages: ops
                .iter()
                .map(|op| Stage {
                    op: (*op).into(),
                    params: vec![],
                })
                .collect(),
            native_stages: ops.iter().map(|op| ((*op).into(), vec![])).collect(),
        }
    }

    /// The Wasm `pipeline` [split, sum] through the host: one call, one fresh
    /// instance; the split words never leave the guest.
    pub fn wasm(&self, input: &Batch) -> Batch {
        self.plugin
            .pipeline(&self.stages, input)
            .expect("wasm wordcount")
    }

    /// The same pipeline compiled natively, through the SDK.
    pub fn native(&self, input: &Batch) -> dstream_sdk::Batch {
        wordcount::PLUGIN
            .pipeline(&self.native_stages, records(input))
            .expect("native wordcount")
    }

    /// The hand-written loop.
    pub fn by_hand<'a>(&self, input: &'a Batch) -> FxHashMap<&'a [u8], u64> {
        wordcount_by_hand(input)
    }

    /// Checks that the three ways give the same counts for every partition,
    /// and that one Wasm call per record of `sample`, summed, gives the
    /// counts of one call over it. Returns (words, distinct words) in `parts`.
    ///
    /// # Panics
    /// If any two disagree.
    pub fn check(&self, parts: &[Batch], sample: &Batch) -> (u64, usize) {
        let mut total = BTreeMap::<Vec<u8>, u64>::new();
        for (i, p) in parts.iter().enumerate() {
            let wasm = self.wasm(p);
            let native = self.native(p);
            let hand = counts_of_map(&self.by_hand(p));
            let wasm_counts = counts_of(wasm.iter());
            assert_eq!(
                wasm_counts, hand,
                "wordcount partition {i}: wasm and hand-written differ"
            );
            assert_eq!(
                (wasm.data(), wasm.bounds()),
                (&native.data[..], &native.bounds[..]),
                "wordcount partition {i}: wasm and native differ"
            );
            for (w, n) in wasm_counts {
                *total.entry(w).or_insert(0) += n;
            }
        }
        let mut one_by_one = BTreeMap::<Vec<u8>, u64>::new();
        for b in singletons(sample) {
            for (w, n) in counts_of(self.wasm(&b).iter()) {
                *one_by_one.entry(w).or_insert(0) += n;
            }
        }
        assert_eq!(
            one_by_one,
            counts_of(self.wasm(sample).iter()),
            "wordcount: per-record and per-partition calls differ"
        );
        (total.values().sum(), total.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few records with and without the pattern, odd spacing included.
    fn small() -> Batch {
        let mut b: Batch = [
            ("", "the needle is here"),
            ("", "  no match  at all "),
            ("k", "needles and pins"),
            ("", ""),
            ("", "a needle\tin\ta haystack needle"),
            // In a key only; across a value and the next key; at the end.
            ("needle", "hay"),
            ("", "a nee"),
            ("dle", "x"),
            ("", "ends with needle"),
        ]
        .into_iter()
        .collect();
        for p in partitions(300, 300) {
            b.extend_from(&p);
        }
        b
    }

    #[test]
    fn data_is_deterministic_and_shaped() {
        let a = partitions(2_500, 1_000);
        assert_eq!(a, partitions(2_500, 1_000));
        assert_eq!(
            a.iter().map(Batch::len).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        let finder = Finder::new(PATTERN);
        let mut matches = 0;
        for p in &a {
            for (k, v) in p.iter() {
                assert!(k.is_empty());
                assert_eq!(v.len(), RECORD_LEN);
                assert!(v.iter().all(|b| b.is_ascii_lowercase() || *b == b' '));
                matches += usize::from(finder.find(v).is_some());
            }
        }
        // About 2% of 2500 = 50.
        assert!((20..100).contains(&matches), "{matches} matches");
    }

    #[test]
    fn grep_by_hand_matches_naive() {
        let input = small();
        let finder = Finder::new(PATTERN);
        let naive: Vec<(Vec<u8>, Vec<u8>)> = input
            .iter()
            .filter(|(_, v)| v.windows(PATTERN.len()).any(|w| w == PATTERN.as_bytes()))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let hand: Vec<(Vec<u8>, Vec<u8>)> = grep_by_hand(&finder, &input)
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert!(naive.len() >= 3);
        assert_eq!(hand, naive);
        // The native operator agrees too.
        let params = vec![("pattern".to_string(), PATTERN.to_string())];
        let native = grep::PLUGIN
            .run(
                Kind::Filter,
                "grep",
                &RawParams::new(&params),
                records(&input),
            )
            .unwrap();
        let native: Vec<(Vec<u8>, Vec<u8>)> = native
            .records()
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(native, naive);
    }

    #[test]
    fn wordcount_by_hand_matches_naive() {
        let input = small();
        let mut naive = BTreeMap::<Vec<u8>, u64>::new();
        for (_, v) in input.iter() {
            let line = std::str::from_utf8(v).unwrap();
            for w in line.split_ascii_whitespace() {
                *naive.entry(w.as_bytes().to_vec()).or_insert(0) += 1;
            }
        }
        // "needles" is another word; the generated records add a few more.
        assert!(naive[&b"needle"[..]] >= 3);
        assert_eq!(naive[&b"needles"[..]], 1);
        let hand = counts_of_map(&wordcount_by_hand(&input));
        assert_eq!(hand, naive);
        // The native pipeline agrees too.
        let stages = vec![("split".to_string(), vec![]), ("sum".to_string(), vec![])];
        let native = wordcount::PLUGIN
            .pipeline(&stages, records(&input))
            .unwrap();
        assert_eq!(counts_of(native.records().iter()), naive);
    }
}
