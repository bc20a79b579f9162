#!/usr/bin/env bash
# Werk's standard benchmark.
#
# Builds the release binary, then for every scenario starts a fresh `werk serve` on a new data
# directory, runs `werk bench --json` against it, stops the server, and finally prints one table
# (scenario, jobs/s, and p50/p99/p99.9 of the scenario's key command, in microseconds).
# jobs/s counts ACKs in the mixed and work scenarios, accepted jobs in the push ones, and is the
# achieved PUSH rate in the latency scenario (whose note gives the offered rate and the p99 of
# PUSH_scheduled: the latency from the time each PUSH was due, which shows an overload that the
# plain PUSH service time hides).
#
# Environment:
#   RATE=5000               offered PUSH rate (per second) of the latency scenario
#   LATENCY_SECS=20         how long the latency scenario pushes
#   REPEAT=1                run every scenario N times; the table shows the median of each figure
#   WERK_SERVER_FLAGS=""    extra flags for `werk serve` (e.g. "--fetch-timeout-ms 500")
#   MAX_SECS=180            time cap (--duration-secs) of every scenario but latency
#   SCENARIOS="..."         run only these (space-separated names from the list below)
#   URL=tcp://[:pw@]h:p     bench an already running server (any Faktory-compatible one) instead:
#                           no server is started and each run begins with FLUSH (deletes ALL data)
#   KEEP_JSON=DIR           keep every JSON report in DIR
#   CARGO_TARGET_DIR        where cargo builds (default: target)
#
# Scenarios: mixed-10 mixed-100 pushb-10 push-10 work-10 latency
set -euo pipefail

cd "$(dirname "$0")/.."
RATE=${RATE:-5000}
LATENCY_SECS=${LATENCY_SECS:-20}
REPEAT=${REPEAT:-1}
WERK_SERVER_FLAGS=${WERK_SERVER_FLAGS:-}
MAX_SECS=${MAX_SECS:-180}
SCENARIOS=${SCENARIOS:-"mixed-10 mixed-100 pushb-10 push-10 work-10 latency"}
URL=${URL:-}
KEEP_JSON=${KEEP_JSON:-}
TARGET=${CARGO_TARGET_DIR:-target}

if ! command -v jq >/dev/null; then
    echo "run.sh needs jq" >&2
    exit 2
fi
if ! [[ "$REPEAT" =~ ^[1-9][0-9]*$ ]]; then
    echo "REPEAT must be a positive integer" >&2
    exit 2
fi

cargo build --release -p werk
WERK="$TARGET/release/werk"
[ -n "$KEEP_JSON" ] && mkdir -p "$KEEP_JSON"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/werk-bench.XXXXXX")
SERVER_PID=""
ADDR=""

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
    rm -rf "$WORK/data" "$WORK/server.out"
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a fresh server; sets SERVER_PID and ADDR (from its "werk listening on ADDR" line).
start_server() {
    mkdir -p "$WORK/data"
    # shellcheck disable=SC2086 # WERK_SERVER_FLAGS is a list of flags
    "$WERK" serve -b 127.0.0.1:0 -w :0 -d "$WORK/data" -l warn $WERK_SERVER_FLAGS \
        >"$WORK/server.out" 2>>"$WORK/server.log" </dev/null &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        ADDR=$(sed -n 's/^werk listening on //p' "$WORK/server.out")
        [ -n "$ADDR" ] && return 0
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "werk serve exited at start-up:" >&2
            tail -20 "$WORK/server.log" >&2
            SERVER_PID=""
            return 1
        fi
        sleep 0.1
    done
    echo "werk serve did not announce its address within 30 s" >&2
    return 1
}

# bench ARGS... : runs werk bench --json against the current server, prints the JSON. Against
# URL it starts with FLUSH unless NOFLUSH=1.
bench() {
    local url flush=() disk=()
    if [ -n "$URL" ]; then
        url=$URL
        [ "${NOFLUSH:-0}" = 1 ] || flush=(--flush)
    else
        url="tcp://$ADDR"
        # The disk probe measures the disk the server's data directory is on.
        disk=(--disk "$WORK")
    fi
    FAKTORY_URL="" timeout "$((MAX_SECS + LATENCY_SECS + 60))" \
        "$WERK" bench --json --url "$url" "${flush[@]}" "${disk[@]}" "$@"
}

