#!/usr/bin/env bash
# Churn on PostgreSQL (issue 12: "churn bloats tables; measure after 10 million jobs have
# passed through"): one werk node on a fresh PostgreSQL (the settings of bench/ha.sh), and
# `werk bench --mode mixed --connections 100` in rounds of CHUNK jobs until TOTAL jobs have been
# pushed, fetched and ACKed. After each round: the round's throughput and ACK p50/p99, the size
# of `jobs` (heap, its indexes, TOAST) and of the other tables, live and dead rows, how often
# autovacuum ran on `jobs`, and how long `/stats` (what the dashboard and INFO count) takes.
# At the end, BACKLOG jobs are pushed and left enqueued, and `/stats` is timed again against
# that backlog.
#
# Environment: TOTAL=10000000 CHUNK=1000000 BACKLOG=1000000 PG_BIN=/usr/lib/postgresql/15/bin
#              CARGO_TARGET_DIR
#              PG_OPTS: more server settings, e.g. "-c autovacuum_naptime=1s" (docs/ha.md)
set -euo pipefail

cd "$(dirname "$0")/.."
TOTAL=${TOTAL:-10000000}
CHUNK=${CHUNK:-1000000}
BACKLOG=${BACKLOG:-1000000}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
TARGET=${CARGO_TARGET_DIR:-target}
command -v jq >/dev/null || { echo "pg-churn.sh needs jq" >&2; exit 2; }
command -v curl >/dev/null || { echo "pg-churn.sh needs curl" >&2; exit 2; }

cargo build --release -p werk
WERK="$PWD/$TARGET/release/werk"
WORK=$(mktemp -d /tmp/werk-churn.XXXXXX)
chmod 755 "$WORK"
NODE=

as_pg() {
    if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; else "$@"; fi
}
cleanup() {
    [ -n "$NODE" ] && { kill -TERM "$NODE" 2>/dev/null || true; wait "$NODE" 2>/dev/null || true; }
    if [ -f "$WORK/pg/data/postmaster.pid" ]; then as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK/pg"
as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -A trust -U werk -E UTF8 --no-locale >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w start -o \
    "-c listen_addresses='' -c unix_socket_directories='$WORK/pg' -c fsync=on -c synchronous_commit=on \
     -c shared_buffers=512MB -c max_connections=300 -c max_wal_size=4GB ${PG_OPTS:-}" >/dev/null
as_pg "$PG_BIN/createdb" -h "$WORK/pg" -U werk churn
URL="host=$WORK/pg user=werk dbname=churn"
psql_() { "$PG_BIN/psql" -qAt -F ' ' "$URL" -c "$1"; }

"$WERK" serve -b 127.0.0.1:0 -w 127.0.0.1:0 -l warn -d "$WORK/n" --database-url "$URL" \
    >"$WORK/node.out" 2>"$WORK/node.log" </dev/null &
NODE=$!
ADDR= WEB=
for _ in $(seq 1 300); do
    ADDR=$(sed -n 's/^werk listening on //p' "$WORK/node.out")
    WEB=$(sed -n 's|^werk web UI on http://||p' "$WORK/node.out")
    [ -n "$ADDR" ] && [ -n "$WEB" ] && break
    sleep 0.1
done
[ -n "$ADDR" ] && [ -n "$WEB" ] || { echo "werk did not start" >&2; cat "$WORK/node.out" "$WORK/node.log" >&2; exit 1; }

stats_ms() { # median of 5 timed GET /stats, in ms
    for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_total}\n' "http://$WEB/stats"; done |
        sort -g | awk 'NR == 3 { printf "%.1f", $1 * 1000 }'
}
sizes() { # jobs heap MB, jobs indexes MB, jobs TOAST MB, other tables MB, live, dead, autovacuums
    psql_ "SELECT round(pg_relation_size('jobs') / 1048576.0, 1),
                  round(pg_indexes_size('jobs') / 1048576.0, 1),
                  round((pg_total_relation_size('jobs') - pg_relation_size('jobs')
                         - pg_indexes_size('jobs')) / 1048576.0, 1),
                  round((SELECT sum(pg_total_relation_size(relid)) FROM pg_stat_user_tables
                         WHERE relname <> 'jobs') / 1048576.0, 1),
                  n_live_tup, n_dead_tup, autovacuum_count
           FROM pg_stat_user_tables WHERE relname = 'jobs'"
}

echo "bench/pg-churn.sh: $(nproc) CPUs, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), TOTAL=$TOTAL CHUNK=$CHUNK PG_OPTS=${PG_OPTS:-}" >&2
printf '%10s %8s %9s %9s %9s %9s %9s %9s %9s %9s %7s %9s\n' jobs jobs/s "p50 µs" "p99 µs" \
    "heap MB" "idx MB" "toast MB" "other MB" live dead autovac "/stats ms"
done_jobs=0
while [ "$done_jobs" -lt "$TOTAL" ]; do
    n=$((TOTAL - done_jobs < CHUNK ? TOTAL - done_jobs : CHUNK))
    json=$(FAKTORY_URL="" "$WERK" bench --json --url "tcp://$ADDR" --mode mixed --connections 100 \
        --producers 50 --workers 50 --jobs "$n" --duration-secs 3600 2>>"$WORK/bench.err")
    done_jobs=$((done_jobs + $(jq -r .acked <<<"$json")))
    read -r heap idx toast other live dead av <<<"$(sizes)"
    printf '%10s %8s %9s %9s %9s %9s %9s %9s %9s %9s %7s %9s\n' "$done_jobs" \
        "$(jq -r .throughput_per_s <<<"$json")" "$(jq -r .latency_us.ACK.p50 <<<"$json")" \
        "$(jq -r .latency_us.ACK.p99 <<<"$json")" "$heap" "$idx" "$toast" "$other" "$live" "$dead" \
        "$av" "$(stats_ms)"
done
if [ "$BACKLOG" -gt 0 ]; then
    FAKTORY_URL="" "$WERK" bench --json --url "tcp://$ADDR" --mode pushb --batch 1000 \
        --connections 10 --jobs "$BACKLOG" >/dev/null 2>>"$WORK/bench.err"
    read -r heap idx toast other live dead av <<<"$(sizes)"
    echo "backlog of $BACKLOG enqueued jobs: /stats $(stats_ms) ms; jobs heap $heap MB, indexes $idx MB" >&2
fi
