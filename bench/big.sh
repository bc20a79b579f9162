#!/usr/bin/env bash
# Werk with a large backlog: memory, disk, FETCH latency and restart time.
#
# 1. Baseline: a fresh server, BASE_JOBS jobs pushed, FETCH + ACK latency of WORK_JOBS of them.
# 2. A fresh server filled with JOBS jobs (PUSHB, batches of 1000, 4 connections); prints the
#    fill rate, the server's RSS, the bytes on disk per job, and the FETCH + ACK latency of
#    WORK_JOBS jobs taken from the front of the big queue.
# 3. Restart (SIGTERM, start again): time until `werk listening`, time until the first job is
#    fetched, the RSS after restart, and (with a database above --blocking-check-mib) when the
#    background integrity check finished.
#
# The FETCH measurements and the restart are repeated REPEAT times (default 3); the summary
# gives every run and the median.
#
# Environment: JOBS=10000000 BASE_JOBS=100000 WORK_JOBS=20000 REPEAT=3 KEEP=1 (keep data)
#              WERK_SERVER_FLAGS="" TMPDIR (where the data goes: needs ~350 bytes per job)
set -euo pipefail

cd "$(dirname "$0")/.."
JOBS=${JOBS:-10000000}
BASE_JOBS=${BASE_JOBS:-100000}
WORK_JOBS=${WORK_JOBS:-20000}
REPEAT=${REPEAT:-3}
WERK_SERVER_FLAGS=${WERK_SERVER_FLAGS:-}
TARGET=${CARGO_TARGET_DIR:-target}
command -v jq >/dev/null || { echo "big.sh needs jq" >&2; exit 2; }

cargo build --release -p werk
WERK="$TARGET/release/werk"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/werk-big.XXXXXX")
PID=""
ADDR=""

stop() {
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=""
    fi
}
cleanup() {
    stop
    if [ "${KEEP:-0}" = 1 ]; then echo "data kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }

# start DATA_DIR: starts werk serve, sets PID/ADDR and LISTEN_MS (ms from exec to listening).
start() {
    local data=$1 t0
    : >"$WORK/out"
    t0=$(now_ms)
    # shellcheck disable=SC2086
    "$WERK" serve -b 127.0.0.1:0 -w :0 -d "$data" $WERK_SERVER_FLAGS \
        >"$WORK/out" 2>>"$WORK/log" </dev/null &
    PID=$!
    for _ in $(seq 1 60000); do
        ADDR=$(sed -n 's/^werk listening on //p' "$WORK/out")
        if [ -n "$ADDR" ]; then
            LISTEN_MS=$(($(now_ms) - t0))
            START_T0=$t0
            return 0
        fi
        kill -0 "$PID" 2>/dev/null || { tail "$WORK/log" >&2; exit 1; }
        sleep 0.005
    done
    echo "no listening line" >&2
    exit 1
}
rss_mb() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$PID/status"; }
# --no-disk: the bench's own disk probe (1,000 fdatasyncs) would count in the restart's time to
# the first fetched job.
bench() { "$WERK" bench --json --no-disk --url "tcp://$ADDR" "$@" 2>/dev/null; }
fetch_p() { jq -r ".latency_us.FETCH.$1" <<<"$2"; }

echo "werk big: $(nproc) CPUs, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), JOBS=$JOBS" >&2

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# runs "label" values...: prints the values and their median
runs() { local l=$1; shift; printf "%-44s %s   (runs: %s)\n" "$l" "$(median "$@")" "$*"; }

# 1. baseline
start "$WORK/base"
bench --mode pushb --connections 4 --batch 1000 --jobs "$BASE_JOBS" --duration-secs 600 >/dev/null
base50=() base99=()
for _ in $(seq 1 "$REPEAT"); do
    j=$(bench --mode work --connections 1 --jobs "$WORK_JOBS" --duration-secs 300)
    base50+=("$(fetch_p p50 "$j")") base99+=("$(fetch_p p99 "$j")")
done
stop

# 2. the big store
start "$WORK/big"
fill=$(bench --mode pushb --connections 4 --batch 1000 --jobs "$JOBS" --duration-secs 3600)
rss_full=$(rss_mb)
big50=() big99=()
for _ in $(seq 1 "$REPEAT"); do
    j=$(bench --mode work --connections 1 --jobs "$WORK_JOBS" --duration-secs 300)
    big50+=("$(fetch_p p50 "$j")") big99+=("$(fetch_p p99 "$j")")
done
stop
bytes=$(du -sb "$WORK/big" | cut -f1)

# 3. restarts
listen=() first=() rss_restart=() check=()
for _ in $(seq 1 "$REPEAT"); do
    : >"$WORK/log"
    start "$WORK/big"
    bench --mode work --connections 1 --jobs 1 --duration-secs 60 >/dev/null
    first+=("$(($(now_ms) - START_T0))")
    listen+=("$LISTEN_MS")
    rss_restart+=("$(rss_mb)")
    c="-"
    for _ in $(seq 1 1200); do
        if grep -q "integrity check passed" "$WORK/log"; then
            c=$(grep "integrity check passed" "$WORK/log" | tail -1 | grep -o 'elapsed_ms=[0-9]*' | cut -d= -f2 || true)
            break
        fi
        sleep 0.1
    done
    check+=("$c")
    stop
done

printf '\n%-44s %s\n' "jobs stored" "$JOBS"
printf '%-44s %s jobs/s\n' "fill rate (PUSHB 1000 x 4)" "$(jq -r .throughput_per_s <<<"$fill")"
printf '%-44s %s MB\n' "server RSS, full" "$rss_full"
printf '%-44s %s bytes (%s per job)\n' "data directory" "$bytes" "$((bytes / JOBS))"
runs "FETCH p50 µs, $BASE_JOBS-job queue" "${base50[@]}"
runs "FETCH p99 µs, $BASE_JOBS-job queue" "${base99[@]}"
runs "FETCH p50 µs, $JOBS-job queue" "${big50[@]}"
runs "FETCH p99 µs, $JOBS-job queue" "${big99[@]}"
runs "restart: exec to listening, ms" "${listen[@]}"
runs "restart: exec to first job fetched, ms" "${first[@]}"
runs "server RSS after restart, MB" "${rss_restart[@]}"
runs "background integrity check, ms" "${check[@]}"
