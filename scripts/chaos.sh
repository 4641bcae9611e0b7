#!/usr/bin/env bash
# The kill campaign (issue 14, item 1): on its own throwaway clusters (a source archiving its WAL
# through tsbackup wal-push, a restore target) and a moto S3 server with signature checking,
# SIGKILLs the real tsbackup at random moments within each operation's measured duration:
# backup (local and S3), restore, export-hypertable, import-hypertable, wal-push (under the
# archiver), base-backup, recover, and tsbackup serve during a backup job and a restore job.
# After each kill it runs the same operation again and checks: complete entries verify; no
# database in restore mode; no database or imported table left that no output named; every WAL
# file the server marked archived fetches back identical; the next run succeeds and cleans up
# (its cleanup messages are counted). Prints a table per operation; exits 1 on any violation.
#
#   scripts/chaos.sh [--kills N] [--minutes M] [--seed S]     (default 200 kills, at most 45 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
kills=200 minutes=45 seed=14
while [ $# -gt 0 ]; do
    case "$1" in
        --kills) kills="$2"; shift 2 ;;
        --minutes) minutes="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        *) echo "usage: scripts/chaos.sh [--kills N] [--minutes M] [--seed S]" >&2; exit 64 ;;
    esac
done
bash scripts/setup.sh >/dev/null
swift build --product tsbackup >/dev/null
swift build --product tsbackup-bench >/dev/null
bin="$(swift build --show-bin-path)"
# Bounded twice: the campaign stops by itself after --minutes; this is the hang guard around it.
exec timeout --signal=KILL "$(( (minutes + 15) * 60 ))" "$bin/tsbackup-bench" --chaos "$kills" --chaos-minutes "$minutes" --seed "$seed"
