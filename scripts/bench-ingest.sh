#!/usr/bin/env bash
# Measures durable continuous ingest (issue #14.6 target: >= 1M lines/s): a generated conn log
# (scripts/gen-zeek-conn.py, LINES lines, ~2,000 hosts) posted to POST /v1/detectors/bench/ingest
# in batches of BATCH lines on the release server (window 5m, group_by id.orig_h, lateness 10m),
# then flushed; prints lines/s of the ingest calls (each committed before its 202) and of the
# flush, and the windows stored. Measurement only.
#
# Usage: scripts/bench-ingest.sh      (from anywhere; builds the release binary unless BUILD=0)
# Env:   LINES (default 1000000), BATCH (default 100000), PORT (default 18091), KEEP_TMP=1.
set -euo pipefail

cd "$(dirname "$0")/.."
LINES="${LINES:-1000000}"
BATCH="${BATCH:-100000}"
PORT="${PORT:-18091}"
BASE="http://127.0.0.1:$PORT"
TMP="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP_TMP:-0}" != 1 ]]; then rm -rf "$TMP"; else echo "kept $TMP" >&2; fi
}
trap cleanup EXIT

[[ "${BUILD:-1}" == 0 ]] || cargo build --release --quiet
python3 scripts/gen-zeek-conn.py "$LINES" "$TMP/conn.log" "$TMP/conn.json.log" >/dev/null
grep '^#' "$TMP/conn.log" | grep -v '^#close' > "$TMP/header"
grep -v '^#' "$TMP/conn.log" | split -l "$BATCH" - "$TMP/batch."

target/release/netsentinel serve --addr "127.0.0.1:$PORT" --data-dir "$TMP/data" \
    --max-records 10000000 >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done

curl -sf -X PUT "$BASE/v1/detectors/bench" -H 'Content-Type: application/json' \
    -d '{"source":{"format":"zeek","window":"5m","group_by":"id.orig_h","allowed_lateness":"10m"}}' >/dev/null
curl -sf -X POST "$BASE/v1/detectors/bench/model/fit?n_estimators=100&seed=1" \
    -H 'Content-Type: text/zeek-tsv' --data-binary @"$TMP/conn.log" >/dev/null
curl -sf -X POST "$BASE/v1/detectors/bench/ingest" -H 'Content-Type: text/zeek-tsv' \
    --data-binary @"$TMP/header" >/dev/null

start=$(date +%s.%N)
for f in "$TMP"/batch.*; do
    code=$(curl -s -o "$TMP/answer" -w '%{http_code}' -X POST "$BASE/v1/detectors/bench/ingest" \
        -H 'Content-Type: text/zeek-tsv' --data-binary @"$f")
    [[ "$code" == 202 ]] || { echo "ingest answered $code: $(cat "$TMP/answer")" >&2; exit 1; }
done
mid=$(date +%s.%N)
curl -sf -X POST "$BASE/v1/detectors/bench/flush" -o "$TMP/flush"
end=$(date +%s.%N)
windows=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["windows_closed"])' "$TMP/flush")
python3 - "$LINES" "$BATCH" "$start" "$mid" "$end" "$windows" <<'PY'
import sys
lines, batch, start, mid, end, windows = int(sys.argv[1]), int(sys.argv[2]), *map(float, sys.argv[3:6]), int(sys.argv[6])
print(f"| durable ingest, {lines:,} TSV lines in batches of {batch:,} | {lines / (mid - start) / 1e6:.2f}M lines/s "
      f"({mid - start:.2f} s) | flush of {windows:,} windows: {end - mid:.2f} s | "
      f"end to end {lines / (end - start) / 1e6:.2f}M lines/s |")
PY
