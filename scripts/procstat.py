"""What a running process uses, from /proc: shared by the measuring scripts in this folder."""
import os


def status(pid, key):
    """A /proc/PID/status entry in bytes (VmRSS, VmHWM, ...)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024


def cpu(pid):
    """The CPU seconds (user + system) the process has used."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
