"""The ``round-robin`` dispatch policy (RabbitMQ's default): consumers take turns.

The next message goes to the consumer after the one served last, skipping any without
prefetch credit.
"""

from __future__ import annotations

from typing import Any

from warrenmq import Consumer, DispatchPolicy, hookimpl


class RoundRobin(DispatchPolicy):
    name = "round-robin"

    def __init__(self, queue: Any) -> None:
        super().__init__(queue)
        self._next = 0

    def remove(self, consumer: Consumer) -> None:
        index = self.consumers.index(consumer)
        del self.consumers[index]
        if index < self._next:
            self._next -= 1

    def select(self) -> Consumer | None:
        consumers = self.consumers
        count = len(consumers)
        if count == 1:
            only = consumers[0]
            return only if only.has_credit() else None
        start = self._next
        for offset in range(count):
            index = (start + offset) % count
            consumer = consumers[index]
            if consumer.has_credit():
                self._next = (index + 1) % count
                return consumer
        return None


@hookimpl
def warrenmq_register_dispatch_policies(registry: Any) -> None:
    registry.add(RoundRobin)
