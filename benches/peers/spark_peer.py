"""The engine bench's jobs on Spark Structured Streaming, for scale beside
the dstream engine bench (`benches/src/bin/engine`): a running WordCount
and a Grep.

The records are lines of the engine's `words` generator: its pool of 4096
lines of 100 bytes is rebuilt here bit for bit (SplitMix64 and
`Pool::new`, checked against the engine's by `--check`), and each record
of Spark's rate source is the pool line picked by a hash of its counter
(the engine picks with SplitMix64: the same lines, drawn in another
order). WordCount splits
the lines at spaces and keeps a running count per word (a stateful
aggregation, output mode `update`); Grep keeps the lines containing the
engine bench's pattern (output mode `append`); both write to the `noop`
sink, with a processing-time trigger at the interval, on `local[2]` (two
cores, as the engine's two threads) and 2 shuffle partitions.

Like the engine bench, the highest rate at which 30 batches in a row (after
10 warm-up batches: see WARM_UP) finish within the interval, searched by
doubling from 10 000 records/s then bisecting to about 6%; a batch's time
is Spark's own `triggerExecution`. A rate that fails at once gives 0 and
the median batch time it had.

    python3 spark_peer.py [wordcount|grep] [INTERVAL_MS ...]
                                                  (default: both jobs, 1000 100)
    python3 spark_peer.py --check            (prints records 1-3 of
                                                   batch 1, as the engine's)
"""

import json
import shutil
import sys
import tempfile
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

SYLLABLES = [
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "da", "fe", "go", "hu",
    "ja", "ke", "li", "mo", "nu", "pa", "qi", "re", "si", "tu", "wa", "xe",
    "yo", "ze", "ba", "ce", "di", "fu", "ga", "he",
]
# The engine bench's grep pattern.
PATTERN = "kaka"
IN_A_ROW = 30
# The engine bench skips 3 batches; the JVM compiles its hot code over the
# first several (a batch of 200 k records took 6.2 s first, 0.8-1 s from
# the tenth on), so Spark gets 10.
WARM_UP = 10


M64 = (1 << 64) - 1
POOL = 4096


class SplitMix64:
    """dstream_core::generate::SplitMix64, bit for bit."""

    def __init__(self, seed):
        self.state = seed & M64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def skewed(self, n):
        u = (self.next_u64() >> 11) / float(1 << 53)
        return int((u * u * u) * n)


def word(i):
    w = ""
    while True:
        w += SYLLABLES[i % 32]
        i //= 32
        if i == 0:
            return w


def pool(seed=1, length=100):
    """The engine's `words` generator pool (`Pool::new`), line for line."""
    rng = SplitMix64(seed ^ 0xD57EA400)
    lines = []
    for _ in range(POOL):
        line = ""
        while len(line) < length:
            if line:
                line += " "
            line += word(rng.skewed(5000))
        if len(line) > length:
            cut = line[:length].rfind(" ")
            line = line[: cut if cut >= 0 else length]
        lines.append(line.ljust(length))
    return lines


def partition(lines, batch, part, n, seed=1):
    """The first `n` records of the engine's `Pool::partition`."""
    rng = SplitMix64(
        (seed * 0x2545F4914F6CDD1D + batch * 0x9E3779B9 + (part << 48)) & M64
    )
    return [lines[rng.next_u64() % POOL] for _ in range(n)]


def pool_df(spark):
    return spark.createDataFrame(list(enumerate(pool())), ["id", "line"])


def trial(spark, job, interval_ms, rate):
    """Whether `rate` records/s of `job` is sustained at `interval_ms`; the
    median batch."""
    checkpoint = tempfile.mkdtemp(prefix="dstream-spark-")
    try:
        # Each record is a line of the pool picked by a hash of the rate
        # source's counter (the engine picks them with SplitMix64): a
        # broadcast join with the 4096 lines, in the JVM.
        lines = (
            spark.readStream.format("rate")
            .option("rowsPerSecond", rate)
            .option("numPartitions", 2)
            .load()
            .select(F.pmod(F.xxhash64("value"), F.lit(POOL)).alias("id"))
            .join(F.broadcast(pool_df(spark)), "id")
            .select("line")
        )
        if job == "wordcount":
            out = (
                lines.select(F.explode(F.split("line", " ")).alias("word"))
                .where(F.col("word") != "")
                .groupBy("word")
                .count()
            )
            mode = "update"
        else:
            out = lines.where(F.col("line").contains(PATTERN))
            mode = "append"
        query = (
            out.writeStream.outputMode(mode)
            .format("noop")
            .trigger(processingTime=f"{interval_ms} milliseconds")
            .option("checkpointLocation", checkpoint)
            .start()
        )
        times = []
        in_a_row = 0
        seen = set()
        deadline = time.time() + 60 + (WARM_UP + 2 * IN_A_ROW) * max(interval_ms, 1000) / 1000
        while time.time() < deadline:
            time.sleep(interval_ms / 1000 / 2)
            for p in query.recentProgress:
                if p["batchId"] in seen or p["numInputRows"] == 0:
                    continue
                seen.add(p["batchId"])
                if len(seen) <= WARM_UP:
                    continue
                took = p["durationMs"]["triggerExecution"]
                times.append(took)
                if took < interval_ms:
                    in_a_row += 1
                else:
                    in_a_row = 0
            if in_a_row >= IN_A_ROW or len(times) > 2 * IN_A_ROW:
                break
            if query.exception() is not None:
                raise RuntimeError(str(query.exception()))
        query.stop()
        times.sort()
        median = times[len(times) // 2] if times else float("nan")
        return in_a_row >= IN_A_ROW, median
    finally:
        shutil.rmtree(checkpoint, ignore_errors=True)


def max_rate(spark, job, interval_ms, start):
    lo, lo_median, hi, doubling = 0, float("nan"), start, True
    while True:
        if doubling:
            rate = hi
        elif hi - lo > hi / 16:
            rate = (lo + hi) // 2
        else:
            return lo, lo_median
        ok, median = trial(spark, job, interval_ms, rate)
        print(
            f"  spark {job:<9} {interval_ms:>6} ms interval, {rate:>10} rec/s: "
            f"{'sustained' if ok else 'behind'} (median batch {median:.1f} ms)",
            file=sys.stderr,
            flush=True,
        )
        if ok:
            lo, lo_median = rate, median
            if doubling:
                hi = rate * 2
        elif doubling:
            doubling = False
            if lo == 0:
                return 0, median
        else:
            hi = rate


def main():
    if sys.argv[1:] == ["--check"]:
        for line in partition(pool(), 1, 0, 3):
            print(line)
        return
    args = sys.argv[1:]
    jobs = ["wordcount", "grep"]
    if args and args[0] in jobs:
        jobs = [args.pop(0)]
    try:
        intervals = [int(a) for a in args] or [1000, 100]
    except ValueError:
        sys.exit(
            f"usage: {sys.argv[0]} [wordcount|grep] [INTERVAL_MS ...] | --check"
            " (intervals in whole milliseconds)"
        )
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("dstream-peer")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    rows = []
    for job in jobs:
        for interval_ms in intervals:
            rate, median = max_rate(spark, job, interval_ms, 10_000)
            rows.append(
                {"job": job, "interval_ms": interval_ms, "rate": rate, "median_ms": median}
            )
    version = spark.version
    spark.stop()
    print(f"spark {version}")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
