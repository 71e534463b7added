# Peak RSS and peak memory reserved of one Zeek conn-log score against a fresh service:
#   python3 scripts/zeek-body-peak.py BIN LOG [QUERY]
# QUERY defaults to window=1s&group_by=id.orig_h. Prints the answer's status line (and problem
# code), the request's CPU seconds (the service's user+sys during it), its peak RSS (VmHWM minus
# RSS before the request) and the most `netsentinel_memory_reserved_bytes` showed while it ran
# (polled every 20 ms), both also as multiples of the body. Extra server settings through the
# environment (NETSENTINEL_REQUEST_MEMORY_BUDGET_MIB=...). PORT=... sets the port (18237).
# Used for BENCHMARKS.md ("Zeek state charged to the memory budget"); a temporary data dir.
import json, os, socket, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procstat  # noqa: E402

bin_, log = sys.argv[1], sys.argv[2]
query = sys.argv[3] if len(sys.argv) > 3 else "window=1s&group_by=id.orig_h"
port = int(os.environ.get("PORT", "18237"))
d = tempfile.mkdtemp()
p = subprocess.Popen(
    [bin_, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", d, "--max-records", "2000000",
     "--request-timeout-secs", "900", "--log", "warn"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def status(key):
    return procstat.status(p.pid, key)


def cpu():
    return procstat.cpu(p.pid)


for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz")
        break
    except Exception:
        time.sleep(0.1)


def req(path, body, ctype):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nAccept: text/csv\r\n"
              f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
    try:
        s.sendall(body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # answered (and closed) before the whole body was read
    out = b""
    while True:
        try:
            b = s.recv(1 << 20)
        except ConnectionResetError:
            break
        if not b:
            break
        if len(out) < 4096:
            out += b[:4096]
    s.close()
    return out


req("/v1/model/fit", json.dumps({"generate": {"n_records": 2000}, "params": {"n_estimators": 100}}).encode(),
    "application/json")
body = open(log, "rb").read()
peak_reserved = 0
done = False


def poll():
    global peak_reserved
    while not done:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            for l in text.splitlines():
                if l.startswith("netsentinel_memory_reserved_bytes "):
                    peak_reserved = max(peak_reserved, float(l.split()[1]))
        except Exception:
            pass
        time.sleep(0.02)


base, c0 = status("VmRSS"), cpu()
t = threading.Thread(target=poll)
t.start()
answer = req(f"/v1/score?{query}", body, "text/zeek-tsv")
done = True
t.join()
c1 = cpu()
time.sleep(0.5)
peak = status("VmHWM") - base
after = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
left = [l for l in after.splitlines() if l.startswith("netsentinel_memory_reserved_bytes ")]
p.terminate()
p.wait()
head = answer.split(b"\r\n", 1)[0].decode()
code = ""
if b"problem+json" in answer:
    try:
        code = json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"]
    except Exception:
        pass
mb = 1024 * 1024
print(f"{os.path.basename(log)} ({len(body) / mb:.0f} MiB) ?{query}: {head} {code}".rstrip())
print(f"  cpu {c1 - c0:.2f} s; peak RSS +{peak / mb:.0f} MiB ({peak / len(body):.1f}x body); "
      f"peak reserved {peak_reserved / mb:.0f} MiB ({peak_reserved / len(body):.1f}x body); after: {left}")
