#!/usr/bin/env bash
# The benchmark: tsbackup against raw pg_dump/pg_restore and the documented TimescaleDB restore,
# side by side on one throwaway durable cluster. `scripts/bench.sh` (quick, a few minutes) or
# `scripts/bench.sh --full` (>= 5,000 chunks, >= 1 GB). Release build unless BENCH_BUILD=debug.
# Results: a table on the terminal and bench/results/bench-<mode>-<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
configuration="${BENCH_BUILD:-release}"
swift build -c "$configuration" --product tsbackup
swift build -c "$configuration" --product tsbackup-bench
exec "$(swift build -c "$configuration" --show-bin-path)/tsbackup-bench" "$@"
