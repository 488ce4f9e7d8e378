"""The ``fair`` dispatch policy: the consumer with the fewest unacknowledged messages first.

Among consumers with prefetch credit it picks the least loaded; ties go round-robin. With
prefetch 1 this is the classic fair dispatch: a slow consumer is not handed work it cannot
start. Consumers of higher ``x-priority`` are served first.
"""

from __future__ import annotations

from typing import Any

from warrenmq import Consumer, DispatchPolicy, hookimpl


def least_loaded(consumers: list[Consumer], start: int) -> tuple[Consumer | None, int]:
    """The consumer with credit and the fewest unacked, scanning from ``start`` for ties."""
    count = len(consumers)
    best: Consumer | None = None
    best_index = start
    for offset in range(count):
        index = (start + offset) % count
        consumer = consumers[index]
        if consumer.has_credit() and (best is None or consumer.unacked < best.unacked):
            best, best_index = consumer, index
            if consumer.unacked == 0:
                break
    if best is None:
        return None, start
    return best, (best_index + 1) % count


class Fair(DispatchPolicy):
    name = "fair"

    def select(self) -> Consumer | None:
        if self.prioritized:
            return self.select_by_priority(least_loaded)
        consumer, self.cursor = least_loaded(self.consumers, self.cursor)
        return consumer


@hookimpl
def warrenmq_register_dispatch_policies(registry: Any) -> None:
    registry.add(Fair)
