"""The disk alarm: below a free-space limit on the data directory's filesystem, publishers are
blocked (RabbitMQ's ``disk_free_limit``), so that a backlog of persistent messages cannot fill
the disk under the store.

The check is RabbitMQ's ``rabbit_disk_monitor``: free space as an unprivileged process sees it
(``statvfs``'s available blocks, what ``df`` shows), against a limit in bytes or a multiple of
physical memory, read again sooner the nearer free space is to the limit (assuming the disk
fills at 250 MB/s), at least every ``max_interval`` seconds and at most every 0.1 s.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from .memory import physical_memory

log = logging.getLogger("warrenmq")

#: RabbitMQ's default ``disk_free_limit``: 50 MB
DEFAULT_LIMIT = 50_000_000
#: the fastest the disk is assumed to fill, in bytes a second (RabbitMQ's FAST_RATE)
FAST_RATE = 250_000_000
#: the shortest time between two checks, in seconds (RabbitMQ's minimum check interval)
MIN_INTERVAL = 0.1

_SIZE = re.compile(r"\s*(\d+)\s*(?:([kmgtp])(i?)b?)?\s*", re.IGNORECASE)
_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5}

SIZE_FORMAT = "bytes, or a number with a unit: kB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB"


def parse_size(text: str) -> int:
    """Bytes from ``"50MB"``, ``"1GiB"``, ``"1000"``, as RabbitMQ reads information units since
    3.13: ``k``/``kB`` is 1000, ``Ki``/``KiB`` is 1024 (and so on up to ``P``), any case.
    ``ValueError`` with a message for anything else."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid size {text!r}: expected {SIZE_FORMAT} (50MB, 1GB)")
    number, unit, binary = match.groups()
    if unit is None:
        return int(number)
    return int(number) * (1024 if binary else 1000) ** _POWERS[unit.lower()]


def free_disk_space(path: Path) -> int | None:
    """Bytes free on ``path``'s filesystem for an unprivileged process (what ``df`` shows as
    available); None where there is no ``statvfs``. ``OSError`` if it cannot be read."""
    statvfs = getattr(os, "statvfs", None)
    if statvfs is None:
        return None
    stat = statvfs(path)
    return int(stat.f_bavail * stat.f_frsize)


def limit_bytes(absolute: int, relative: float | None) -> int | None:
    """The limit in bytes: ``relative`` times physical memory if given, else ``absolute``;
    None (no alarm) for 0, or for a relative limit on a machine whose RAM size is unknown."""
    if relative is not None:
        total = physical_memory()
        return int(total * relative) if total and relative > 0 else None
    return absolute or None


def format_size(value: float) -> str:
    """``value`` bytes for a log line: ``"512 kB"``, ``"50 MB"``, ``"84.3 GB"``, ``"1.2 TB"``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    if value >= 1e6:
        return f"{value / 1e6:.0f} MB"
    return f"{value / 1e3:.0f} kB"


class DiskMonitor:
    """Reads free space on ``directory``'s filesystem and raises or clears the alarm through
    ``alarm(active)``, logging each change; ``check`` says when to check again."""

    def __init__(
        self,
        directory: Path,
        limit: int,
        gauge: Callable[[Path], int | None],
        max_interval: float,
        alarm: Callable[[bool], None],
    ) -> None:
        self.directory = directory
        self.limit = limit
        self.gauge = gauge
        self.max_interval = max_interval
        self.alarm = alarm
        #: the last reading, in bytes (None: not read yet, or unreadable)
        self.free: int | None = None
        self.alarmed = False
        #: seconds from the last check to the next
        self.interval = max_interval
        self._failing = False

    def check(self) -> float:
        """Read free space, raise or clear the alarm; set and return ``interval``, the seconds
        until the next check."""
        problem = "not known on this platform"
        try:
            free = self.gauge(self.directory)
        except Exception as exc:  # the directory gone, a faulty gauge: logged, never fatal
            free, problem = None, f"{type(exc).__name__}: {exc}"
        self.free = free
        if free is None:
            if not self._failing:
                self._failing = True
                log.warning(
                    "disk alarm: cannot read the free space of %s (%s); the alarm stays %s",
                    self.directory,
                    problem,
                    "on" if self.alarmed else "off",
                )
            self.interval = self.max_interval
            return self.interval
        if self._failing:
            self._failing = False
            log.info("disk alarm: free space of %s readable again", self.directory)
        low = free < self.limit
        if low and not self.alarmed:
            log.warning(
                "disk alarm: %s free on the filesystem of %s, limit %s; blocking publishers",
                format_size(free),
                self.directory,
                format_size(self.limit),
            )
        elif self.alarmed and not low:
            log.warning(
                "disk alarm cleared: %s free, limit %s", format_size(free), format_size(self.limit)
            )
        if low != self.alarmed:
            self.alarmed = low
            self.alarm(low)
        # statvfs is a cheap call (RabbitMQ runs ``df``, and waits longest while the alarm is
        # on): below the limit check as often as near it, so publishing resumes promptly
        ideal = 2 * (free - self.limit) / FAST_RATE
        self.interval = max(min(MIN_INTERVAL, self.max_interval), min(self.max_interval, ideal))
        return self.interval
