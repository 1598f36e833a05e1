//! The generator source: synthetic lines from a seed, for demos and benches.
//!
//! A batch's records are a pure function of the seed, the batch number and
//! the partition, so a generator is never received nor stored: like any
//! dataset, its partitions are recomputed from lineage.
//!
//! ```
//! use std::time::Duration;
//! use dstream_core::job::{GenFormat, Generator};
//! use dstream_core::generate::Pool;
//!
//! let g = Generator { rate: 1000, seed: 7, format: GenFormat::Words, record_bytes: 100 };
//! let pool = Pool::new(&g);
//! let a = pool.partition(3, 0, 2, Duration::from_millis(100));
//! assert_eq!(a.len(), 50); // 1000/s * 0.1 s over 2 partitions
//! assert_eq!(a, pool.partition(3, 0, 2, Duration::from_millis(100)));
//! assert!(a.iter().all(|(k, v)| k.is_empty() && v.len() == 100));
//! ```

use std::time::Duration;

use crate::Batch;
use crate::job::{GenFormat, Generator};

const POOL: usize = 4096;

const SYLLABLES: [&str; 32] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "da", "fe", "go", "hu", "ja", "ke", "li", "mo",
    "nu", "pa", "qi", "re", "si", "tu", "wa", "xe", "yo", "ze", "ba", "ce", "di", "fu", "ga", "he",
];

/// SplitMix64: a small, well-known generator, the same on every machine;
/// the generator source, the simulation and the tests draw from it.
///
/// ```
/// use dstream_core::generate::SplitMix64;
///
/// let mut a = SplitMix64::new(1);
/// let mut b = SplitMix64::new(1);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(10) < 10);
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
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
    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Skewed towards small values: a few hot keys, a long tail.
    fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u * u) * n as f64) as u64
    }
}

fn word(i: u64) -> String {
    let mut w = String::new();
    let mut x = i;
    loop {
        w.push_str(SYLLABLES[(x % 32) as usize]);
        x /= 32;
        if x == 0 {
            return w;
        }
    }
}

/// A generator's pool of lines, built once from the seed; records are drawn
/// from it.
#[derive(Debug, Clone)]
pub struct Pool {
    seed: u64,
    rate: u64,
    lines: Batch,
}

impl Pool {
    /// Builds the pool of a generator.
    pub fn new(g: &Generator) -> Self {
        let mut rng = SplitMix64::new(g.seed ^ 0xd57e_a400);
        let len = g.record_bytes as usize;
        let mut lines = Batch::with_capacity(POOL, POOL * len);
        let mut line = String::with_capacity(len + 32);
        for _ in 0..POOL {
            line.clear();
            match g.format {
                GenFormat::Pageviews => {
                    let page = rng.skewed(100);
                    line.push_str(&format!(
                        "/page/{page} 10.{}.{}.{} Mozilla/5.0 (X11; Linux x86_64) dstream-generator",
                        rng.next_u64() % 256,
                        rng.next_u64() % 256,
                        rng.next_u64() % 256
                    ));
                }
                GenFormat::Words => {
                    while line.len() < len {
                        if !line.is_empty() {
                            line.push(' ');
                        }
                        line.push_str(&word(rng.skewed(5000)));
                    }
                }
                GenFormat::Scores => {
                    line.push_str(&format!(
                        "g{} {} {}",
                        rng.skewed(20),
                        word(rng.skewed(500)),
                        rng.next_u64() % 1000
                    ));
                }
            }
            // Exactly `len` bytes: cut at a space (words), or pad with spaces.
            if line.len() > len {
                let cut = line[..len].rfind(' ').unwrap_or(len);
                line.truncate(cut);
            }
            while line.len() < len {
                line.push(' ');
            }
            lines.push(b"", line.as_bytes());
        }
        Self {
            seed: g.seed,
            rate: g.rate,
            lines,
        }
    }

    /// Records per batch of `interval`.
    pub fn per_batch(&self, interval: Duration) -> u64 {
        (u128::from(self.rate) * interval.as_millis() / 1000) as u64
    }

    /// Partition `part` (of `parts`) of batch `batch`.
    pub fn partition(&self, batch: u64, part: u32, parts: u32, interval: Duration) -> Batch {
        let total = self.per_batch(interval);
        let (q, r) = (total / u64::from(parts), total % u64::from(parts));
        let n = q + u64::from(u64::from(part) < r);
        let mut rng = SplitMix64::new(
            self.seed
                .wrapping_mul(0x2545_f491_4f6c_dd1d)
                .wrapping_add(batch.wrapping_mul(0x9e37_79b9))
                .wrapping_add(u64::from(part) << 48),
        );
        let avg = self.lines.byte_len() / POOL + 1;
        let mut out = Batch::with_capacity(n as usize, n as usize * avg);
        for _ in 0..n {
            let (k, v) = self.lines.get((rng.next_u64() % POOL as u64) as usize);
            out.push(k, v);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_(format: GenFormat) -> Generator {
        Generator {
            rate: 10_000,
            seed: 42,
            format,
            record_bytes: 100,
        }
    }

    #[test]
    fn formats_look_right_and_have_the_set_length() {
        for f in [GenFormat::Pageviews, GenFormat::Words, GenFormat::Scores] {
            let b = Pool::new(&gen_(f)).partition(1, 0, 1, Duration::from_secs(1));
            assert_eq!(b.len(), 10_000);
            for (_, v) in b.iter() {
                assert_eq!(v.len(), 100);
                let text = std::str::from_utf8(v).unwrap();
                let fields: Vec<&str> = text.split_ascii_whitespace().collect();
                match f {
                    GenFormat::Pageviews => assert!(fields[0].starts_with("/page/")),
                    GenFormat::Words => assert!(fields.len() > 5),
                    GenFormat::Scores => {
                        assert_eq!(fields.len(), 3);
                        fields[2].parse::<u64>().unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn batches_differ_and_repeat_exactly() {
        let p = Pool::new(&gen_(GenFormat::Words));
        let i = Duration::from_millis(100);
        assert_eq!(p.partition(5, 1, 3, i), p.partition(5, 1, 3, i));
        assert_ne!(p.partition(5, 1, 3, i), p.partition(6, 1, 3, i));
        assert_ne!(p.partition(5, 1, 3, i), p.partition(5, 2, 3, i));
        let total: usize = (0..3).map(|q| p.partition(5, q, 3, i).len()).sum();
        assert_eq!(total, 1000);
    }
}
