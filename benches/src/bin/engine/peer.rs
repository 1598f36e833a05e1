//! The same two jobs on timely dataflow, the peer the engine bench reports a
//! ratio to (`--features timely`).
//!
//! Written as a timely user tuned for speed would write them, natively (no
//! sandbox): as many workers in one process as the engine has threads (2
//! by default); each generates its partition of every batch from the same
//! seeded generator as the engine (so the records are the same bytes), and
//!
//! - WordCount splits its lines at spaces, combines the counts of the
//!   partition in an FxHash map of borrowed words, and exchanges one
//!   (word, count) per distinct word by the word's hash to the worker that
//!   keeps the running totals of those words;
//! - Grep keeps the lines containing the pattern (memchr's `Finder` over each
//!   partition's bytes, `dstream_benches::grep_each`, as the
//!   guest uses) and hands them on.
//!
//! One timestamp per batch. A batch's time runs from its input until the
//! probe says every worker has finished it; the workers start the next
//! batch together. The trial is judged by the same rule as the engine's
//! ([`Judge`]).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use dstream_core::generate::Pool;
use memchr::memmem::Finder;
use rustc_hash::{FxHashMap, FxHasher};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use dstream_benches::rate::Judge;

use crate::{PATTERN, generator};

/// Timely workers: as many as the engine's threads.
fn workers() -> usize {
    crate::threads()
}

/// Which job.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Job {
    WordCount,
    Grep,
}

/// The jobs in the order of the bench's table.
pub(crate) const JOBS: [Job; 2] = [Job::WordCount, Job::Grep];

fn fx(word: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    word.hash(&mut h);
    h.finish()
}

/// Whether timely sustains `rate` at `interval_ms` (see [`Judge`]), and its
/// median batch time.
pub(crate) fn sustained(job: Job, interval_ms: u64, rate: u64) -> (bool, Duration) {
    let judge = Arc::new(Mutex::new(Judge::new(Duration::from_millis(interval_ms))));
    let judging = Arc::clone(&judge);
    run(
        job,
        Duration::from_millis(interval_ms),
        rate,
        Arc::new(Mutex::new(move |took| {
            judging.lock().expect("judge").go_on(took)
        })),
    );
    Arc::try_unwrap(judge)
        .expect("workers are done")
        .into_inner()
        .expect("judge")
        .verdict()
}

/// Checks that timely computes what a plain loop over the same records
/// does, over a few batches: the running totals of every word (WordCount),
/// the number of lines kept (Grep).
///
/// # Panics
/// If they differ.
pub(crate) fn check(job: Job) {
    let (interval, rate, batches) = (Duration::from_millis(100), 200_000, 3);
    let mut left = batches;
    let outcomes = run(
        job,
        interval,
        rate,
        Arc::new(Mutex::new(move |_| {
            left -= 1;
            left > 0
        })),
    );
    let pool = generator(rate);
    let parts = workers() as u32;
    let mut totals: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut kept = 0;
    let finder = Finder::new(PATTERN);
    for b in 1..=batches {
        for p in 0..parts {
            for (_, line) in pool.partition(b, p, parts, interval).iter() {
                for w in dstream_benches::words(line) {
                    *totals.entry(w.to_vec()).or_default() += 1;
                }
                kept += u64::from(finder.find(line).is_some());
            }
        }
    }
    match job {
        Job::WordCount => {
            let mut theirs = BTreeMap::new();
            for o in outcomes {
                for (w, c) in o.totals {
                    assert!(theirs.insert(w, c).is_none(), "a word kept by two workers");
                }
            }
            assert_eq!(theirs.len(), totals.len(), "timely's distinct words");
            assert!(
                theirs == totals,
                "timely's running totals differ from a plain loop's"
            );
        }
        Job::Grep => {
            let theirs: u64 = outcomes.iter().map(|o| o.kept).sum();
            assert_eq!(theirs, kept, "lines timely kept");
        }
    }
    eprintln!("  check: timely's {job:?} equals a plain loop's over {batches} batches: ok");
}

/// What one worker ends with: its share of the running totals (WordCount),
/// the lines it kept (Grep).
#[derive(Debug, Default)]
struct Outcome {
    totals: BTreeMap<Vec<u8>, u64>,
    kept: u64,
}

/// Whether to run another batch, given the time of the one just done.
type GoOn = Arc<Mutex<dyn FnMut(Duration) -> bool + Send>>;

