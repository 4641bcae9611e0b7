#!/usr/bin/env bash
# Sanitizer runs (issue 14, item 3): N cycles of backup + verify + restore + an independent row
# count, with a tsbackup built under AddressSanitizer or ThreadSanitizer, against a throwaway
# TimescaleDB cluster of its own, optionally under extra CPU load.
#
#   scripts/sanitize.sh address [--cycles N] [--seconds S] [--load K] [--build]
#   scripts/sanitize.sh thread  [--cycles N] [--seconds S] [--load K] [--build]
#
# --build builds first (`swift build --scratch-path .build-asan|.build-tsan --sanitize ...`; a cold
# build takes 15-50 minutes on 2 loaded cores). --seconds S starts no new cycle after S seconds
# (the summary says how many ran). --load K starts K busy loops beside the runs (the
# original crash was seen during a concurrent build). Every sanitizer report goes to its own file
# (log_path); the summary counts cycles, failed steps, wrong results and reports, and the exit code
# is non-zero if any of them is not zero.
set -euo pipefail
cd "$(dirname "$0")/.."

sanitizer=${1:-}
case "$sanitizer" in
    address) scratch=.build-asan ;;
    thread) scratch=.build-tsan ;;
    *) echo "usage: $0 address|thread [--cycles N] [--seconds S] [--load K] [--build]" >&2; exit 64 ;;
esac
shift
cycles=100 seconds=0 load=0 build=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cycles) cycles=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --load) load=$2; shift 2 ;;
        --build) build=1; shift ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
done

if [ "$build" = 1 ]; then
    swift build --scratch-path "$scratch" --sanitize "$sanitizer" --product tsbackup
fi
tsbackup="$PWD/$scratch/debug/tsbackup"
[ -x "$tsbackup" ] || { echo "$tsbackup is missing: run with --build first" >&2; exit 5; }

pgbin=$(ls -d /usr/lib/postgresql/15/bin)
work=$(mktemp -d /tmp/tsbackup-sanitize.XXXXXX)
reports="$work/reports"
mkdir -p "$reports" "$work/repo-parent"
data="$work/data"
password="sanitize-$RANDOM$RANDOM"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
loaders=()

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    for pid in "${loaders[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$data/postmaster.pid" ] && as_postgres "$pgbin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    if [ "${keep_work:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The cluster: scram over TCP as the tests use, TimescaleDB preloaded.
[ "$(id -u)" = 0 ] && chown postgres "$work"
printf '%s\n' "$password" > "$work/pwfile"
[ "$(id -u)" = 0 ] && chown postgres "$work/pwfile"
as_postgres "$pgbin/initdb" -D "$data" -U postgres --pwfile="$work/pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
rm -f "$work/pwfile"
cat >> "$data/postgresql.auto.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
fsync = off
full_page_writes = off
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
log_min_messages = warning
EOF
as_postgres "$pgbin/pg_ctl" -D "$data" -l "$work/server.log" -w -t 120 start >/dev/null
psql_() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres "$@"; }

