#!/usr/bin/env bash
# A/B helper for the Zeek path (issue #14.6): starts BIN on a fresh data dir, fits the window model
# on LOG (Zeek TSV), then posts LOG N times to POST /v1/score (`Accept: text/csv`), printing per
# post the wall time and the server's CPU seconds (user + system, from /proc/PID/stat), then the
# server's peak RSS. Run two binaries interleaved on a quiet machine to compare them.
# Measurement only: it changes nothing in the service.
#
# Usage: scripts/zeek-post-cpu.sh BIN [LOG] [N] [PORT]
#        (LOG default /work/zeekbench/conn_1000000.log, from scripts/gen-zeek-conn.py; N 3)
#        TYPE=application/x-zeek-json FIT_LOG=conn.log scripts/zeek-post-cpu.sh BIN conn.json.log
#        posts a JSON log, fitting on the TSV one (TYPE defaults to text/zeek-tsv, FIT_LOG to LOG).
set -euo pipefail
BIN=$1
LOG=${2:-/work/zeekbench/conn_1000000.log}
N=${3:-3}
PORT=${4:-18117}
QUERY="window=5m&group_by=id.orig_h"
TYPE=${TYPE:-text/zeek-tsv}
FIT_LOG=${FIT_LOG:-$LOG}
DIR=$(mktemp -d)
"$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$DIR" --max-body-bytes $((1024 * 1024 * 1024)) \
    --max-records 2000000 --request-timeout-secs 900 --log warn >"$DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
curl -sf -X POST "http://127.0.0.1:$PORT/v1/model/fit?$QUERY" -H 'Content-Type: text/zeek-tsv' \
    --data-binary @"$FIT_LOG" -o /dev/null
cpu() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
TICKS=$(getconf CLK_TCK)
for i in $(seq 1 "$N"); do
    c0=$(cpu)
    wall=$(curl -sf -X POST "http://127.0.0.1:$PORT/v1/score?$QUERY" -H "Content-Type: $TYPE" \
        -H 'Accept: text/csv' --data-binary @"$LOG" -o /dev/null -w '%{time_total}')
    sleep 0.2
    c1=$(cpu)
    echo "post $i: wall ${wall} s, server CPU $(awk -v a="$c0" -v b="$c1" -v t="$TICKS" 'BEGIN {printf "%.2f", (b - a) / t}') s"
done
echo "peak RSS: $(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status") kB"
