#!/bin/sh
# Throughput of export-hypertable / import-hypertable next to COPY run by hand (psql | gzip, zstd),
# on a throwaway sandbox cluster. Prints medians of TSBACKUP_BENCH_RUNS runs (default 3);
# TSBACKUP_BENCH_DAYS scales the data (default 60 days = 230,400 rows).
# Uses the debug build unless TSBACKUP_BENCH_CONFIGURATION=release.
set -eu
cd "$(dirname "$0")/.."
configuration="${TSBACKUP_BENCH_CONFIGURATION:-debug}"
swift build --build-tests -c "$configuration"
TSBACKUP_BENCH=1 swift test --skip-build -c "$configuration" --filter HypertableExportBenchmark 2>&1 \
  | sed -n '/HypertableExport benchmark:/,/^$/p'
