#!/usr/bin/env bash
# Benchmarks the HTTP scoring path end to end (POST /v1/score with CSV, JSON and NDJSON bodies of
# 1,000,000 records) against the Python tutorial's pipeline (pandas read_csv + StandardScaler +
# scikit-learn IsolationForest score_samples/predict) and isotree, on the same CSV, in one run on
# this machine, plus the latency of 720-record JSON batches under 16 concurrent clients (wrk).
# Writes the http section of BENCHMARKS.md. Measurement only: it changes nothing in the service.
#
# Usage: scripts/bench-http.sh      (from anywhere)
# Env:   NS_BENCH_VENV (default /tmp/ns-bench-venv, needs pandas, scikit-learn, isotree: the
#        shared/bench/requirements.txt set), ROWS (default 1000000), RUNS (default 3), PORT (default 18089),
#        WRK_SECONDS (default 20), WRK_CLIENTS (default 16), WRK_RUNS (default 3: latency runs back
#        to back; the table lists each and judges the median p99), KEEP_TMP=1 keeps the data and raw outputs.
# Needs: curl, wrk (apt-get install -y wrk).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${NS_BENCH_VENV:-/tmp/ns-bench-venv}"
ROWS="${ROWS:-1000000}"
RUNS="${RUNS:-3}"
PORT="${PORT:-18089}"
WRK_SECONDS="${WRK_SECONDS:-20}"
WRK_CLIENTS="${WRK_CLIENTS:-16}"
WRK_RUNS="${WRK_RUNS:-3}"
BASE="http://127.0.0.1:$PORT"
PY="$VENV/bin/python"

[[ -x "$PY" ]] || { echo "missing $PY: create the venv as scripts/bench-vs-anchors.sh does" >&2; exit 1; }
"$PY" -c 'import pandas, sklearn, isotree' || { echo "$PY lacks pandas/scikit-learn/isotree" >&2; exit 1; }
command -v wrk >/dev/null || { echo "missing wrk: apt-get install -y wrk" >&2; exit 1; }

TMP="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP_TMP:-0}" != 1 ]]; then rm -rf "$TMP"; else echo "kept $TMP" >&2; fi
}
trap cleanup EXIT

echo "== building netsentinel (release)" >&2
cargo build --release --quiet --bin netsentinel
BIN=target/release/netsentinel

echo "== starting the service on $BASE (data dir $TMP/data)" >&2
mkdir -p "$TMP/data"
"$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$TMP/data" --max-body-bytes $((512 * 1024 * 1024)) \
    --max-records "$ROWS" --request-timeout-secs 600 --log warn >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -sf "$BASE/healthz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/server.log" >&2; exit 1; }
    sleep 0.1
done

echo "== generating $ROWS realistic records (POST /v1/samples, seed 7)" >&2
CSV="$TMP/traffic.csv"
curl -sf -X POST "$BASE/v1/samples" -H 'Content-Type: application/json' -H 'Accept: text/csv' \
    -d "{\"profile\":\"realistic\",\"n_records\":$ROWS,\"seed\":7}" -o "$CSV"
head -n2 "$CSV" >&2
curl -sf -X POST "$BASE/v1/samples" -H 'Content-Type: application/json' -H 'Accept: text/csv' \
    -d '{"profile":"realistic","n_records":720,"seed":8}' -o "$TMP/fit720.csv"

echo "== converting the batch to JSON and NDJSON (not timed)" >&2
"$PY" - "$CSV" "$TMP" <<'PY'
import json, sys
import pandas as pd
src, tmp = sys.argv[1], sys.argv[2]
df = pd.read_csv(src, dtype={"timestamp": str, "attack_kind": str}, keep_default_na=False)
recs = df.to_dict(orient="records")
def dump(rs):
    return [json.dumps(r, separators=(",", ":")) for r in rs]
lines = dump(recs)
with open(f"{tmp}/traffic.json", "w") as f:
    f.write('{"records":[' + ",".join(lines) + "]}")
with open(f"{tmp}/traffic.ndjson", "w") as f:
    f.write("\n".join(lines) + "\n")
