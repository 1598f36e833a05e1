//! Word count: split lines into words, sum the counts per word.

/// Splits a line into words (runs of non-whitespace), each counting 1.
///
/// `dstream::text::words` gives the words of `split_ascii_whitespace`,
/// found 16 bytes at a time (SIMD in the sandbox too).
#[dstream::flat_map]
pub fn split(line: &str) -> impl Iterator<Item = (&str, u64)> {
    dstream::text::words(line).map(|w| (w, 1))
}

/// Adds two counts of one word.
#[dstream::reduce]
pub fn sum(a: u64, b: u64) -> u64 {
    a + b
}

/// Takes the counts leaving a window off the total.
#[dstream::inverse]
pub fn subtract(current: u64, leaving: u64) -> u64 {
    current - leaving
}

/// Parameters of `top`.
#[derive(Debug, dstream::Params)]
pub struct Top {
    /// How many words to keep.
    #[param(default = 10)]
    pub n: usize,
}

/// The `n` most frequent words of a partition of (word, count), most frequent
/// first, ties in word order.
#[dstream::transform]
pub fn top<'a>(mut counts: Vec<(&'a str, u64)>, p: &Top) -> Vec<(&'a str, u64)> {
    counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts.truncate(p.n);
    counts
}

dstream::plugin!(split, sum, subtract, top);