/// Runs `job` at `rate` batch after batch, worker 0 asking `go_on` after
/// each batch whether to run another; what each worker ends with.
fn run(job: Job, interval: Duration, rate: u64, go_on: GoOn) -> Vec<Outcome> {
    let peers = workers();
    let together = Arc::new(Barrier::new(peers));
    let decided = Arc::new(AtomicBool::new(false));
    timely::execute(timely::Config::process(peers), move |worker| {
        let index = worker.index() as u32;
        let parts = worker.peers() as u32;
        let pool = generator(rate);
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<u64>>>::new();
        let probe = ProbeHandle::new();
        let totals: Rc<RefCell<FxHashMap<Vec<u8>, u64>>> = Rc::default();
        let kept: Rc<Cell<u64>> = Rc::default();
        worker.dataflow::<u64, _, _>(|scope| {
            let batches = scope.input_from(&mut input);
            match job {
                Job::WordCount => {
                    let totals = Rc::clone(&totals);
                    batches
                        .unary(Pipeline, "generate+split+combine", move |_, _| {
                            move |input, output| {
                                input.for_each_stamp(|cap, data| {
                                    let mut out: Vec<(Vec<u8>, u64)> = Vec::new();
                                    for b in data.flat_map(|d| d.iter()) {
                                        combine(&pool, *b, index, parts, interval, &mut out);
                                    }
                                    output.session(&cap).give_container(&mut out);
                                });
                            }
                        })
                        .unary(
                            Exchange::new(|x: &(Vec<u8>, u64)| fx(&x.0)),
                            "running totals",
                            move |_, _| {
                                move |input, output| {
                                    let mut totals = totals.borrow_mut();
                                    input.for_each_stamp(|cap, data| {
                                        let mut updated = 0u64;
                                        for (w, c) in data.flat_map(|d| d.drain(..)) {
                                            match totals.get_mut(&w) {
                                                Some(t) => *t += c,
                                                None => {
                                                    totals.insert(w, c);
                                                }
                                            }
                                            updated += 1;
                                        }
                                        output.session(&cap).give(updated);
                                    });
                                }
                            },
                        )
                        .container::<Vec<u64>>()
                        .probe_with(&probe);
                }
                Job::Grep => {
                    let finder = Finder::new(PATTERN).into_owned();
                    let kept = Rc::clone(&kept);
                    batches
                        .unary(Pipeline, "generate+grep", move |_, _| {
                            move |input, output| {
                                input.for_each_stamp(|cap, data| {
                                    let mut out: Vec<Vec<u8>> = Vec::new();
                                    for b in data.flat_map(|d| d.iter()) {
                                        let part = pool.partition(*b, index, parts, interval);
                                        dstream_benches::grep_each(&finder, &part, |i| {
                                            out.push(part.get(i).1.to_vec())
                                        });
                                    }
                                    kept.set(kept.get() + out.len() as u64);
                                    output.session(&cap).give_container(&mut out);
                                });
                            }
                        })
                        .container::<Vec<Vec<u8>>>()
                        .probe_with(&probe);
                }
            }
        });
        for b in 1.. {
            let t = Instant::now();
            input.send(b);
            input.advance_to(b + 1);
            while probe.less_than(input.time()) {
                worker.step();
            }
            let took = t.elapsed();
            if index == 0 && !(go_on.lock().expect("go_on"))(took) {
                decided.store(true, Ordering::SeqCst);
            }
            together.wait();
            if decided.load(Ordering::SeqCst) {
                break;
            }
        }
        let totals = totals.borrow();
        Outcome {
            totals: totals.iter().map(|(w, c)| (w.clone(), *c)).collect(),
            kept: kept.get(),
        }
    })
    .expect("timely starts")
    .join()
    .into_iter()
    .map(|r| r.expect("timely worker"))
    .collect()
}

/// Generates partition `index` of batch `b` and appends one (word, count)
/// per distinct word of it to `out`.
fn combine(
    pool: &Pool,
    b: u64,
    index: u32,
    parts: u32,
    interval: Duration,
    out: &mut Vec<(Vec<u8>, u64)>,
) {
    let part = pool.partition(b, index, parts, interval);
    let mut counts: FxHashMap<&[u8], u64> = FxHashMap::default();
    for (_, line) in part.iter() {
        for w in line.split(|c| *c == b' ').filter(|w| !w.is_empty()) {
            *counts.entry(w).or_default() += 1;
        }
    }
    out.extend(counts.into_iter().map(|(w, c)| (w.to_vec(), c)));
}
