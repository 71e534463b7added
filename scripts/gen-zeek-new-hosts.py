#!/usr/bin/env python3
"""Writes a Zeek conn log (TSV) whose every line is a connection of a new host in a second of its
own: scored with `window=1s&group_by=id.orig_h`, every line opens a window of a new host, the
worst case for the reader's state (it grows with windows and hosts, not bytes). Used to measure
the memory budget's charge of that state (BENCHMARKS.md, "Zeek state charged to the memory budget").

Usage: python3 scripts/gen-zeek-new-hosts.py LINES OUT.log
"""
import sys


def main() -> None:
    lines, out = int(sys.argv[1]), sys.argv[2]
    with open(out, "w") as f:
        f.write("#separator \\x09\n#path\tconn\n")
        f.write("#fields\tts\tuid\tid.orig_h\tid.resp_h\tid.resp_p\torig_bytes\tresp_bytes\n")
        for i in range(lines):
            host = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            f.write(f"{1_700_000_000 + i}.0\t-\t{host}\t8.8.8.8\t53\t{100 + i % 7}\t{200 + i % 11}\n")


if __name__ == "__main__":
    main()
