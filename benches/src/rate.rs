//! The rule of the engine bench and its peers: when a rate counts as
//! sustained ([`Judge`]), and the search for the highest such rate
//! ([`Search`]).

use std::time::Duration;

/// Batches in a row that must finish within the interval.
pub const IN_A_ROW: usize = 30;
/// Batches run first and not judged.
pub const WARM_UP: usize = 3;

/// Judges a trial batch by batch: after [`WARM_UP`] batches, [`IN_A_ROW`]
/// batches in a row must finish within the interval; it gives up after
/// twice as many tries.
#[derive(Debug)]
pub struct Judge {
    interval: Duration,
    seen: usize,
    in_a_row: usize,
    times: Vec<Duration>,
}

impl Judge {
    /// A judge of batches due within `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            seen: 0,
            in_a_row: 0,
            times: Vec::new(),
        }
    }

    /// Takes the time of the next batch; false once the trial is decided.
    pub fn go_on(&mut self, took: Duration) -> bool {
        self.seen += 1;
        if self.seen <= WARM_UP {
            return true;
        }
        self.times.push(took);
        if took < self.interval {
            self.in_a_row += 1;
            self.in_a_row < IN_A_ROW
        } else {
            self.in_a_row = 0;
            self.times.len() <= IN_A_ROW
        }
    }

    /// Whether the rate was sustained, and the median batch time.
    ///
    /// # Panics
    /// If no batch was judged (stopped during the warm-up).
    pub fn verdict(mut self) -> (bool, Duration) {
        self.times.sort();
        (self.in_a_row == IN_A_ROW, self.times[self.times.len() / 2])
    }
}

/// The search for the highest sustained rate, to within about 6% (and
/// 1 000 records/s): double from a start until a rate fails, then bisect.
/// Driven one trial at a time ([`Search::next`], [`Search::record`]) so
/// that two searches can take turns and see the same stretch of a noisy
/// machine.
#[derive(Debug)]
pub struct Search {
    /// The highest rate sustained so far, and its median batch time.
    pub lo: (u64, Duration),
    /// The lowest rate that failed (or the next to double to).
    hi: u64,
    doubling: bool,
}

impl Search {
    /// A search starting at `start` records/s.
    pub fn new(start: u64) -> Self {
        Self {
            lo: (0, Duration::ZERO),
            hi: start,
            doubling: true,
        }
    }

    /// The next rate to try, or `None` when the search is over.
    pub fn next(&self) -> Option<u64> {
        if self.doubling {
            Some(self.hi)
        } else if self.hi - self.lo.0 > (self.hi / 16).max(1_000) {
            Some((self.lo.0 + self.hi) / 2)
        } else {
            None
        }
    }

    /// Takes the outcome of a trial at `rate`.
    pub fn record(&mut self, rate: u64, ok: bool, median: Duration) {
        match (ok, self.doubling) {
            (true, true) => {
                self.lo = (rate, median);
                self.hi = rate * 2;
            }
            (false, true) => self.doubling = false,
            (true, false) => self.lo = (rate, median),
            (false, false) => self.hi = rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `times` (ms) to a judge of 100 ms batches until it stops;
    /// how many it took and its verdict.
    fn judge(times: impl IntoIterator<Item = u32>) -> (usize, (bool, Duration)) {
        let mut j = Judge::new(100 * MS);
        let mut taken = 0;
        for t in times {
            taken += 1;
            if !j.go_on(MS * t) {
                break;
            }
        }
        (taken, j.verdict())
    }

    #[test]
    fn thirty_in_a_row_after_the_warm_up_are_sustained() {
        // Slow warm-up batches do not count.
        let times = [500, 500, 500].into_iter().chain(std::iter::repeat(50));
        assert_eq!(judge(times), (WARM_UP + IN_A_ROW, (true, 50 * MS)));
        // A batch at the interval is late; the count starts again.
        let times = [1, 1, 1]
            .into_iter()
            .chain([90; 20])
            .chain([100])
            .chain(std::iter::repeat(80));
        let (taken, (ok, _)) = judge(times);
        assert!(ok);
        assert_eq!(taken, WARM_UP + 21 + IN_A_ROW);
    }

    #[test]
    fn a_trial_gives_up_after_twice_as_many_tries() {
        let (taken, (ok, median)) = judge(std::iter::repeat(150));
        assert!(!ok);
        assert_eq!(taken, WARM_UP + IN_A_ROW + 1);
        assert_eq!(median, 150 * MS);
        // Every 29th judged batch late: never 30 in a row; stopped at the
        // first late one past 30 judged (the 58th).
        let times = [1, 1, 1]
            .into_iter()
            .chain((0..).map(|i| if i % 29 == 28 { 120 } else { 60 }));
        let (taken, (ok, _)) = judge(times);
        assert!(!ok);
        assert_eq!(taken, WARM_UP + 58);
    }

    /// Runs a search against a machine that sustains up to `limit`.
    fn search(start: u64, limit: u64) -> (u64, Vec<u64>) {
        let mut s = Search::new(start);
        let mut tried = Vec::new();
        while let Some(rate) = s.next() {
            tried.push(rate);
            s.record(rate, rate <= limit, MS);
        }
        (s.lo.0, tried)
    }

    #[test]
    fn the_search_doubles_then_bisects_to_a_sixteenth() {
        let (found, tried) = search(100_000, 1_000_000);
        assert_eq!(&tried[..5], [100_000, 200_000, 400_000, 800_000, 1_600_000]);
        assert!(
            found <= 1_000_000 && found > 1_000_000 - 1_600_000 / 16,
            "{found}"
        );
        // Failing at once: bisects down to the 1 000 records/s floor.
        let (found, tried) = search(100_000, 0);
        assert_eq!(found, 0);
        assert!(tried.len() < 10, "{tried:?}");
    }
}
