#!/usr/bin/env bash
# Every test: sets the machine up if needed (PostgreSQL 15 + TimescaleDB), then runs the unit
# tests and the integration tests, which start their own throwaway clusters on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --build-tests
# `tsbackup serve` against its /openapi.json: bounded property-based requests, no 5xx allowed.
if [ "$#" -eq 0 ]; then bash scripts/schemathesis.sh .build/debug/tsbackup; fi
# The parsers of untrusted input under libFuzzer, 30 s each (its own small build, .build-fuzz/;
# TSBACKUP_FUZZ_SECONDS=0 skips it). Fuzz/README.md.
fuzz_seconds="${TSBACKUP_FUZZ_SECONDS:-30}"
if [ "$#" -eq 0 ] && [ "$fuzz_seconds" != 0 ]; then bash scripts/fuzz.sh "$fuzz_seconds"; fi
# Dozens of suites start clusters at once on two cores; a connection may wait longer than the
# 10 s default. A generous timeout stays a hang guard, not a timing assertion.
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-60}"
# The full output is long and CI may keep only part of it: on failure, repeat every failed
# expectation (with its detail lines) at the end, where a truncated log still shows it.
log="$(mktemp /tmp/tsbackup-test-log.XXXXXX)"
status=0
swift test --skip-build "$@" 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
  echo "=== failed expectations (repeated from above) ==="
  grep -a -A3 -E '✘|error:|Fatal error|fatalError' "$log" | grep -av '^\s*$' | tail -n 200 || true
fi
rm -f "$log"
exit "$status"
