#!/usr/bin/env bash
# Web UI list pages on a large retry set: fills a fresh `werk serve` (release build) with N retry
# jobs (default 1,000,000; bench/web_fill.py) and prints how long each page takes (median of 5
# requests, curl's time_total). Not part of the test suite.
#   N=1000000 bash bench/web.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000000}"
cargo build --release -q -p werk
BIN="${CARGO_TARGET_DIR:-target}/release/werk"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/werk-web.XXXXXX")
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
"$BIN" serve -d "$WORK/data" -b 127.0.0.1:0 -w 127.0.0.1:0 \
  --scan-interval-ms 3600000 >"$WORK/out" 2>"$WORK/log" &
PID=$!
for _ in $(seq 100); do grep -q "werk listening" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's/^werk listening on //p' "$WORK/out")
WEB=$(sed -n 's/^werk web UI on //p' "$WORK/out")
start=$(date +%s)
python3 bench/web_fill.py "$ADDR" "$N"
echo "filled $N retries in $(( $(date +%s) - start )) s" >&2
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() {
  local label="$1" path="$2"
  local t
  t=$(for _ in 1 2 3 4 5; do curl -s -o "$WORK/page" -w '%{time_total}\n' "$WEB$path"; done | median)
  printf '%-44s %8.1f ms  %s rows\n' "$label" "$(echo "$t * 1000" | bc -l)" "$(grep -c 'data-jid=' "$WORK/page" || true)"
}
measure "retries, first page" "/retries"
next=$(grep -o 'id="next-page" href="[^"]*"' "$WORK/page" | sed 's/.*href="//; s/"$//; s/&amp;/\&/g' || true)
measure "retries, second page (keyset cursor)" "/retries$next"
mid_score=$(( $(date +%s%3N) ))
measure "retries, deep page (cursor near the end)" "/retries?after=$mid_score.0"
measure "retries, jobtype = ChargeCard" "/retries?jobtype=ChargeCard"
measure "retries, jid lookup" "/retries?jid=fill-000500000"
measure "retries, text 'PaymentDeclined' (1 in 7)" "/retries?q=PaymentDeclined"
measure "retries, text 'attempt 12' (1 in 13)" "/retries?q=attempt+12"
measure "retries, text with no match (full scan)" "/retries?q=no-such-text"
measure "dashboard" "/"
echo "RSS after: $(ps -o rss= -p "$PID") KiB" >&2
