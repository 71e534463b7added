#!/usr/bin/env bash
# Benchmarks the Zeek path (issue #14.6): a generated 1,000,000-line conn log (TSV and JSON, ~2,000
# hosts, one day) scored with POST /v1/score?window=5m&group_by=id.orig_h on the release server
# (`Accept: text/csv`; lines/s, best of RUNS, and the server's peak RSS per body format, each on a
# fresh server), the pandas pipeline on the same log in the same run (read_csv + groupby
# aggregation + StandardScaler + scikit-learn IsolationForest score_samples), and the engine alone (examples/bench_zeek.rs: the
# stateless reader and the continuous-ingest window book). Prints a markdown section for
# BENCHMARKS.md. Measurement only: it changes nothing in the service.
#
# Usage: scripts/bench-zeek.sh      (from anywhere)
# Env:   NS_BENCH_VENV (default /tmp/ns-bench-venv, the shared/bench/requirements.txt set, as
#        scripts/bench-vs-anchors.sh makes it), LINES (default 1000000), RUNS (default 3),
#        PORT (default 18090), ZEEK_DIR (reuse generated logs kept there), BUILD=0 (use the release
#        binaries already built), KEEP_TMP=1.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${NS_BENCH_VENV:-/tmp/ns-bench-venv}"
LINES="${LINES:-1000000}"
RUNS="${RUNS:-3}"
PORT="${PORT:-18090}"
BASE="http://127.0.0.1:$PORT"
PY="$VENV/bin/python"
QUERY="window=5m&group_by=id.orig_h"

[[ -x "$PY" ]] || { echo "missing $PY: create the venv as scripts/bench-vs-anchors.sh does" >&2; exit 1; }
"$PY" -c 'import pandas, sklearn' || { echo "$PY lacks pandas/scikit-learn" >&2; exit 1; }

TMP="$(mktemp -d)"
SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() {
    stop_server
    if [[ "${KEEP_TMP:-0}" != 1 ]]; then rm -rf "$TMP"; else echo "kept $TMP" >&2; fi
}
trap cleanup EXIT

DIR="${ZEEK_DIR:-$TMP}"
TSV="$DIR/conn_${LINES}.log"
JSON="$DIR/conn_${LINES}.json.log"
if [[ ! -s "$TSV" || ! -s "$JSON" ]]; then
    echo "== generating $LINES conn lines (scripts/gen-zeek-conn.py, seed 7)" >&2
    python3 scripts/gen-zeek-conn.py "$LINES" "$TSV" "$JSON" --hosts 2000 --seed 7
fi
TSV_BYTES=$(stat -L -c %s "$TSV")
JSON_BYTES=$(stat -L -c %s "$JSON")

if [[ "${BUILD:-1}" != 0 ]]; then
    echo "== building netsentinel and bench_zeek (release)" >&2
    cargo build --release --quiet --bin netsentinel --example bench_zeek
fi
BIN=target/release/netsentinel
mkdir -p "$TMP/data"

start_server() {
    "$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$TMP/data" --max-body-bytes $((1024 * 1024 * 1024)) \
        --max-records 2000000 --request-timeout-secs 900 --log warn >>"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        curl -sf "$BASE/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/server.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "the server did not start" >&2; exit 1
}

echo "== fitting the window model on the TSV log (not timed)" >&2
start_server
curl -sf -X POST "$BASE/v1/model/fit?$QUERY" -H 'Content-Type: text/zeek-tsv' \
    --data-binary @"$TSV" -o "$TMP/fit.json"
stop_server

# Best of RUNS posts of one body on a fresh server; prints "seconds windows peak_rss_kib".
score_runs() {
    local file=$1 type=$2 best="" windows=""
    start_server
    for _ in $(seq 1 "$RUNS"); do
        local t
        # One CSV row per window record (index,score,is_anomaly,severity), as bench-http.sh's
        # main rows: the time is the Zeek path and the scoring, not writing 400k explanations.
        t=$(curl -sf -X POST "$BASE/v1/score?$QUERY" -H "Content-Type: $type" -H 'Accept: text/csv' \
            --data-binary @"$file" -o "$TMP/score.csv" -w '%{time_total}')
        best=$(python3 -c "print(min(float('$t'), float('${best:-inf}')))")
    done
    windows=$(($(wc -l < "$TMP/score.csv") - 1))
    local hwm
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
    stop_server
    echo "$best $windows $hwm"
}

echo "== POST /v1/score, Zeek TSV, best of $RUNS" >&2
read -r TSV_S TSV_WINDOWS TSV_HWM < <(score_runs "$TSV" text/zeek-tsv)
echo "== POST /v1/score, Zeek JSON, best of $RUNS" >&2
read -r JSON_S JSON_WINDOWS JSON_HWM < <(score_runs "$JSON" application/x-zeek-json)