# The scenario's key command, and its arguments.
key_of() {
    case $1 in
    mixed-*) echo ACK ;;
    pushb-*) echo PUSHB ;;
    push-*) echo PUSH ;;
    work-*) echo ACK ;;
    latency) echo PUSH ;;
    esac
}
args_of() {
    case $1 in
    mixed-10) echo "--mode mixed --connections 10 --producers 5 --workers 5 --jobs 100000 --duration-secs $MAX_SECS" ;;
    mixed-100) echo "--mode mixed --connections 100 --producers 50 --workers 50 --jobs 300000 --duration-secs $MAX_SECS" ;;
    pushb-10) echo "--mode pushb --connections 10 --batch 100 --jobs 1000000 --duration-secs $MAX_SECS" ;;
    push-10) echo "--mode push --connections 10 --jobs 100000 --duration-secs $MAX_SECS" ;;
    work-10) echo "--mode work --connections 10 --jobs 100000 --duration-secs $MAX_SECS" ;;
    latency) echo "--mode latency --connections 10 --rate $RATE --jobs $((RATE * LATENCY_SECS)) --duration-secs $((LATENCY_SECS + 15))" ;;
    *) return 1 ;;
    esac
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
        else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "werk bench: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), REPEAT=$REPEAT" >&2
ROWS=()
FAILED=0
for sc in $SCENARIOS; do
    if ! ARGS=$(args_of "$sc"); then
        echo "unknown scenario $sc" >&2
        exit 2
    fi
    KEY=$(key_of "$sc")
    TPUT=() P50=() P99=() P999=() SCHED=()
    status=ok
    for r in $(seq 1 "$REPEAT"); do
        if [ -z "$URL" ]; then
            start_server
        fi
        json=""
        rc=0
        if [ "$sc" = work-10 ]; then
            # Fill the queue first (not measured), then drain it.
            fill=$(bench --mode pushb --connections 4 --batch 1000 --jobs 100000 \
                --duration-secs "$MAX_SECS" 2>"$WORK/bench.err") || rc=$?
            if [ "$rc" != 0 ] || [ "$(jq -r .pushed <<<"$fill")" != 100000 ]; then
                echo "$sc: the fill failed" >&2
                rc=1
            else
                # shellcheck disable=SC2086
                json=$(NOFLUSH=1 bench $ARGS 2>"$WORK/bench.err") || rc=$?
            fi
        else
            # shellcheck disable=SC2086
            json=$(bench $ARGS 2>"$WORK/bench.err") || rc=$?
        fi
        if [ -z "$URL" ]; then
            stop_server
        fi
        if [ -n "$KEEP_JSON" ] && [ -n "$json" ]; then
            printf '%s\n' "$json" >"$KEEP_JSON/$sc-$r.json"
        fi
        if [ "$rc" != 0 ] || [ -z "$json" ]; then
            echo "$sc run $r: FAILED (exit $rc)" >&2
            cat "$WORK/bench.err" >&2 2>/dev/null || true
            [ -n "$json" ] && jq -c '{errors, io_errors, error_samples}' <<<"$json" >&2
            status=FAILED
            FAILED=1
            continue
        fi
        [ "$(jq -r .complete <<<"$json")" = true ] || status=incomplete
        TPUT+=("$(jq -r .throughput_per_s <<<"$json")")
        P50+=("$(jq -r --arg k "$KEY" '.latency_us[$k].p50 // "-"' <<<"$json")")
        P99+=("$(jq -r --arg k "$KEY" '.latency_us[$k].p99 // "-"' <<<"$json")")
        P999+=("$(jq -r --arg k "$KEY" '.latency_us[$k].p999 // "-"' <<<"$json")")
        SCHED+=("$(jq -r '.latency_us.PUSH_scheduled.p99 // "-"' <<<"$json")")
        echo "$sc run $r/$REPEAT: $(jq -r '"\(.throughput_per_s) jobs/s, elapsed \(.elapsed_s) s, pushed \(.pushed), acked \(.acked), errors \(.errors)"' <<<"$json")" >&2
    done
    note=""
    if [ "$sc" = latency ] && [ "${#SCHED[@]}" -gt 0 ]; then
        note="  offered $RATE/s, PUSH_scheduled p99 $(median "${SCHED[@]}") µs"
    fi
    ROWS+=("$(printf '%-10s %12s %-6s %10s %10s %10s  %s%s' "$sc" \
        "$(median "${TPUT[@]}")" "$KEY" "$(median "${P50[@]}")" "$(median "${P99[@]}")" \
        "$(median "${P999[@]}")" "$status" "$note")")
done

echo
printf '%-10s %12s %-6s %10s %10s %10s  %s\n' scenario jobs/s key "p50 µs" "p99 µs" "p99.9 µs" status
for row in "${ROWS[@]}"; do
    echo "$row"
done
[ "$REPEAT" -gt 1 ] && echo "(median of $REPEAT runs per figure)"
exit "$FAILED"
