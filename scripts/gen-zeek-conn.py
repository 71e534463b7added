#!/usr/bin/env python3
"""Writes a synthetic Zeek conn log (the ASCII writer's TSV and the JSON writer's lines, the same
connections in both) for benchmarks: N lines over one day, ~HOSTS originating hosts talking to a
pool of servers, realistic field set and widths. Deterministic for a given seed.

Usage: gen-zeek-conn.py LINES OUT_TSV OUT_JSON [--hosts 2000] [--seed 7]
"""
import argparse
import json
import random

FIELDS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
          "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
          "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
          "tunnel_parents"]
TYPES = ["time", "string", "addr", "port", "addr", "port", "enum", "string", "interval", "count",
         "count", "string", "bool", "bool", "count", "string", "count", "count", "count", "count",
         "set[string]"]
SERVICES = [(53, "udp", "dns"), (443, "tcp", "ssl"), (80, "tcp", "http"), (22, "tcp", "ssh"),
            (123, "udp", "ntp"), (8080, "tcp", "http"), (25, "tcp", "smtp")]
UID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lines", type=int)
    ap.add_argument("out_tsv")
    ap.add_argument("out_json")
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    clients = [f"10.{1 + i // 250}.{i % 250}.{rng.randrange(1, 255)}" for i in range(a.hosts)]
    servers = [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
               for _ in range(500)]
    start = 1_700_000_000.0
    step = 86_400.0 / a.lines
    with open(a.out_tsv, "w") as tsv, open(a.out_json, "w") as js:
        tsv.write("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
                  "#path\tconn\n#open\t2023-11-14-22-13-20\n")
        tsv.write("#fields\t" + "\t".join(FIELDS) + "\n#types\t" + "\t".join(TYPES) + "\n")
        for i in range(a.lines):
            # Zeek writes a connection when it ends, so ts (its start) is not quite in order.
            ts = start + i * step - rng.random() * 5.0
            uid = "C" + "".join(rng.choice(UID_CHARS) for _ in range(17))
            orig = clients[min(int(rng.paretovariate(1.2)) - 1, a.hosts - 1) if rng.random() < 0.3
                           else rng.randrange(a.hosts)]
            port, proto, service = rng.choice(SERVICES)
            resp = rng.choice(servers)
            established = rng.random() < 0.9
            duration = rng.expovariate(1 / 2.0) if established else None
            ob = int(rng.lognormvariate(6, 1.5)) if established else None
            rb = int(rng.lognormvariate(8, 2)) if established else None
            opk = rng.randrange(1, 40)
            rpk = rng.randrange(0, 60)
            state = "SF" if established else rng.choice(["S0", "REJ", "OTH"])
            history = "ShADadfF" if established else "S"
            row = {
                "ts": round(ts, 6), "uid": uid, "id.orig_h": orig, "id.orig_p": rng.randrange(1024, 65536),
                "id.resp_h": resp, "id.resp_p": port, "proto": proto,
                "service": service if established else None,
                "duration": None if duration is None else round(duration, 6),
                "orig_bytes": ob, "resp_bytes": rb, "conn_state": state, "local_orig": True,
                "local_resp": False, "missed_bytes": 0, "history": history, "orig_pkts": opk,
                "orig_ip_bytes": (ob or 0) + 40 * opk, "resp_pkts": rpk,
                "resp_ip_bytes": (rb or 0) + 40 * rpk, "tunnel_parents": None,
            }

            def cell(k, v):
                if v is None:
                    return "-"
                if isinstance(v, bool):
                    return "T" if v else "F"
                if k == "ts":
                    return f"{v:.6f}"
                if k == "duration":
                    return f"{v:.6f}"
                return str(v)
            tsv.write("\t".join(cell(k, row[k]) for k in FIELDS) + "\n")
            js.write(json.dumps({k: v for k, v in row.items() if v is not None},
                                separators=(",", ":")) + "\n")
        tsv.write("#close\t2023-11-15-22-13-20\n")


if __name__ == "__main__":
    main()
