"""The memory alarm: above a resident-memory limit, publishers are blocked (RabbitMQ's
``vm_memory_high_watermark``), so a flood of messages cannot take the machine down.

Blocked connections stop being read, and AMQP clients that asked for it are told with
``connection.blocked``; consumers keep draining, and publishing resumes below the limit.
"""

from __future__ import annotations

import os
from pathlib import Path

_STATM = Path("/proc/self/statm")


def physical_memory() -> int | None:
    """Bytes of RAM on this machine, if the platform says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def resident_memory() -> int | None:
    """This process's resident set size in bytes (Linux), else None."""
    try:
        fields = _STATM.read_text().split()
    except OSError:
        return None
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def default_limit(fraction: float) -> int | None:
    """``fraction`` of RAM in bytes; None (no alarm) for 0 or an unknown RAM size."""
    total = physical_memory()
    return max(1, int(total * fraction)) if total and fraction > 0 else None
