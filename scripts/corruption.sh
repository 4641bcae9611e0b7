#!/usr/bin/env bash
# The corruption campaign (issue 14, item 7): on its own throwaway cluster and moto server, a
# backup in a local and an S3 repository, each unencrypted and encrypted; one byte flipped at
# 200 random positions across all of the entry's files (manifest.json included), one at a time,
# and 50 truncations at random lengths; each checked with `tsbackup verify`. Prints the table of
# changes, detected, named and missed; exits 1 on any miss.
#
#   scripts/corruption.sh [--flips N] [--truncations N] [--seed S]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
swift build --product tsbackup >/dev/null
swift build --product tsbackup-bench >/dev/null
bin="$(swift build --show-bin-path)"
# Bounded: about 1,000 verify runs; a hang guard, not a timing.
exec timeout 3600 "$bin/tsbackup-bench" --corruption "$@"
