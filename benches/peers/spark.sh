#!/usr/bin/env bash
# Runs the engine bench's jobs (a running WordCount, a Grep) on Spark
# Structured Streaming (spark_peer.py) for scale beside the engine bench:
# installs PySpark into a virtualenv under target/peers (about 45 s and
# 320 MB the first time) and needs Java 17 or newer (Debian: apt-get
# install openjdk-17-jre-headless).
#
#   benches/peers/spark.sh [wordcount|grep] [INTERVAL_MS ...]
#                              (default: both jobs at 1000 and 100 ms)
#
# Not part of the tests: a bench, about 10-20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYSPARK_VERSION=4.3.0
venv=target/peers/spark-venv

if ! command -v java >/dev/null; then
    echo "spark.sh: Spark needs Java 17 or newer, and there is no java on PATH" >&2
    echo "          (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless)" >&2
    exit 1
fi
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [ "${java_major:-0}" -lt 17 ]; then
    echo "spark.sh: Spark $PYSPARK_VERSION needs Java 17 or newer; java -version says ${java_major:-unknown}" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import pyspark, sys; sys.exit(pyspark.__version__ != '$PYSPARK_VERSION')" 2>/dev/null; then
    echo "spark.sh: installing PySpark $PYSPARK_VERSION into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "pyspark==$PYSPARK_VERSION"
fi
exec "$venv/bin/python" benches/peers/spark_peer.py "$@"
