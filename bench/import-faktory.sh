#!/usr/bin/env bash
# Measures `werk import faktory` on a big Faktory Redis: N jobs (default 1,000,000) in
# Faktory's layout (most in one queue list, the rest in scheduled / retries / dead / working),
# loaded into a fresh redis-server with `redis-cli --pipe`, then imported into a fresh embedded
# store (or, with DATABASE_URL set, into that PostgreSQL database). Prints the wall time, the
# importer's peak RSS (GNU time's "Maximum resident set size") and jobs per second, and checks
# the count the server reports afterwards. A benchmark: it prints figures, it asserts nothing
# about speed.
#
#   bench/import-faktory.sh [N]        (WERK=path/to/werk, default target/release/werk)
set -euo pipefail
N=${1:-1000000}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WERK=${WERK:-$HERE/target/release/werk}
[ -x "$WERK" ] || { echo "build it first: cargo build --release (or set WERK)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/werk-import-bench.XXXXXX)
REDIS_PID=
cleanup() {
  if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
SOCK=$TMP/redis.sock
redis-server --port 0 --unixsocket "$SOCK" --save '' --appendonly no --dir "$TMP" \
  --logfile "$TMP/redis.log" &
REDIS_PID=$!
for _ in $(seq 1 500); do redis-cli -s "$SOCK" ping >/dev/null 2>&1 && break; sleep 0.02; done
redis-cli -s "$SOCK" ping >/dev/null

echo "filling Redis with $N jobs in Faktory's layout..."
python3 - "$N" <<'PY' | redis-cli -s "$SOCK" --pipe >/dev/null
import json, sys
n = int(sys.argv[1])
out = sys.stdout.buffer
def cmd(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    out.write(b"".join(parts))
def job(i, queue="default", **extra):
    j = {"jid": "bench-%09d" % i, "jobtype": "BenchJob", "queue": queue,
         "args": [i, "some argument text", {"k": i}], "created_at": "2026-12-01T10:00:00.000000Z",
         "enqueued_at": "2026-12-01T10:00:00.000000Z", "retry": 25}
    j.update(extra)
    return json.dumps(j)
sets = n // 20          # 5 % each in scheduled, retries, dead, working; 80 % in queues
queued = n - 4 * sets
cmd("SADD", "queues", "default", "mailers")
for i in range(queued):
    cmd("LPUSH", "default" if i % 4 else "mailers", job(i, "default" if i % 4 else "mailers"))
base = queued
fail = {"retry_count": 2, "failed_at": "2026-12-01T10:00:00.000Z", "message": "boom", "errtype": "RuntimeError"}
for k in range(sets):
    i = base + k
    cmd("ZADD", "scheduled", 1.9e9 + k, job(i, at="2030-03-17T17:46:40.000Z"))
    cmd("ZADD", "retries", 1.9e9 + k, job(i + sets, failure=fail))
    cmd("ZADD", "dead", 1.7e9 + k, job(i + 2 * sets, failure=fail))
    res = {"job": json.loads(job(i + 3 * sets)), "reserved_at": "2026-12-01T10:00:00Z",
           "expires_at": "2026-12-01T10:30:00Z", "wid": "w1"}
    cmd("ZADD", "working", 1.8e9 + k, json.dumps(res))
PY
echo "Redis: $(redis-cli -s "$SOCK" info memory | grep '^used_memory_human' | tr -d '\r'), $(redis-cli -s "$SOCK" dbsize | tr -d '\r') keys"

TARGET=(-d "$TMP/werk-data")
[ -n "${DATABASE_URL:-}" ] && TARGET=(--database-url "$DATABASE_URL")
start=$(date +%s.%N)
/usr/bin/time -v "$WERK" import faktory --redis "unix://$SOCK" "${TARGET[@]}" \
  > "$TMP/import.out" 2> "$TMP/import.time" || { tail -30 "$TMP/import.out" "$TMP/import.time"; exit 1; }
end=$(date +%s.%N)
tail -12 "$TMP/import.out"
rss=$(grep "Maximum resident set size" "$TMP/import.time" | awk '{print $NF}')
secs=$(echo "$end - $start" | bc)
echo "import of $N jobs: $secs s, $(echo "$N / $secs" | bc) jobs/s, peak RSS $((rss / 1024)) MB"
