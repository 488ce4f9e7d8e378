"""The ``fair`` dispatch policy: the consumer with the fewest unacknowledged messages first.

Among consumers with prefetch credit it picks the least loaded; ties go round-robin. With
prefetch 1 this is the classic fair dispatch: a slow consumer is not handed work it cannot
start.
"""

from __future__ import annotations

from typing import Any

from warrenmq import Consumer, DispatchPolicy, hookimpl


class Fair(DispatchPolicy):
    name = "fair"

    def select(self) -> Consumer | None:
        consumers = self.consumers
        count = len(consumers)
        best: Consumer | None = None
        best_index = 0
        start = self.cursor
        for offset in range(count):
            index = (start + offset) % count
            consumer = consumers[index]
            if consumer.has_credit() and (best is None or consumer.unacked < best.unacked):
                best, best_index = consumer, index
                if consumer.unacked == 0:
                    break
        if best is not None:
            self.cursor = (best_index + 1) % count
        return best


@hookimpl
def warrenmq_register_dispatch_policies(registry: Any) -> None:
    registry.add(Fair)
