#!/usr/bin/env bash
# The demo: sets the machine up if needed, builds tsbackup, starts a throwaway TimescaleDB cluster
# with sample data, runs tsbackup against it, shows the result and removes the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --product tsbackup
swift build --product tsbackup-demo
exec "$(swift build --show-bin-path)/tsbackup-demo" "$@"
