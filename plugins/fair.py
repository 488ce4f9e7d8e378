"""The ``fair`` dispatch policy: the consumer with the fewest unacknowledged messages first.

Among consumers with credit it picks the least loaded; ties go to the one that waited longest.
With prefetch 1 this is the classic fair dispatch: a busy consumer has no credit, so it is not
even considered, and the choice is O(1). With larger prefetch the choice scans the consumers
that have credit, stopping at the first idle one.
"""

from __future__ import annotations

from typing import Any

from warrenmq import Consumer, hookimpl
from warrenmq.dispatch import TurnOrderPolicy


class Fair(TurnOrderPolicy):
    name = "fair"

    def select(self) -> Consumer | None:
        only = self.only
        if only is not None:
            return only
        best: Consumer | None = None
        for consumer in self.turns:
            if best is None or consumer.unacked < best.unacked:
                best = consumer
                if not consumer.unacked:
                    break
        if best is not None:
            self.served(best)
        return best


@hookimpl
def warrenmq_register_dispatch_policies(registry: Any) -> None:
    registry.add(Fair)