echo "== pandas pipeline on the TSV log, best of $RUNS" >&2
PANDAS_S=$("$PY" - "$TSV" "$RUNS" <<'PY'
import sys, time
import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.preprocessing import StandardScaler

path, runs = sys.argv[1], int(sys.argv[2])
with open(path) as f:
    names = next(l for l in f if l.startswith("#fields")).rstrip("\n").split("\t")[1:]

def windows():
    df = pd.read_csv(path, sep="\t", comment="#", names=names, na_values=["-", "(empty)"],
                     usecols=["ts", "id.orig_h", "id.resp_h", "id.resp_p", "orig_bytes", "resp_bytes"],
                     dtype={"id.orig_h": str, "id.resp_h": str})
    df["window"] = (df["ts"] // 300).astype("int64") * 300
    df["session"] = df["id.orig_h"] + "|" + df["id.resp_h"] + "|" + df["id.resp_p"].astype(str)
    g = df.groupby(["window", "id.orig_h"])
    agg = pd.DataFrame({
        "bytes_sent": g["orig_bytes"].sum(),
        "bytes_received": g["resp_bytes"].sum(),
        "connections": g.size(),
        "active_sessions": g["session"].nunique(),
    })
    return agg

X = windows().to_numpy(dtype=float)
scaler = StandardScaler().fit(X)
forest = IsolationForest(n_estimators=100, random_state=0).fit(scaler.transform(X))
best = float("inf")
for _ in range(runs):
    t = time.perf_counter()
    agg = windows()
    Xs = StandardScaler().fit(agg.to_numpy(dtype=float)).transform(agg.to_numpy(dtype=float))
    scores = forest.score_samples(Xs)
    best = min(best, time.perf_counter() - t)
print(best)
PY
)

echo "== the engine alone (bench_zeek), best of $RUNS" >&2
ENGINE_TSV=$(target/release/examples/bench_zeek "$TSV" tsv read "$RUNS")
ENGINE_JSON=$(target/release/examples/bench_zeek "$JSON" json read "$RUNS")
BOOK_TSV=$(target/release/examples/bench_zeek "$TSV" tsv book "$RUNS" 10000)
BOOK_JSON=$(target/release/examples/bench_zeek "$JSON" json book "$RUNS" 10000)
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$LINES" "$TSV_BYTES" "$JSON_BYTES" "$TSV_S" "$TSV_WINDOWS" "$TSV_HWM" "$JSON_S" "$JSON_WINDOWS" \
    "$JSON_HWM" "$PANDAS_S" "$ENGINE_TSV" "$ENGINE_JSON" "$BOOK_TSV" "$BOOK_JSON" "$LOAD" "$RUNS" <<'PY'
import json, sys
(lines, tsv_b, json_b, tsv_s, tsv_w, tsv_hwm, json_s, json_w, json_hwm, pandas_s,
 e_tsv, e_json, b_tsv, b_json, load, runs) = sys.argv[1:]
lines, tsv_b, json_b = int(lines), int(tsv_b), int(json_b)
tsv_s, json_s, pandas_s = float(tsv_s), float(json_s), float(pandas_s)
tsv_hwm, json_hwm = int(tsv_hwm) * 1024, int(json_hwm) * 1024
e_tsv, e_json, b_tsv, b_json = (json.loads(x) for x in (e_tsv, e_json, b_tsv, b_json))
mb = lambda b: f"{b / 1e6:.0f} MB"
print(f"""| measure ({lines:,} conn lines, ~2,000 hosts, `{'window=5m&group_by=id.orig_h'}`, best of {runs}) | seconds | lines/s | vs pandas | peak RSS (vs body) |
|---|---|---|---|---|
| `POST /v1/score`, Zeek TSV ({mb(tsv_b)}, {tsv_w} windows) | {tsv_s:.2f} | {lines / tsv_s / 1e6:.2f}M | {pandas_s / tsv_s:.1f}× | {mb(tsv_hwm)} ({tsv_hwm / tsv_b:.2f}×) |
| `POST /v1/score`, Zeek JSON ({mb(json_b)}, {json_w} windows) | {json_s:.2f} | {lines / json_s / 1e6:.2f}M | {pandas_s / json_s:.1f}× | {mb(json_hwm)} ({json_hwm / json_b:.2f}×) |
| pandas pipeline on the TSV (read_csv + groupby + StandardScaler + IsolationForest score) | {pandas_s:.2f} | {lines / pandas_s / 1e6:.2f}M | 1.0× | |
| engine alone: stateless reader, TSV | {e_tsv['seconds']:.2f} | {e_tsv['lines_per_sec'] / 1e6:.2f}M | | |
| engine alone: stateless reader, JSON | {e_json['seconds']:.2f} | {e_json['lines_per_sec'] / 1e6:.2f}M | | |
| engine alone: window book (ingest in 10,000-line calls, dedupe by uid, 2m lateness), TSV | {b_tsv['seconds']:.2f} | {b_tsv['lines_per_sec'] / 1e6:.2f}M | | |
| engine alone: window book, JSON | {b_json['seconds']:.2f} | {b_json['lines_per_sec'] / 1e6:.2f}M | | |

Load average during the run: {load} (2 cores).""")
PY
