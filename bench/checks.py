"""Checks after a run of the priority and dead-letter scenarios, on recorded deliveries.

Headers are content header payloads as ``RecordingConsumer`` keeps them: class id, weight,
body size, property flags, property list.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from pamqp.header import ContentHeader

_FLAGS = struct.Struct(">H")
_FLAGS_AT = 12  # class id (2), weight (2), body size (8)
_PRIORITY = 0x0800
_BEFORE_PRIORITY = 0xF000  # content-type, content-encoding, headers, delivery-mode


def properties(header: bytes) -> Any:
    """The decoded ``Basic.Properties`` of a content header payload."""
    decoded = ContentHeader()
    decoded.unmarshal(header)
    return decoded.properties


def priority(header: bytes) -> int:
    """A message's priority (0 when it has none, as a priority queue treats it)."""
    flags = _FLAGS.unpack_from(header, _FLAGS_AT)[0]
    if not flags & _PRIORITY:
        return 0
    if not flags & _BEFORE_PRIORITY:  # the usual case: priority is the first property
        return header[_FLAGS_AT + 2]
    return properties(header).priority or 0


def priority_order(
    order: Sequence[int], headers: Sequence[bytes], max_priority: int
) -> tuple[int, int]:
    """(misordered, overtaken) over the deliveries of one priority queue, in arrival order.

    misordered: deliveries that came after a later-published message of lower or equal
    priority; a priority queue never does that (FIFO within a priority, higher first).
    overtaken: deliveries that came after any later-published message; with a backlog in the
    queue a working priority queue overtakes many, a FIFO one none.
    """
    levels = max_priority + 1
    latest = [-1] * levels  # latest[p]: highest sequence number delivered with priority <= p
    misordered = overtaken = 0
    for seq, header in zip(order, headers, strict=True):
        p = min(priority(header), max_priority)
        if latest[p] > seq:
            misordered += 1
        if latest[-1] > seq:
            overtaken += 1
        for q in range(p, levels):  # latest[] never decreases with q: stop at the first >= seq
            if latest[q] >= seq:
                break
            latest[q] = seq
    return misordered, overtaken


def x_death_problems(headers: Sequence[bytes], queue: str, reason: str) -> list[str]:
    """Problems with the ``x-death`` header of sampled dead-lettered messages (none: fine).

    Each must say it died once in ``queue`` for ``reason``, as RabbitMQ records it.
    """
    missing = 0
    wrong: list[str] = []
    for header in headers:
        table = properties(header).headers or {}
        deaths = table.get("x-death")
        if not deaths or not isinstance(deaths, list) or not isinstance(deaths[0], dict):
            missing += 1
            continue
        death = deaths[0]
        seen = (death.get("queue"), death.get("reason"), death.get("count"))
        if seen != (queue, reason, 1):
            wrong.append(f"queue={seen[0]!r} reason={seen[1]!r} count={seen[2]!r}")
    problems = []
    if missing:
        problems.append(
            f"x-death header missing on {missing:,} of {len(headers):,} sampled messages"
        )
    if wrong:
        problems.append(
            f"x-death on {len(wrong):,} of {len(headers):,} sampled messages says {wrong[0]}, "
            f"expected queue={queue!r} reason={reason!r} count=1"
        )
    return problems
