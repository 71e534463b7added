#!/usr/bin/env bash
# Slowloris against the release binary: CONNS connections that each send half a request line and
# then nothing (reopened whenever the service closes them), for SECONDS seconds, while /healthz is
# probed every 0.5 s and the process's open descriptors and RSS are sampled every second.
# Prints one summary line per measure (the BENCHMARKS.md table rows). Measurement only.
#
# Usage: scripts/stress-slowloris.sh        (from anywhere; builds the release binary first)
# Env:   CONNS (default 20000), SECONDS_RUN (default 60), PORT (default 18099), WORKERS (default 5:
#        client processes, each holds CONNS/WORKERS sockets, so each stays below its own fd limit),
#        SERVER_ARGS (extra flags for `netsentinel serve`), NS_BIN (a binary to measure instead of
#        building this checkout's, e.g. an older build for comparison), KEEP_TMP=1 keeps the raw samples.
set -euo pipefail

cd "$(dirname "$0")/.."
CONNS="${CONNS:-20000}"
SECONDS_RUN="${SECONDS_RUN:-60}"
PORT="${PORT:-18099}"
WORKERS="${WORKERS:-5}"
BASE="http://127.0.0.1:$PORT"

if [[ -n "${NS_BIN:-}" ]]; then
    BIN="$NS_BIN"
else
    cargo build --release --bin netsentinel >&2
    BIN="target/release/netsentinel"
fi

TMP="$(mktemp -d)"
SERVER_PID=""
CLIENT_PID=""
cleanup() {
    for pid in "$CLIENT_PID" "$SERVER_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"; wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ "${KEEP_TMP:-0}" != 1 ]]; then rm -rf "$TMP"; else echo "kept $TMP" >&2; fi
}
trap cleanup EXIT

# shellcheck disable=SC2086
"$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$TMP/data" ${SERVER_ARGS:-} >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "$BASE/healthz" >/dev/null

# The attackers: WORKERS processes, each keeping CONNS/WORKERS half-sent requests open.
cat >"$TMP/loris.py" <<'EOF'
import asyncio, os, sys, time
port, n, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
opened = closed = failed = 0
async def one(deadline):
    global opened, closed, failed
    while time.monotonic() < deadline:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            failed += 1
            await asyncio.sleep(0.5)
            continue
        opened += 1
        try:
            w.write(b"GET /v1/model HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await w.drain()
            await asyncio.wait_for(r.read(1), timeout=max(0.1, deadline - time.monotonic()))
            closed += 1
        except (asyncio.TimeoutError, OSError):
            pass
        finally:
            w.close()
async def main():
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(one(deadline) for _ in range(n)))
    print(f"opened={opened} closed_by_server={closed} connect_failures={failed}", flush=True)
asyncio.run(main())
EOF
(
    per=$((CONNS / WORKERS))
    for _ in $(seq "$WORKERS"); do
        (ulimit -n $((per + 64)) 2>/dev/null || true; python3 "$TMP/loris.py" "$PORT" "$per" "$SECONDS_RUN") &
    done
    wait
) >"$TMP/clients.txt" 2>&1 &
CLIENT_PID=$!

# Probes and samples while the attack runs.
end=$((SECONDS + SECONDS_RUN))
: >"$TMP/health.txt"; : >"$TMP/proc.txt"
next_sample=0
while (( SECONDS < end )); do
    out="$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 10 "$BASE/healthz" || true)"
    echo "${out:-000 10}" >>"$TMP/health.txt"
    if (( SECONDS >= next_sample )); then
        fds=$(ls "/proc/$SERVER_PID/fd" 2>/dev/null | wc -l)
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
        echo "$fds $rss" >>"$TMP/proc.txt"
        next_sample=$((SECONDS + 1))
    fi
    sleep 0.5
done
wait "$CLIENT_PID" 2>/dev/null || true
CLIENT_PID=""

python3 - "$TMP/health.txt" "$TMP/proc.txt" "$TMP/clients.txt" "$CONNS" "$SECONDS_RUN" <<'EOF'
import sys
health = [l.split() for l in open(sys.argv[1]) if l.strip()]
ok = sorted(float(t) * 1000 for c, t in health if c == "200")
bad = [c for c, t in health if c != "200"]
proc = [tuple(map(int, l.split())) for l in open(sys.argv[2]) if l.strip()]
def pct(xs, p):
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")
print(f"slowloris: {sys.argv[4]} half-request connections (reopened when closed) for {sys.argv[5]} s")
print(f"/healthz: {len(health)} probes, {len(ok)} answered 200, {len(bad)} not ({', '.join(sorted(set(bad))) or '-'}); "
      f"latency ms p50 {pct(ok, 50):.1f}, p99 {pct(ok, 99):.1f}, max {max(ok) if ok else float('nan'):.1f}")
print(f"server: open fds max {max(f for f, _ in proc)}, RSS max {max(r for _, r in proc) / 1024:.0f} MiB, "
      f"RSS at end {proc[-1][1] / 1024:.0f} MiB")
for line in open(sys.argv[3]):
    print("client:", line.strip())
EOF
echo "server log lines mentioning accept errors: $(grep -ci "accept" "$TMP/server.log" || true)"
