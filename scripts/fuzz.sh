#!/usr/bin/env bash
# Fuzzes the parsers that read untrusted input (repository manifests, pg_restore's table of
# contents, child processes' stderr, S3 responses, connection strings and password files, stored
# SQL, encrypted objects' headers, archived WAL, timeline histories, --repo URLs, pg_basebackup's
# and psql's stderr) with libFuzzer, each for a bounded time, and prints the executions per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]     default: 30 s, every target
#
# Only the parser sources listed in Fuzz/sources.txt are compiled (with Fuzz/Support), not the
# tsbackup package and its dependencies, so the build takes about a minute; it goes to
# .build-fuzz/<sanitizers>/ and is reused while the sources and flags are unchanged. Each target starts from
# its committed seed corpus (Fuzz/corpus/TARGET) plus what earlier local runs found
# (.build-fuzz/corpus/TARGET). A crash, hang (-timeout), out-of-memory (-rss_limit_mb) or leak
# stops that target and fails the script; the input is kept in .build-fuzz/artifacts/TARGET/ and
# replays with `.build-fuzz/fuzzer-address/fuzz-TARGET FILE`. See Fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
all_targets=(manifest toc stderr s3xml connection sql encryption wal history repourl toolstderr)
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${all_targets[@]}")

# FUZZ_SANITIZERS=fuzzer drops AddressSanitizer: 4-8 times the executions per second (the
# parsers are safe Swift; ASan mainly adds leak detection and checked memcpy), for long runs.
sanitizers="${FUZZ_SANITIZERS:-fuzzer,address}"
out=.build-fuzz/${sanitizers//,/-}
mkdir -p "$out"
# -I Sources/CZstd: libzstd's module map (WALObjectFormat decompresses archived WAL with it).
# -package-name: the WAL core (Sources/TSBackupWAL) shares members with the library as `package`.
flags=(-O "-sanitize=$sanitizers" -parse-as-library -package-name tsbackup -I Sources/CZstd)
mapfile -t sources < Fuzz/sources.txt
support=(Fuzz/Support/*.swift)

# The library module: the parsers and the fuzz build's stand-ins, compiled once for all targets.
stamp=$( (printf '%s\n' "${flags[@]}" "$(swiftc --version 2>&1)"; cat "${sources[@]}" "${support[@]}") | sha256sum | cut -d' ' -f1)
build_start=$(date +%s)
if [ "$(cat "$out/library.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -f "$out/libTSBackupFuzzed.a" ]; then
    echo "fuzz: compiling ${#sources[@]} parser sources into $out/libTSBackupFuzzed.a"
    rm -f "$out/library.stamp"
    swiftc "${flags[@]}" -module-name TSBackupFuzzed -enable-testing -emit-library -static \
        -emit-module -emit-module-path "$out/TSBackupFuzzed.swiftmodule" \
        -o "$out/libTSBackupFuzzed.a" "${sources[@]}" "${support[@]}"
    echo "$stamp" > "$out/library.stamp"
fi
for target in "${targets[@]}"; do
    harness="Fuzz/Targets/$target.swift"
    [ -f "$harness" ] || { echo "fuzz: no target $target (have: ${all_targets[*]})" >&2; exit 64; }
    if [ ! -x "$out/fuzz-$target" ] || [ "$harness" -nt "$out/fuzz-$target" ] || [ "$out/libTSBackupFuzzed.a" -nt "$out/fuzz-$target" ]; then
        # (ld.gold warns once per ASan helper symbol it cannot export; harmless.)
        swiftc "${flags[@]}" -I "$out" -L "$out" -lTSBackupFuzzed "$harness" -o "$out/fuzz-$target" 2>&1 \
            | { grep -v "Cannot export local symbol" || true; }
    fi
done
build_seconds=$(( $(date +%s) - build_start ))
echo "fuzz: build took ${build_seconds} s"

# Foundation's XMLParser on Linux leaks the CFError it makes for each libxml2 error (not our
# code, a few dozen bytes per malformed document); every other leak still fails the run.
export LSAN_OPTIONS="suppressions=$PWD/Fuzz/lsan.supp:print_suppressions=0"
# A Swift runtime trap (index out of range, overflow, force-unwrap) must reach libFuzzer's own
# handler, which records the input; Swift's backtracer would get there first and confuse ASan.
export SWIFT_BACKTRACE=enable=no

failed=()
total=0
summary="$out/summary-$$.txt"
printf '%-11s %12s %9s %7s  %s\n' target executions "exec/s" corpus result > "$summary"
for target in "${targets[@]}"; do
    work=.build-fuzz/corpus/$target
    artifacts=.build-fuzz/artifacts/$target
    mkdir -p "$work" "$artifacts"
    log="$out/fuzz-$target.log"
    # -timeout: one input running longer is a hang. It is wall-clock time and a hang guard, not a
    # speed limit: a 36 kB input of 6,000 comments cost the sql harness 1.6-2.1 s under ASan at
    # load 20-30 while SQLText read it Character by Character, 0.7-0.8 s since it scans bytes
    # (SQLScript's lexer is now the slowest part); a CI machine at load 100 made the old one take
    # 14 s, and a run at `nice -n 19` can be descheduled for longer still. FUZZ_TIMEOUT overrides it.
    # -rss_limit_mb / -malloc_limit_mb: an input that makes the parser hold that much is an
    # unbounded allocation. -max_len: the largest real sample is ~7 kB; 64 kB leaves room for
    # growth without slowing every run.
    dict=()
    [ -f "Fuzz/dict/$target.dict" ] && dict=(-dict="Fuzz/dict/$target.dict")
    set +e
    "$out/fuzz-$target" "$work" "Fuzz/corpus/$target" "${dict[@]}" \
        -max_total_time="$seconds" -timeout="${FUZZ_TIMEOUT:-120}" -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 > "$log" 2>&1
    status=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    # A run stopped by a finding prints no final stats; its last progress line has the count.
    [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    units=$(find "$work" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        result=ok
    else
        kind=$(grep -oE 'ERROR: (libFuzzer: [a-z-]+|LeakSanitizer|AddressSanitizer: [a-z-]+)|Fatal error|Deadly signal' "$log" | head -1 || true)
        artifact=$(sed -n "s/.*Test unit written to \(.*\)/\1/p" "$log" | tail -1)
        result="FAILED (${kind:-exit $status}) ${artifact:-see $log}"
        failed+=("$target")
    fi
    runs=${runs:-0}
    total=$((total + runs))
    printf '%-11s %12s %9s %7s  %s\n' "$target" "$runs" "${rate:-?}" "$units" "$result" >> "$summary"
done
printf '%-11s %12s\n' total "$total" >> "$summary"
cat "$summary"
rm -f "$summary"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: findings in ${failed[*]}; logs in $out/fuzz-TARGET.log, inputs in .build-fuzz/artifacts/" >&2
    exit 1
fi
