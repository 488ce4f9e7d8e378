"""The ``fair`` dispatch policy: the consumer with the fewest unacknowledged messages first.

Among consumers with credit it picks the least loaded; ties go to the one that waited longest.
With prefetch 1 this is the classic fair dispatch: a busy consumer has no credit, so it is not
even considered, and the choice is O(1). With larger prefetch the choice scans the consumers
that have credit, stopping at the first idle one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from warrenmq import Consumer, DispatchPolicy, Queue, hookimpl


class Fair(DispatchPolicy):
    name = "fair"

    def __init__(self, queue: Queue) -> None:
        super().__init__(queue)
        #: consumers in turn order (for ties); the first waited longest
        self._turns: OrderedDict[Consumer, None] = OrderedDict()
        #: the consumer when there is exactly one (the usual case, answered at once)
        self._only: Consumer | None = None

    def add(self, consumer: Consumer) -> None:
        self._turns[consumer] = None
        self._only = consumer if len(self._turns) == 1 else None

    def remove(self, consumer: Consumer) -> None:
        turns = self._turns
        turns.pop(consumer, None)
        self._only = next(iter(turns)) if len(turns) == 1 else None

    def select(self) -> Consumer | None:
        only = self._only
        if only is not None:
            return only
        turns = self._turns
        best: Consumer | None = None
        for consumer in turns:
            if best is None or consumer.unacked < best.unacked:
                best = consumer
                if not consumer.unacked:
                    break
        if best is not None and len(turns) > 1:
            turns.move_to_end(best)
        return best

    def __len__(self) -> int:
        return len(self._turns)


@hookimpl
def warrenmq_register_dispatch_policies(registry: Any) -> None:
    registry.add(Fair)
