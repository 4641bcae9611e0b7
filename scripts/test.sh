#!/usr/bin/env bash
# Every test: sets the machine up if needed (PostgreSQL 15 + TimescaleDB), then runs the unit
# tests and the integration tests, which start their own throwaway clusters on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --build-tests
swift test --skip-build "$@"
