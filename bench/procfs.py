"""Process CPU time and resident memory from /proc (Linux), and finding the process listening on a TCP port."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` (``VmRSS``), in bytes; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def listening_pid(port: int) -> int | None:
    """The pid of the local process with a TCP socket listening on ``port``, if visible."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def scheduled_seconds(pid: int) -> tuple[float, float] | None:
    """(ran, waited for a CPU) in seconds, summed over the live threads of ``pid``, to the
    nanosecond (``/proc/PID/task/*/schedstat``); None where the kernel does not tell."""
    ran = waited = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                fields = (task / "schedstat").read_text().split()
            except FileNotFoundError:
                continue  # the thread ended meanwhile
            ran += int(fields[0])
            waited += int(fields[1])
    except (OSError, ValueError, IndexError):
        return None
    return ran / 1e9, waited / 1e9


def waiting_share(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> float | None:
    """The part of its runnable time a process spent waiting for a CPU between two readings
    of ``scheduled_seconds``: high where other processes held the cores."""
    if before is None or after is None:
        return None
    ran, waited = after[0] - before[0], after[1] - before[1]
    return waited / (ran + waited) if ran + waited > 0 else None
