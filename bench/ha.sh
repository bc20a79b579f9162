#!/usr/bin/env bash
# Werk on PostgreSQL (issue 12): `werk bench --mode mixed --connections 100` against the embedded
# store, one werk node on PostgreSQL and three werk nodes on the same PostgreSQL, and Faktory 1.10
# when ../shared/faktory is there — alternating, REPEAT rounds, in one run — with the CPU time
# werk and PostgreSQL spent per job.
#
# PostgreSQL: Debian's postgresql-15 binaries, a fresh cluster in a temporary directory, run as
# the `postgres` user when this script runs as root; fsync=on, synchronous_commit=on (what a
# production cluster runs; there is no standby here, so a COMMIT waits for the local WAL flush
# only). Every werk node connects over the unix socket.
#
# Environment: REPEAT=3 JOBS=300000 MAX_SECS=120 SCENARIOS="embedded pg-1 pg-3 faktory"
#              PG_BIN=/usr/lib/postgresql/15/bin CARGO_TARGET_DIR
#              OLD_WERK=path: another werk binary (say, a build of the previous commit); the
#                scenario `pg-1-old` runs it as `pg-1` runs this tree's, alternating with it.
#              STATEMENTS=N: after each PostgreSQL run, the N statements with the most total
#                execution time (pg_stat_statements): calls, mean and total ms.
# Prints one line per run and a table of medians: jobs/s, ACK p50/p99 (µs), werk CPU ms per 1000
# jobs (all nodes), PostgreSQL CPU ms per 1000 jobs.
set -euo pipefail

cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-3}
JOBS=${JOBS:-300000}
MAX_SECS=${MAX_SECS:-120}
SCENARIOS=${SCENARIOS:-"embedded pg-1 pg-3 faktory"}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
TARGET=${CARGO_TARGET_DIR:-target}
FAKTORY_DIR=$(cd .. && pwd)/shared/faktory
command -v jq >/dev/null || { echo "ha.sh needs jq" >&2; exit 2; }

cargo build --release -p werk
WERK="$PWD/$TARGET/release/werk"
WORK=$(mktemp -d /tmp/werk-ha.XXXXXX)
chmod 755 "$WORK"
PIDS=()
ADDRS=()

as_pg() {
    if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; else "$@"; fi
}

