#!/usr/bin/env bash
# A/B of durable continuous ingest between binaries: bench-ingest.sh's steps (the same detector,
# fit, batches and flush) on the binary given, with the generated log kept between runs
# (/tmp/ingest-ab/data-LINES) and a fresh data directory per run. Prints the ingest and flush
# wall times, the server's task-clock from the first batch to the end of the flush, the load
# average, and a checksum of the stored windows (every column and body but `closed_at`), which
# must be equal across binaries. Measurement only. Run binaries interleaved:
#
#   for i in 1 2; do scripts/ab-ingest.sh /tmp/ns-main; scripts/ab-ingest.sh target/release/netsentinel; done
#
# Env: BATCH (default 100000), LINES (default 1000000), PORT (default 18191), PERF=FILE to also
# `perf record` the server during the batches.
set -euo pipefail
BIN="$(realpath "$1")"; BATCH="${BATCH:-100000}"; LINES="${LINES:-1000000}"; PORT="${PORT:-18191}"
BASE="http://127.0.0.1:$PORT"
D=/tmp/ingest-ab/data-$LINES
if [[ ! -f $D/conn.log ]]; then
  mkdir -p $D
  python3 "$(dirname "$0")/gen-zeek-conn.py" "$LINES" "$D/conn.log" "$D/conn.json.log" >/dev/null
  grep '^#' "$D/conn.log" | grep -v '^#close' > "$D/header"
fi
B=$D/b$BATCH
if [[ ! -d $B ]]; then mkdir -p $B; grep -v '^#' "$D/conn.log" | split -l "$BATCH" - "$B/batch."; fi
TMP=$(mktemp -d)
"$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$TMP/data" --max-records 10000000 >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null; rm -rf $TMP' EXIT
for _ in $(seq 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
curl -sf -X PUT "$BASE/v1/detectors/bench" -H 'Content-Type: application/json' \
    -d '{"source":{"format":"zeek","window":"5m","group_by":"id.orig_h","allowed_lateness":"10m"}}' >/dev/null
curl -sf -X POST "$BASE/v1/detectors/bench/model/fit?n_estimators=100&seed=1" \
    -H 'Content-Type: text/zeek-tsv' --data-binary @"$D/conn.log" >/dev/null
curl -sf -X POST "$BASE/v1/detectors/bench/ingest" -H 'Content-Type: text/zeek-tsv' \
    --data-binary @"$D/header" >/dev/null
sleep 0.3
perf stat -e task-clock -p $SERVER_PID -o $TMP/stat.txt & STAT_PID=$!; if [[ -n "${PERF:-}" ]]; then perf record -F 199 --call-graph dwarf,16000 -o $PERF -p $SERVER_PID 2>/dev/null & REC_PID=$!; fi
sleep 0.3
start=$(date +%s.%N)
for f in "$B"/batch.*; do
    code=$(curl -s -o "$TMP/answer" -w '%{http_code}' -X POST "$BASE/v1/detectors/bench/ingest" \
        -H 'Content-Type: text/zeek-tsv' --data-binary @"$f")
    [[ "$code" == 202 ]] || { echo "ingest answered $code: $(cat "$TMP/answer")" >&2; exit 1; }
done
mid=$(date +%s.%N)
curl -sf -X POST "$BASE/v1/detectors/bench/flush" -o "$TMP/flush"
end=$(date +%s.%N)
kill -INT $STAT_PID ${REC_PID:-}; wait $STAT_PID ${REC_PID:-} || true
sum=$(sqlite3 "$TMP/data/alerts.db" "select start_s, entity, seq, is_anomaly, body from windows order by start_s, entity, seq" | sed -E 's/"closed_at":"[^"]*"//' | md5sum | cut -c1-12)
nw=$(sqlite3 "$TMP/data/alerts.db" "select count(*) from windows")
tc=$(awk '/task-clock/{gsub(",","",$1); print $1}' $TMP/stat.txt)
python3 - "$LINES" "$start" "$mid" "$end" "$tc" "$(basename $BIN)" "$BATCH" "$(cut -d' ' -f1 /proc/loadavg) windows=$nw sum=$sum" <<'PY'
import sys
lines, start, mid, end, tc = int(sys.argv[1]), *map(float, sys.argv[2:6])
print(f"{sys.argv[6]} batch={sys.argv[7]} ingest {mid-start:.2f}s ({lines/(mid-start)/1e6:.2f}M/s) flush {end-mid:.2f}s server-cpu {tc/1000:.2f}s load {sys.argv[8]}")
PY
