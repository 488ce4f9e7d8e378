"""The ``round-robin`` dispatch policy (RabbitMQ's default): consumers take turns.

The next message goes to the consumer after the one served last, skipping any without
prefetch credit.
"""

from __future__ import annotations

from typing import Any

from warrenmq import Consumer, DispatchPolicy, hookimpl


class RoundRobin(DispatchPolicy):
    name = "round-robin"

    def select(self) -> Consumer | None:
        consumers = self.consumers
        count = len(consumers)
        if count == 1:
            only = consumers[0]
            return only if only.has_credit() else None
        start = self.cursor
        for offset in range(count):
            index = (start + offset) % count
            consumer = consumers[index]
            if consumer.has_credit():
                self.cursor = (index + 1) % count
                return consumer
        return None


@hookimpl
def warrenmq_register_dispatch_policies(registry: Any) -> None:
    registry.add(RoundRobin)