stop_nodes() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    ADDRS=()
}
cleanup() {
    stop_nodes
    if [ -f "$WORK/pg/data/postmaster.pid" ]; then as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true; fi
    [ -f "$WORK/fk/faktory.pid" ] && "$FAKTORY_DIR/stop.sh" 7550 "$WORK/fk" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PostgreSQL, once for the whole run.
mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK/pg"
as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -A trust -U werk -E UTF8 --no-locale >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w start -o \
    "-c listen_addresses='' -c unix_socket_directories='$WORK/pg' -c fsync=on -c synchronous_commit=on \
     -c shared_buffers=512MB -c max_connections=300 -c max_wal_size=4GB \
     -c shared_preload_libraries=pg_stat_statements" >/dev/null
STATEMENTS=${STATEMENTS:-0}
DB=0
new_db() { # sets URL to a fresh database
    DB=$((DB + 1))
    as_pg "$PG_BIN/createdb" -h "$WORK/pg" -U werk "w$DB"
    URL="host=$WORK/pg user=werk dbname=w$DB"
    if [ "$STATEMENTS" -gt 0 ]; then
        "$PG_BIN/psql" -qAt "$URL" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
            -c "SELECT pg_stat_statements_reset()" >/dev/null
    fi
}
statements() { # prints the top statements of the last database
    [ "$STATEMENTS" -gt 0 ] || return 0
    "$PG_BIN/psql" -qAt -F ' | ' "$URL" -c "SELECT calls, round(mean_exec_time::numeric, 3),
        round(total_exec_time::numeric), regexp_replace(left(query, 90), '\s+', ' ', 'g')
        FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        ORDER BY total_exec_time DESC LIMIT $STATEMENTS" | sed 's/^/    /' >&2
}

# start_node ARGS...: starts a werk node, appends to PIDS/ADDRS.
start_node() {
    local n=${#PIDS[@]} out="$WORK/node${#PIDS[@]}.out"
    : >"$out"
    "${NODE_WERK:-$WERK}" serve -b 127.0.0.1:0 -w :0 -l warn "$@" >"$out" 2>>"$WORK/node.log" </dev/null &
    PIDS+=($!)
    for _ in $(seq 1 300); do
        local a
        a=$(sed -n 's/^werk listening on //p' "$out")
        if [ -n "$a" ]; then ADDRS+=("tcp://$a"); return 0; fi
        sleep 0.1
    done
    echo "node $n did not start" >&2
    tail -5 "$WORK/node.log" >&2
    return 1
}

# CPU ticks (utime+stime) of pids; for PostgreSQL, every postgres process plus the postmaster's
# reaped children.
ticks_of() {
    local t=0 p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}
pg_ticks() {
    local pm t
    pm=$(head -1 "$WORK/pg/data/postmaster.pid")
    t=$(ticks_of $(pgrep -u postgres -f "postgres" 2>/dev/null || pgrep postgres))
    echo $((t + $(awk '{print $16 + $17}' "/proc/$pm/stat")))
}
HZ=$(getconf CLK_TCK)

declare -A TPUT P50 P99 WCPU PCPU
run_one() { # scenario
    local sc=$1 url pg0 w0 json
    case $sc in
    embedded) start_node -d "$WORK/emb$RANDOM" ;;
    pg-1) new_db; start_node -d "$WORK/n" --database-url "$URL" ;;
    pg-1-old)
        [ -x "${OLD_WERK:-}" ] || { echo "pg-1-old needs OLD_WERK" >&2; return 1; }
        new_db; NODE_WERK=$OLD_WERK start_node -d "$WORK/n" --database-url "$URL" ;;
    pg-3) new_db; for _ in 1 2 3; do start_node -d "$WORK/n" --database-url "$URL"; done ;;
    faktory)
        [ -x "$FAKTORY_DIR/bin/faktory" ] || return 1
        command -v redis-server >/dev/null || { echo "faktory needs redis-server" >&2; return 1; }
        rm -rf "$WORK/fk"; mkdir -p "$WORK/fk"
        "$FAKTORY_DIR/start.sh" 7550 7551 "$WORK/fk" >/dev/null || return 1
        ADDRS=("tcp://127.0.0.1:7550")
        ;;
    esac
    [ "${#ADDRS[@]}" -gt 0 ] || return 1
    local urls
    urls=$(IFS=,; echo "${ADDRS[*]}")
    pg0=$(pg_ticks); w0=$(ticks_of "${PIDS[@]}")
    json=$(FAKTORY_URL="" timeout $((MAX_SECS + 60)) "$WERK" bench --json --url "$urls" --mode mixed \
        --connections 100 --producers 50 --workers 50 --jobs "$JOBS" --duration-secs "$MAX_SECS" 2>>"$WORK/bench.err")
    local pg1 w1 acked
    pg1=$(pg_ticks); w1=$(ticks_of "${PIDS[@]}")
    acked=$(jq -r .acked <<<"$json")
    if ! [ "${acked:-0}" -gt 0 ] 2>/dev/null; then
        echo "$sc: the bench failed" >&2
        if [ "$sc" = faktory ]; then "$FAKTORY_DIR/stop.sh" 7550 "$WORK/fk" >/dev/null 2>&1 || true; fi
        stop_nodes
        return 1
    fi
    if [ "$sc" = faktory ]; then
        "$FAKTORY_DIR/stop.sh" 7550 "$WORK/fk" >/dev/null 2>&1 || true
        ADDRS=()
        WCPU[$sc]+=" -"; PCPU[$sc]+=" -"
    else
        stop_nodes
        WCPU[$sc]+=" $(( (w1 - w0) * 1000 * 1000 / HZ / acked ))"
        if [ "$sc" = embedded ]; then PCPU[$sc]+=" -"; else PCPU[$sc]+=" $(( (pg1 - pg0) * 1000 * 1000 / HZ / acked ))"; fi
    fi
    case $sc in pg-*) statements ;; esac
    TPUT[$sc]+=" $(jq -r .throughput_per_s <<<"$json")"
    P50[$sc]+=" $(jq -r '.latency_us.ACK.p50' <<<"$json")"
    P99[$sc]+=" $(jq -r '.latency_us.ACK.p99' <<<"$json")"
    echo "$sc: $(jq -r '"\(.throughput_per_s) jobs/s, acked \(.acked), errors \(.errors), ACK p50 \(.latency_us.ACK.p50) µs p99 \(.latency_us.ACK.p99) µs"' <<<"$json")" >&2
}

median() {
    printf '%s\n' "$@" | grep -v '^-$' | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
        else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "bench/ha.sh: $(nproc) CPUs, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), REPEAT=$REPEAT, JOBS=$JOBS" >&2
for r in $(seq 1 "$REPEAT"); do
    for sc in $SCENARIOS; do
        run_one "$sc" || echo "$sc: skipped" >&2
    done
done
printf '%-9s %10s %9s %9s %14s %14s\n' scenario jobs/s "ACK p50" "ACK p99" "werk ms/1k" "postgres ms/1k"
for sc in $SCENARIOS; do
    [ -n "${TPUT[$sc]:-}" ] || continue
    printf '%-9s %10s %9s %9s %14s %14s\n' "$sc" "$(median ${TPUT[$sc]})" "$(median ${P50[$sc]})" \
        "$(median ${P99[$sc]})" "$(median ${WCPU[$sc]})" "$(median ${PCPU[$sc]})"
done
