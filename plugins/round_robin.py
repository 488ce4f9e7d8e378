"""The ``round-robin`` dispatch policy (RabbitMQ's default): consumers take turns.

The next message goes to the consumer that has waited longest since its last one. A consumer
that lost its credit leaves the rotation and rejoins at the end when credit returns, as in
RabbitMQ. Every operation is O(1), however many consumers a queue has.
"""

from __future__ import annotations

from typing import Any

from warrenmq import Consumer
from warrenmq.dispatch import TurnOrderPolicy


class RoundRobin(TurnOrderPolicy):
    name = "round-robin"

    def select(self) -> Consumer | None:
        only = self.only
        if only is not None:
            return only
        turns = self.turns
        if not turns:
            return None
        consumer = next(iter(turns))
        turns.move_to_end(consumer)
        return consumer


def warrenmq_register_dispatch_policies(registry: Any) -> None:
    registry.add(RoundRobin)
