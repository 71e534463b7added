#!/usr/bin/env bash
# Measures durable continuous ingest (issue #14.6 target: >= 1M lines/s): a generated conn log
# (scripts/gen-zeek-conn.py, LINES lines, ~2,000 hosts) posted to POST /v1/detectors/bench/ingest
# in batches of BATCH lines on the release server (window 5m, group_by id.orig_h, lateness 10m),
# then flushed; prints lines/s of the ingest calls (each committed before its 202) and of the
# flush, and the windows stored; then the server's CPU time from the first batch to the end of
# the flush, the load average, and a checksum of the stored windows as GET …/windows lists them
# (all but `closed_at`: equal across binaries that store the same windows, whatever form they
# store them in). Measurement only.
#
# Usage: scripts/bench-ingest.sh      (from anywhere; builds the release binary unless BUILD=0)
# Env:   LINES (default 1000000), BATCH (default 100000), PORT (default 18091), KEEP_TMP=1,
#        BIN (default target/release/netsentinel; another binary is not built),
#        LOG_DIR (keep the generated log and its batches there between runs; default: a temp dir),
#        PERF=FILE to also `perf record` the server during the batches.
set -euo pipefail

cd "$(dirname "$0")/.."
LINES="${LINES:-1000000}"
BATCH="${BATCH:-100000}"
PORT="${PORT:-18091}"
BASE="http://127.0.0.1:$PORT"
TMP="$(mktemp -d)"
SERVER_PID=""
REC_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP_TMP:-0}" != 1 ]]; then rm -rf "$TMP"; else echo "kept $TMP" >&2; fi
}
trap cleanup EXIT

if [[ -n "${BIN:-}" ]]; then
    BIN="$(realpath "$BIN")"
else
    BIN=target/release/netsentinel
    [[ "${BUILD:-1}" == 0 ]] || cargo build --release --quiet
fi
D="${LOG_DIR:-$TMP}/data-$LINES"
if [[ ! -f "$D/conn.log" ]]; then
    mkdir -p "$D"
    python3 scripts/gen-zeek-conn.py "$LINES" "$D/conn.log" "$D/conn.json.log" >/dev/null
    grep '^#' "$D/conn.log" | grep -v '^#close' > "$D/header"
fi
B="$D/b$BATCH"
if [[ ! -d "$B" ]]; then
    mkdir -p "$B"
    grep -v '^#' "$D/conn.log" | split -l "$BATCH" - "$B/batch."
fi

"$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$TMP/data" \
    --max-records 10000000 >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done

curl -sf -X PUT "$BASE/v1/detectors/bench" -H 'Content-Type: application/json' \
    -d '{"source":{"format":"zeek","window":"5m","group_by":"id.orig_h","allowed_lateness":"10m"}}' >/dev/null
curl -sf -X POST "$BASE/v1/detectors/bench/model/fit?n_estimators=100&seed=1" \
    -H 'Content-Type: text/zeek-tsv' --data-binary @"$D/conn.log" >/dev/null
curl -sf -X POST "$BASE/v1/detectors/bench/ingest" -H 'Content-Type: text/zeek-tsv' \
    --data-binary @"$D/header" >/dev/null

if [[ -n "${PERF:-}" ]]; then
    perf record -F 199 --call-graph dwarf,16000 -o "$PERF" -p "$SERVER_PID" 2>/dev/null &
    REC_PID=$!
    sleep 0.3
fi
# The server's user + system CPU, in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
cpu0=$(cpu)
start=$(date +%s.%N)
for f in "$B"/batch.*; do
    code=$(curl -s -o "$TMP/answer" -w '%{http_code}' -X POST "$BASE/v1/detectors/bench/ingest" \
        -H 'Content-Type: text/zeek-tsv' --data-binary @"$f")
    [[ "$code" == 202 ]] || { echo "ingest answered $code: $(cat "$TMP/answer")" >&2; exit 1; }
done
mid=$(date +%s.%N)
curl -sf -X POST "$BASE/v1/detectors/bench/flush" -o "$TMP/flush"
end=$(date +%s.%N)
cpu1=$(cpu)
if [[ -n "$REC_PID" ]]; then kill -INT "$REC_PID"; wait "$REC_PID" || true; fi
windows=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["windows_closed"])' "$TMP/flush")
python3 - "$LINES" "$BATCH" "$start" "$mid" "$end" "$windows" <<'PY'
import sys
lines, batch, start, mid, end, windows = int(sys.argv[1]), int(sys.argv[2]), *map(float, sys.argv[3:6]), int(sys.argv[6])
print(f"| durable ingest, {lines:,} TSV lines in batches of {batch:,} | {lines / (mid - start) / 1e6:.2f}M lines/s "
      f"({mid - start:.2f} s) | flush of {windows:,} windows: {end - mid:.2f} s | "
      f"end to end {lines / (end - start) / 1e6:.2f}M lines/s |")
PY
# The stored windows as listed (every page of GET …/windows), without `closed_at`: equal
# across binaries that store the same windows, whatever form they store them in.
sum=$(python3 - "$BASE" <<'PY'
import hashlib, re, sys, urllib.parse, urllib.request
base, h, cursor, n = sys.argv[1], hashlib.md5(), None, 0
while True:
    url = f"{base}/v1/detectors/bench/windows?limit=1000"
    if cursor:
        url += "&cursor=" + urllib.parse.quote(cursor)
    text = urllib.request.urlopen(url).read().decode()
    head, tail = '{"windows":[', text.rindex('],"next_cursor":')
    assert text.startswith(head)
    h.update(re.sub(r'"closed_at":"[^"]*"', "", text[len(head):tail]).encode())
    n += text.count('"model_version"')
    m = re.search(r'"next_cursor":"([^"]*)"', text[tail:])
    if not m:
        break
    cursor = m.group(1)
print(f"{h.hexdigest()[:12]} ({n:,} listed)")
PY
)
echo "$(basename "$BIN") batch=$BATCH server-cpu $(awk -v a="$cpu0" -v b="$cpu1" -v t="$(getconf CLK_TCK)" \
    'BEGIN {printf "%.2f", (b - a) / t}')s load $(cut -d' ' -f1 /proc/loadavg) windows-sum $sum"
