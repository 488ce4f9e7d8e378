"""The ``round-robin`` dispatch policy (RabbitMQ's default): consumers take turns.

The next message goes to the consumer after the one served last, skipping any without
prefetch credit. Consumers of higher ``x-priority`` are served first.
"""

from __future__ import annotations

from typing import Any

from warrenmq import Consumer, DispatchPolicy, hookimpl


def next_with_credit(consumers: list[Consumer], start: int) -> tuple[Consumer | None, int]:
    """The first consumer with credit from ``start`` on, and the index after it."""
    count = len(consumers)
    for offset in range(count):
        index = (start + offset) % count
        consumer = consumers[index]
        if consumer.has_credit():
            return consumer, (index + 1) % count
    return None, start


class RoundRobin(DispatchPolicy):
    name = "round-robin"

    def select(self) -> Consumer | None:
        consumers = self.consumers
        if len(consumers) == 1:
            only = consumers[0]
            return only if only.has_credit() else None
        if self.prioritized:
            return self.select_by_priority(next_with_credit)
        consumer, self.cursor = next_with_credit(consumers, self.cursor)
        return consumer


@hookimpl
def warrenmq_register_dispatch_policies(registry: Any) -> None:
    registry.add(RoundRobin)
