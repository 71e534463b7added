# RSS and memory budget held by one detector's open windows after one POST …/ingest of LOG:
#   python3 scripts/ingest-peak.py BIN LOG [WINDOW]
# A fresh service on a temporary data dir; the Zeek detector `z` (window WINDOW, default 1m,
# group_by id.orig_h, allowed_lateness 24h), fitted on generated records; LOG posted as
# text/zeek-tsv. Prints the answer, the service's CPU seconds during the call, its RSS after the
# call and its peak (VmHWM) minus the RSS before, and netsentinel_memory_reserved_bytes after it
# (what the book holds of the budget). The stream dedupes by uid: LOG needs one on every line.
# Extra server settings through the environment. Used for BENCHMARKS.md (branch bounds4).
import json, os, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procstat  # noqa: E402
bin_, log = sys.argv[1], sys.argv[2]
window = sys.argv[3] if len(sys.argv) > 3 else "1m"
port = 18293
d = tempfile.mkdtemp()
p = subprocess.Popen([bin_, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", d,
                      "--request-timeout-secs", "900", "--log", "warn"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def rss(key="VmRSS"):
    return procstat.status(p.pid, key)
def cpu():
    return procstat.cpu(p.pid)
def req(method, path, body=None, ctype="application/json"):
    r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                               headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(r, timeout=900) as a:
            return a.status, a.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz"); break
    except Exception:
        time.sleep(0.1)
spec = {"source": {"format": "zeek", "window": window, "group_by": "id.orig_h", "allowed_lateness": "24h"}}
print(req("PUT", "/v1/detectors/z", json.dumps(spec).encode())[0])
print(req("POST", "/v1/detectors/z/model/fit", json.dumps({"generate": {}, "params": {"n_estimators": 20}}).encode())[0])
body = open(log, "rb").read()
time.sleep(1)
before, c0 = rss(), cpu()
st, a = req("POST", "/v1/detectors/z/ingest", body, "text/zeek-tsv")
after, c1 = rss(), cpu()
metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
held = [l for l in metrics.splitlines() if l.startswith("netsentinel_memory_reserved_bytes")]
ans = json.loads(a)
print(f"{os.path.basename(log)} ({len(body) >> 20} MiB): {st} {ans.get('code', '')} opened {ans.get('windows_opened')} "
      f"cpu {c1 - c0:.2f} s; RSS after - before {(after - before) >> 20} MiB; peak {(rss('VmHWM') - before) >> 20} MiB; held {held}")
p.terminate(); p.wait()
