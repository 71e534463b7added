#!/usr/bin/env bash
# Abandoned and oversized work against release binaries (issue #15): for each attack a fresh
# service is started, attacked, given SETTLE seconds, and its peak RSS (VmHWM) is printed with
# the answers the attackers saw. A watchdog kills a service whose RSS passes CAP_MIB (shared
# machines), reported as "killed".
#
#   samples  12 × POST /v1/samples {"n_records":1000000}, each connection closed after 50 ms
#   charts   a 1,000,000-row score, then 12 × GET /v1/chart.png 4000×4000 closed after 50 ms
#   readers  120 clients score 200,000 CSV rows with Accept: text/csv and read the answer at 1 KiB/s
#   bodies   three 250 MiB JSON bodies (under the 256 MiB body limit) at once, to /v1/model/fit, /v1/evaluate, /v1/model/fit
#
# Usage: scripts/stress-abandoned.sh [BIN ...]   (no BIN: builds and measures this checkout's)
# Env:   ATTACKS (default "samples charts readers bodies"), ATTACK_SECS (45: an attack still
#        running then is cut, e.g. the slow readers), PORT (18097), SETTLE (5), CAP_MIB
#        (8192), SERVER_ENV (extra environment for the service, e.g.
#        "NETSENTINEL_MEMORY_BUDGET_MIB=2048"; binaries that do not know a variable ignore it).
set -euo pipefail

cd "$(dirname "$0")/.."
PORT="${PORT:-18097}"
SETTLE="${SETTLE:-5}"
CAP_MIB="${CAP_MIB:-8192}"
ATTACKS="${ATTACKS:-samples charts readers bodies}"
BASE="http://127.0.0.1:$PORT"
if [[ $# -eq 0 ]]; then
    cargo build --release --bin netsentinel >&2
    set -- target/release/netsentinel
fi

TMP="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

cat >"$TMP/attack.py" <<'EOF'
import asyncio, json, random, sys, time
port, attack = int(sys.argv[1]), sys.argv[2]
statuses = {}

def note(head):
    s = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/1.1 ") else (head.decode() or "none")
    statuses[s] = statuses.get(s, 0) + 1

async def request(method, path, body=b"", ctype="application/json", accept="application/json",
                  close_after=None, read_rate=None):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nAccept: {accept}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
    try:
        for i in range(0, len(body), 1 << 20):
            w.write(body[i:i + (1 << 20)])
            await w.drain()
        if close_after is not None:
            await asyncio.sleep(close_after)
            note(b"closed")
            return
        head = await r.read(12)
        note(head)
        if read_rate:
            while await r.read(1024):
                await asyncio.sleep(1024 / read_rate)
        else:
            while await r.read(1 << 16):
                pass
    except OSError:
        note(b"reset")
    finally:
        w.close()

def csv(n):
    rnd = random.Random(1)
    rows = ["bytes_sent,bytes_received,connections,active_sessions"]
    rows += [f"{rnd.uniform(1e5,1e6):.1f},{rnd.uniform(1e5,1e6):.1f},{rnd.randint(1,90)},{rnd.randint(1,40)}" for _ in range(n)]
    return ("\n".join(rows) + "\n").encode()

def json_body(size, labels):
    rec = b'{"bytes_sent":523.5,"bytes_received":4287.0,"connections":56,"active_sessions":23%s}' % (b',"label":0' if labels else b"")
    n = size // (len(rec) + 1)
    return b'{"records":[' + b",".join([rec] * n) + b"]}"

async def main():
    fit = json.dumps({"generate": {"n_records": 2000}, "params": {"n_estimators": 50}}).encode()
    await request("POST", "/v1/model/fit", fit)
    if attack == "samples":
        body = json.dumps({"n_records": 1000000}).encode()
        await asyncio.gather(*(request("POST", "/v1/samples", body, close_after=0.05) for _ in range(12)))
    elif attack == "charts":
        await request("POST", "/v1/score?explain=false", csv(1_000_000), ctype="text/csv", accept="text/csv")
        await asyncio.gather(*(request("GET", "/v1/chart.png?width=4000&height=4000", close_after=0.05) for _ in range(12)))
    elif attack == "readers":
        body = csv(200_000)
        await asyncio.gather(*(request("POST", "/v1/score?explain=false", body, ctype="text/csv",
                                       accept="text/csv", read_rate=1024) for _ in range(120)))
    elif attack == "bodies":
        fit_body, eval_body = json_body(250 << 20, False), json_body(250 << 20, True)
        await asyncio.gather(request("POST", "/v1/model/fit", fit_body),
                             request("POST", "/v1/evaluate", eval_body),
                             request("POST", "/v1/model/fit", fit_body))
    print(" ".join(f"{k}×{v}" for k, v in sorted(statuses.items())))

async def bounded():
    try:
        await asyncio.wait_for(main(), timeout=float(sys.argv[3]))
    except asyncio.TimeoutError:
        print(" ".join(f"{k}×{v}" for k, v in sorted(statuses.items())) + " (attack cut at its time limit)")
asyncio.run(bounded())
EOF

hwm() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status" 2>/dev/null || echo "?"; }

for BIN in "$@"; do
    for attack in $ATTACKS; do
        rm -rf "$TMP/data"
        # shellcheck disable=SC2086
        env ${SERVER_ENV:-} "$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$TMP/data" >"$TMP/server.log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 100); do curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
        killed=""
        ( while kill -0 "$SERVER_PID" 2>/dev/null; do
              rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
              if [[ "$rss" -gt "$CAP_MIB" ]]; then kill -9 "$SERVER_PID"; echo killed >"$TMP/killed"; fi
              sleep 0.2
          done ) &
        WATCH=$!
        rm -f "$TMP/killed"
        seen=$(python3 "$TMP/attack.py" "$PORT" "$attack" "${ATTACK_SECS:-45}" 2>&1 | tail -1)
        sleep "$SETTLE"
        peak=$(hwm "$SERVER_PID")
        health=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$BASE/healthz" || true)
        [[ -f "$TMP/killed" ]] && killed=" KILLED over ${CAP_MIB} MiB"
        printf '%-40s %-8s peak_rss_mib=%-6s healthz=%s answers: %s%s\n' "$BIN" "$attack" "$peak" "$health" "$seen" "$killed"
        kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true
        kill "$WATCH" 2>/dev/null || true; wait "$WATCH" 2>/dev/null || true
        SERVER_PID=""
    done
done
