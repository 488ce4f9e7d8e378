"""The ``round-robin`` dispatch policy (RabbitMQ's default): consumers take turns.

The next message goes to the consumer that has waited longest since its last one. A consumer
that lost its credit leaves the rotation and rejoins at the end when credit returns, as in
RabbitMQ. Every operation is O(1), however many consumers a queue has.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from warrenmq import Consumer, DispatchPolicy, Queue, hookimpl


class RoundRobin(DispatchPolicy):
    name = "round-robin"

    def __init__(self, queue: Queue) -> None:
        super().__init__(queue)
        #: consumers in turn order; the first is next
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
        if not turns:
            return None
        consumer = next(iter(turns))
        turns.move_to_end(consumer)
        return consumer

    def __len__(self) -> int:
        return len(self._turns)


@hookimpl
def warrenmq_register_dispatch_policies(registry: Any) -> None:
    registry.add(RoundRobin)
