# Peak RSS (VmHWM minus RSS before) of one 252 MiB JSON request (1,000,000 records with a
# 157-byte host each) against a fresh service:
#   python3 scripts/json-body-peak.py BIN score|fit|evaluate [object|array|csv]
# object (default): {"records":[...]}; array: a bare JSON array [...]; csv: the same records as
# CSV (N=700000 records: 128 MiB). N=... sets the record count, PORT=... the port.
# Used for BENCHMARKS.md ("Streamed JSON bodies ..."); port 18231, a temporary data dir.
import json, os, socket, subprocess, sys, tempfile, time, urllib.request
bin_, endpoint = sys.argv[1], sys.argv[2]
shape = sys.argv[3] if len(sys.argv) > 3 else "object"
port = int(os.environ.get("PORT", "18231"))
d = tempfile.mkdtemp()
env = dict(os.environ)
p = subprocess.Popen([bin_, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
def hwm(key="VmHWM"):
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith(key): return int(l.split()[1]) // 1024
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz"); break
    except Exception: time.sleep(0.1)
def req(path, body, ctype="application/json", accept="application/json"):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nAccept: {accept}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
    s.sendall(body)
    out = b""
    while True:
        b = s.recv(1 << 20)
        if not b: break
        if len(out) < 400: out += b[:400]
    s.close()
    return out[:160]
fit = json.dumps({"generate": {"n_records": 2000}, "params": {"n_estimators": 100}}).encode()
req("/v1/model/fit", fit)
n = int(os.environ.get("N", "700000" if shape == "csv" else "1000000"))
host = "h" * 150
recs = []
import random
rnd = random.Random(1)
parts = []
row = '{"bytes_sent":%.1f,"bytes_received":%.1f,"connections":%d,"active_sessions":%d,"label":%d,"host":"%s%07d"}'
if shape == "csv":
    row = '%.1f,%.1f,%d,%d,%d,%s%07d'
    parts.append("bytes_sent,bytes_received,connections,active_sessions,label,host")
for i in range(n):
    parts.append(row % (rnd.uniform(1e5,1e6), rnd.uniform(1e5,1e6), rnd.randint(1,90), rnd.randint(1,40), i % 2, host, i))
if shape == "csv":
    body = ("\n".join(parts) + "\n").encode()
elif shape == "array":
    body = ("[" + ",".join(parts) + "]").encode()
else:
    body = ('{"records":[' + ",".join(parts) + "]}").encode()
ctype = "text/csv" if shape == "csv" else "application/json"
del parts
base = hwm("VmRSS")
t = time.time()
path = {"score": "/v1/score?explain=false", "fit": "/v1/model/fit", "evaluate": "/v1/evaluate"}[endpoint]
head = req(path, body, ctype)
el = time.time() - t
time.sleep(1)
peak = hwm()
mib = len(body) / 2**20
print(f"{endpoint} ({shape}): body {mib:.0f} MiB, rss before {base} MiB, peak {peak} MiB, peak-before {peak-base} MiB = {(peak-base)/mib:.2f}x body, {el:.1f}s, answer {head.split(b' ',2)[1].decode() if head else 'none'}")
p.terminate(); p.wait()