# Sample data: a hypertable over 12 daily chunks with a foreign key to a plain table, and a second
# hypertable with a space dimension (compression is not in the Apache-only build).
psql_ -d postgres -c "CREATE DATABASE sanity"
psql_ -d sanity -o /dev/null <<'SQL'
CREATE EXTENSION timescaledb;
CREATE TABLE devices (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO devices SELECT i, 'device ' || i FROM generate_series(1, 20) i;
CREATE TABLE conditions (time timestamptz NOT NULL, device int REFERENCES devices(id), temperature double precision, note text);
SELECT create_hypertable('conditions', 'time', chunk_time_interval => interval '1 day');
INSERT INTO conditions SELECT t, 1 + (extract(epoch FROM t)::bigint % 20), random() * 40, md5(t::text)
  FROM generate_series('2026-01-01'::timestamptz, '2026-01-12 23:59', interval '1 minute') t;
CREATE INDEX ON conditions (device, time DESC);
CREATE TABLE metrics (time timestamptz NOT NULL, host int NOT NULL, value bigint);
SELECT create_hypertable('metrics', 'time', 'host', 4, chunk_time_interval => interval '2 days');
INSERT INTO metrics SELECT t, h, (extract(epoch FROM t))::bigint * h FROM generate_series('2026-01-01'::timestamptz, '2026-01-08', interval '10 minutes') t, generate_series(1, 8) h;
SQL
expected=$(psql_ -d sanity -Atc "SELECT (SELECT count(*) FROM conditions) || '/' || (SELECT count(*) FROM metrics) || '/' || (SELECT count(*) FROM devices)")

for _ in $(seq 1 "$load"); do
    sh -c 'while :; do :; done' & loaders+=($!)
done

# Reports: one file per process that found something (log_path.PID). ASan: leak checking off
# (memory still held at exit is not the crash we look for); the first error stops the process, so
# its step fails too. TSan: every race is reported and the process goes on with its normal exit
# code (exitcode=0), so a report does not also count as a failed step. Note: on Linux TSan does
# not see Synchronization.Mutex (a futex, not a pthread mutex), so state guarded by a Mutex is
# reported as raced; docs/reliability.md says how the reports were sorted.
export ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=0:halt_on_error=1:abort_on_error=0"
export TSAN_OPTIONS="log_path=$reports/tsan:halt_on_error=0:exitcode=0:second_deadlock_stack=1"
export PGPASSWORD=$password PGCONNECT_TIMEOUT=60
url="postgres://postgres@127.0.0.1:$port"
repo="$work/repo-parent/repo"
failed_steps=0 wrong=0 done_cycles=0 attempted=0
step() { # name, command...: runs a step, keeps its output, counts a failure
    local name=$1; shift
    local rc=0
    "$@" > "$work/last.out" 2> "$work/last.err" || rc=$?
    if [ "$rc" != 0 ]; then
        failed_steps=$((failed_steps + 1))
        echo "cycle $cycle: $name failed (exit $rc): $(head -c 400 "$work/last.err")" >&2
        return 1
    fi
}
started=$(date +%s)
for cycle in $(seq 1 "$cycles"); do
    if [ "$seconds" -gt 0 ] && [ $(( $(date +%s) - started )) -ge "$seconds" ]; then break; fi
    attempted=$cycle
    step backup "$tsbackup" backup --db "$url/sanity" --repo "$repo" --json || continue
    id=$(jq -r .id "$work/last.out" 2>/dev/null || true)
    # The original crash printed a garbage backup ID: the ID must be the one the repository lists.
    if ! [[ "$id" =~ ^[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$ ]] || ! "$tsbackup" list --repo "$repo" --json | jq -e --arg id "$id" 'map(select(.id == $id and .state == "complete")) | length == 1' >/dev/null; then
        wrong=$((wrong + 1)); echo "cycle $cycle: backup ID '$id' is not a complete entry of the repository" >&2; continue
    fi
    step verify "$tsbackup" verify "$id" --repo "$repo" || continue
    step restore "$tsbackup" restore "$id" --repo "$repo" --target "$url/postgres" --into "restored_$cycle" --json || continue
    got=$(psql_ -d "restored_$cycle" -Atc "SELECT (SELECT count(*) FROM conditions) || '/' || (SELECT count(*) FROM metrics) || '/' || (SELECT count(*) FROM devices)")
    [ "$got" = "$expected" ] || { wrong=$((wrong + 1)); echo "cycle $cycle: restored counts $got, expected $expected" >&2; }
    psql_ -d postgres -c "DROP DATABASE \"restored_$cycle\"" >/dev/null
    # Keep the repository small: the entry is deleted through tsbackup too (another code path).
    step delete "$tsbackup" delete "$id" --repo "$repo" --yes || true
    done_cycles=$((done_cycles + 1))
    if [ $((cycle % 10)) = 0 ]; then
        echo "$(date +%T) $cycle/$cycles cycles, $failed_steps failed steps, $wrong wrong, $(ls "$reports" | wc -l) sanitizer reports, load $(cut -d' ' -f1 /proc/loadavg)"
    fi
done
elapsed=$(( $(date +%s) - started ))
report_count=$(ls "$reports" | wc -l)
echo "sanitizer=$sanitizer cycles=$cycles attempted=$attempted completed=$done_cycles failed_steps=$failed_steps wrong_results=$wrong reports=$report_count seconds=$elapsed extra_load=$load"
if [ "$report_count" -gt 0 ]; then
    mkdir -p "$scratch/sanitize-reports"
    cp "$reports"/* "$scratch/sanitize-reports/"
    echo "reports copied to $scratch/sanitize-reports/; findings by kind and place:"
    grep -h "^SUMMARY" "$reports"/* | sed -E 's/ in [^ ]+$//; s#^SUMMARY: [A-Za-z]+: ([^/]*)/.*/(checkouts/[^/]+|Sources/[^/]+)/.*#\1\2#' | sort | uniq -c
fi
[ "$failed_steps" = 0 ] && [ "$wrong" = 0 ] && [ "$report_count" = 0 ]