n10 = len(lines) // 10
with open(f"{tmp}/traffic_10pct.json", "w") as f:
    f.write('{"records":[' + ",".join(lines[:n10]) + "]}")
with open(f"{tmp}/batch720.json", "w") as f:
    f.write('{"records":[' + ",".join(lines[:720]) + "]}")
PY
# The first 10 % of the CSV, to split fixed from per-record cost.
head -n $((ROWS / 10 + 1)) "$CSV" >"$TMP/traffic_10pct.csv"
ls -l "$TMP"/traffic* "$TMP/batch720.json" >&2

echo "== python: pandas + StandardScaler + scikit-learn IsolationForest, and isotree" >&2
"$PY" - "$CSV" "$TMP/python.json" <<'PY' >&2
import importlib.metadata, json, os, sys, time
import numpy as np, pandas as pd, sklearn, isotree
from sklearn.preprocessing import StandardScaler
from sklearn.ensemble import IsolationForest
FEATURES = ["bytes_sent", "bytes_received", "connections", "active_sessions"]
t = time.perf_counter
r = {}
t0 = t(); df = pd.read_csv(sys.argv[1]); X = df[FEATURES]; t1 = t()
Xs = StandardScaler().fit_transform(X); t2 = t()
clf = IsolationForest(contamination=0.1, random_state=42).fit(Xs); t3 = t()
s = clf.score_samples(Xs); p = clf.predict(Xs); t4 = t()
r.update(rows=len(df), read_s=t1 - t0, scale_s=t2 - t1, fit_s=t3 - t2, score_predict_s=t4 - t3,
         pipeline_s=(t1 - t0) + (t2 - t1) + (t4 - t3), n_anomalies=int((p == -1).sum()))
iso = isotree.IsolationForest(ntrees=100, sample_size=256, ndim=1, nthreads=-1, random_seed=42)
t5 = t(); iso.fit(Xs); t6 = t(); si = iso.predict(Xs); t7 = t()
r.update(isotree_fit_s=t6 - t5, isotree_score_s=t7 - t6,
         versions=dict(python=sys.version.split()[0], pandas=pd.__version__, sklearn=sklearn.__version__,
                       isotree=importlib.metadata.version("isotree"), numpy=np.__version__))
json.dump(r, open(sys.argv[2], "w"))
print(json.dumps(r, indent=1))
PY

echo "== fitting the service once on 720 records (contamination=0.1, seed=42; not timed)" >&2
curl -sf -X POST "$BASE/v1/model/fit?contamination=0.1&seed=42" -H 'Content-Type: text/csv' \
    --data-binary @"$TMP/fit720.csv" -o "$TMP/fit.json"
head -c 300 "$TMP/fit.json" >&2; echo >&2

# time_one NAME FILE CONTENT_TYPE ACCEPT [QUERY]: RUNS timed requests, one line each in $TMP/runs.tsv.
time_one() {
    local name="$1" file="$2" ctype="$3" accept="$4" query="${5:-}"
    # Reset the peak RSS (VmHWM) so each path reports its own (the last batch's chart data,
    # kept for GET /v1/chart.png, stays resident between paths and is included).
    echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null || true
    for i in $(seq 1 "$RUNS"); do
        local out
        out="$(curl -s -o "$TMP/resp_$name" -w '%{http_code} %{time_total}' --max-time 600 \
            -X POST "$BASE/v1/score$query" -H "Content-Type: $ctype" -H "Accept: $accept" \
            --data-binary @"$file" || echo "000 curl-exit-$?")"
        local code="${out%% *}" secs="${out#* }"
        local err=""
        if [[ "$code" != 200 ]]; then err="$(head -c 300 "$TMP/resp_$name" 2>/dev/null | tr '\t\n' '  ')"; fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$i" "$code" "$secs" "$(stat -c %s "$file")" "$err" >>"$TMP/runs.tsv"
        echo "  $name run $i: HTTP $code in $secs s $err" >&2
    done
    printf '%s\t%s\n' "$name" "$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")" >>"$TMP/peaks.tsv"
}

echo "== timing POST /v1/score, $RUNS runs each" >&2
: >"$TMP/runs.tsv"
: >"$TMP/peaks.tsv"
time_one csv_csv "$CSV" text/csv text/csv
time_one json_csv "$TMP/traffic.json" application/json text/csv
time_one ndjson_csv "$TMP/traffic.ndjson" application/x-ndjson text/csv
time_one json_json "$TMP/traffic.json" application/json application/json '?explain=false'
time_one csv_csv_10pct "$TMP/traffic_10pct.csv" text/csv text/csv
time_one json_csv_10pct "$TMP/traffic_10pct.json" application/json text/csv
PEAK_KB="$(awk '{ if ($2 > m) m = $2 } END {print m + 0}' "$TMP/peaks.tsv")"
IDLE_KB="$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")"
echo "  peak RSS (VmHWM) $PEAK_KB kB; RSS now $IDLE_KB kB" >&2

echo "== latency: $WRK_RUNS runs of $WRK_CLIENTS clients x ${WRK_SECONDS}s, 720-record JSON batches" >&2
cat >"$TMP/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("NS_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
LUA
echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null || true
: >"$TMP/wrk.txt"
for i in $(seq "$WRK_RUNS"); do
    NS_BODY="$TMP/batch720.json" wrk -t2 -c"$WRK_CLIENTS" -d"${WRK_SECONDS}s" --timeout 30s --latency \
        -s "$TMP/post.lua" "$BASE/v1/score" >"$TMP/wrk_run.txt" 2>&1 || true
    cat "$TMP/wrk_run.txt" >&2
    { cat "$TMP/wrk_run.txt"; echo "=== end of run"; } >>"$TMP/wrk.txt"
done
PEAK_KB_AFTER_WRK="$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")"
N_ALERTS="$(curl -s "$BASE/metrics" | awk '/^netsentinel_alerts[a-z_]*total/ {s += $2} END {print s + 0}')"

CPU_MODEL="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
export NPROC="$(nproc)" CPU_MODEL PEAK_KB PEAK_KB_AFTER_WRK IDLE_KB ROWS RUNS WRK_SECONDS WRK_CLIENTS WRK_RUNS N_ALERTS
export LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)" RUSTC="$(rustc --version)" DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
export CMD="scripts/bench-http.sh"

"$PY" - "$TMP/python.json" "$TMP/runs.tsv" "$TMP/wrk.txt" BENCHMARKS.md "$TMP/peaks.tsv" <<'PY'
import json, os, re, statistics, sys

py = json.load(open(sys.argv[1]))
runs = {}
for line in open(sys.argv[2]):
    name, i, code, secs, size, err = (line.rstrip("\n").split("\t") + [""])[:6]
    runs.setdefault(name, []).append((code, float(secs) if re.match(r"^[0-9.]+$", secs) else None, int(size), err))
wrk = open(sys.argv[3]).read()
out_path = sys.argv[4]
peaks = dict(line.split() for line in open(sys.argv[5]) if line.strip())
n = py["rows"]
env = os.environ

def med(name):
    rs = runs.get(name, [])
    ok = [s for c, s, _, _ in rs if c == "200" and s is not None]
    if len(ok) != len(rs) or not rs:
        errs = "; ".join(f"HTTP {c} {e}".strip() for c, _, _, e in rs if c != "200")
        return None, errs or "no runs"
    return statistics.median(ok), ""

py_total = py["pipeline_s"]
iso_s = py["isotree_score_s"]
paths = [
    ("csv_csv", "CSV in, `Accept: text/csv`", n),
    ("json_csv", "JSON `{\"records\":[...]}` in, `Accept: text/csv`", n),
    ("ndjson_csv", "NDJSON in, `Accept: text/csv`", n),
    ("json_json", "JSON in, JSON out, `?explain=false` (reference)", n),
    ("csv_csv_10pct", f"CSV in, `Accept: text/csv`, first {n // 10:,} records", n // 10),
    ("json_csv_10pct", f"JSON in, `Accept: text/csv`, first {n // 10:,} records", n // 10),
]
rate = {}
L = []
L.append("<!-- http:begin (generated by scripts/bench-http.sh; edit the script, not this) -->")
L.append("## HTTP: POST /v1/score end to end vs the Python tutorial pipeline")
L.append("")
L.append(f"Command: `{env['CMD']}` (ROWS={env['ROWS']}, RUNS={env['RUNS']}), run {env['DATE']}.")
L.append("")
L.append(f"Machine: {env['NPROC']} CPUs (`nproc`), {env['CPU_MODEL']}; {env['RUSTC']}; Python {py['versions']['python']}, "
         f"pandas {py['versions']['pandas']}, scikit-learn {py['versions']['sklearn']}, isotree {py['versions']['isotree']}, "
         f"numpy {py['versions']['numpy']}. Load average at the end: {env['LOADAVG']} (a shared machine: compare ratios from the same run).")
L.append("")
L.append(f"Data: {n:,} records from the service's own generator (`POST /v1/samples`, profile `realistic`, seed 7): "
         "one CSV (timestamp, bytes_sent, bytes_received, connections, active_sessions, label, attack_kind), converted once "
         "(not timed) to `{\"records\":[...]}` JSON and NDJSON with the same fields. The model uses the 4 traffic features.")
L.append("")
L.append("**Python** (what the tutorial does, at this size; timed in-process with `time.perf_counter`): "
         "`pd.read_csv` + select the 4 features, `StandardScaler().fit_transform`, `IsolationForest(contamination=0.1, "
         "random_state=42).fit`, then `score_samples` + `predict` on all rows. The pipeline total is read + scale + score; "
         "the fit is excluded because the service scores with an already-fitted model.")
L.append("")
L.append("| Python step | s | records/s |")
L.append("|---|---:|---:|")
for k, label in [("read_s", "`read_csv` + select 4 features"), ("scale_s", "`StandardScaler().fit_transform`"),
                 ("fit_s", "`IsolationForest.fit` (excluded from the total)"),
                 ("score_predict_s", "`score_samples` + `predict`"), ("pipeline_s", "**read CSV + scale + score**")]:
    L.append(f"| {label} | {py[k]:.3f} | {n / py[k]:,.0f} |")
L.append(f"| isotree `IsolationForest(ntrees=100, sample_size=256, ndim=1, nthreads=-1)` score on the scaled matrix (fit {py['isotree_fit_s']:.3f} s excluded) | {iso_s:.3f} | {n / iso_s:,.0f} |")
L.append("")
L.append(f"**Service**: release binary, temporary data dir, `--max-body-bytes 536870912 --max-records {env['ROWS']} "
         "--request-timeout-secs 600`, fitted once on 720 generated records (`contamination=0.1&seed=42`, not timed). "
         f"Each path: `curl -s -o /dev/null -w '%{{time_total}}' --data-binary @FILE` over loopback, median of {env['RUNS']} runs; "
         "the time includes sending the body, parsing, scoring, the alert (every batch here raises one), and writing the response.")
L.append("")
L.append("| path | body MiB | median s | records/s | vs Python pipeline | vs isotree score | peak RSS MiB |")
L.append("|---|---:|---:|---:|---:|---:|---:|")
for key, label, count in paths:
    m, err = med(key)
    size = runs.get(key, [(None, None, 0, "")])[0][2] / 2**20
    if m is None:
        L.append(f"| {label} | {size:.0f} | failed: {err} | | | | |")
        continue
    rate[key] = count / m
    ratio_py = (count / m) / (n / py_total)
    ratio_iso = (count / m) / (n / iso_s)
    peak = f"{int(peaks[key]) / 1024:.0f}" if key in peaks else "?"
    L.append(f"| {label} | {size:.0f} | {m:.3f} | {count / m:,.0f} | {ratio_py:.1f}x | {ratio_iso:.1f}x | {peak} |")
L.append("")
L.append(f"Peak RSS of the service (VmHWM from `/proc/PID/status`, reset before each path's runs, so each row shows its own; "
         f"it includes the previous batch's chart data, which the service keeps for `GET /v1/chart.png`): highest "
         f"{int(env['PEAK_KB']) / 1024:.0f} MiB; {int(env['PEAK_KB_AFTER_WRK']) / 1024:.0f} MiB during the latency run below.")
L.append("")

def verdict(ok):
    return "**met**" if ok else "**not met**"
csv_r = rate.get("csv_csv")
json_r = rate.get("json_csv")
py_r = n / py_total
t = []
t.append(f"CSV ≥ 1,000,000 records/s: {verdict(csv_r is not None and csv_r >= 1e6)} ({(csv_r or 0):,.0f})")
t.append(f"CSV ≥ 10x the Python pipeline: {verdict(csv_r is not None and csv_r >= 10 * py_r)} ({(csv_r or 0) / py_r:.1f}x)")
t.append(f"JSON ≥ 300,000 records/s: {verdict(json_r is not None and json_r >= 3e5)} ({(json_r or 0):,.0f}, `Accept: text/csv`)")
L.append("Targets of the throughput issue: " + "; ".join(t) + ".")
L.append("")

def grab(text, pat):
    mm = re.search(pat, text, re.M)
    return mm.group(1) if mm else "?"

def millis(v):
    try:
        if v.endswith("ms"):
            return float(v[:-2])
        if v.endswith("us"):
            return float(v[:-2]) / 1000
        return float(v[:-1]) * 1000
    except ValueError:
        return None

runs = []
for text in [r for r in wrk.split("=== end of run") if r.strip()]:
    runs.append({
        "p50": grab(text, r"^\s+50%\s+(\S+)"), "p90": grab(text, r"^\s+90%\s+(\S+)"),
        "p99": grab(text, r"^\s+99%\s+(\S+)"), "rps": grab(text, r"^Requests/sec:\s+(\S+)"),
        "non2xx": grab(text, r"Non-2xx or 3xx responses:\s+(\d+)"),
        "errors": grab(text, r"^\s+(Socket errors:.*)$"),
    })
L.append(f"**Latency** of 720-record JSON batches (`{{\"records\":[...]}}`, JSON out with explanations of the anomalies, the default), "
         f"{env['WRK_CLIENTS']} concurrent clients, {len(runs)} runs of {env['WRK_SECONDS']} s back to back with "
         f"`wrk -t2 -c{env['WRK_CLIENTS']} --latency` and a POST Lua script (wrk runs on the same 2 CPUs):")
L.append("")
L.append("| run | p50 | p90 | p99 | requests/s | records/s | responses |")
L.append("|---:|---:|---:|---:|---:|---:|---|")
for i, r in enumerate(runs, 1):
    try:
        rec_s = f"{float(r['rps']) * 720:,.0f}"
    except ValueError:
        rec_s = "?"
    ok = "all 2xx" if r["non2xx"] == "?" else f"{r['non2xx']} non-2xx"
    if r["errors"] != "?":
        ok += f"; {r['errors']}"
    L.append(f"| {i} | {r['p50']} | {r['p90']} | {r['p99']} | {r['rps']} | {rec_s} | {ok} |")
L.append("")
L.append(f"Alerts raised during the whole benchmark (from `/metrics`): {env['N_ALERTS']}; each is committed to SQLite "
         "(`synchronous=FULL`, concurrent alerts share a group commit) before its response.")
L.append("")
p99s = sorted(m for m in (millis(r["p99"]) for r in runs) if m is not None)
median = statistics.median(p99s) if p99s else None
L.append(f"Latency target of the throughput issue: p99 < 20 ms with {env['WRK_CLIENTS']} clients: "
         f"{verdict(median is not None and median < 20)} (median of the runs' p99: "
         + (f"{median:.2f}ms" if median is not None else "?")
         + (f"; highest {p99s[-1]:.2f}ms" if p99s else "") + ").")
L.append("<!-- http:end -->")
section = "\n".join(L) + "\n"

old = open(out_path).read()
b, e = old.find("<!-- http:begin"), old.find("<!-- http:end -->")
if b >= 0 and e >= 0:
    new = old[:b] + section + old[e + len("<!-- http:end -->\n"):]
else:
    new = old.rstrip("\n") + "\n\n" + section
open(out_path, "w").write(new)
print(section)
PY
