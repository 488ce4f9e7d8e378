"""The dispatch-policy interface: which consumer of a queue gets the next message.

A policy sees only consumers; queues ask ``select()`` once per message, so it must be cheap.
Built-in policies (``round-robin``, ``fair``) are plugins like any other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .consumer import Consumer
    from .queue import Queue

#: picks a consumer with credit from ``consumers`` starting at a cursor; returns it (or None)
#: and the cursor for next time
Chooser = Callable[[list["Consumer"], int], tuple["Consumer | None", int]]


class DispatchPolicy(ABC):
    """Chooses among a queue's consumers; one instance per queue."""

    #: the value of the ``x-dispatch`` queue argument that selects this policy
    name: ClassVar[str]
    #: index of the consumer to consider first next time (for policies that rotate)
    cursor: int = 0

    #: consumers do not all have the same priority (``x-priority``); see ``select_by_priority``
    prioritized: bool = False

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.consumers: list[Consumer] = []
        #: consumers by priority, highest first, each group with its own cursor
        self.groups: list[tuple[list[Consumer], list[int]]] = []

    def add(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        if self.prioritized or consumer.priority != self.consumers[0].priority:
            self._regroup()

    def remove(self, consumer: Consumer) -> None:
        """Drop ``consumer``, keeping ``cursor`` on the same next consumer."""
        index = self.consumers.index(consumer)
        del self.consumers[index]
        if index < self.cursor:
            self.cursor -= 1
        if self.cursor >= len(self.consumers):
            self.cursor = 0
        if self.prioritized:
            self._regroup()

    def _regroup(self) -> None:
        priorities = sorted({c.priority for c in self.consumers}, reverse=True)
        self.prioritized = len(priorities) > 1
        self.groups = (
            [([c for c in self.consumers if c.priority == p], [0]) for p in priorities]
            if self.prioritized
            else []
        )

    def select_by_priority(self, choose: Chooser) -> Consumer | None:
        """RabbitMQ's consumer priorities: a lower priority gets a message only when every
        consumer of higher priority lacks credit. ``choose`` applies within one priority."""
        for consumers, cursor in self.groups:
            consumer, cursor[0] = choose(consumers, cursor[0])
            if consumer is not None:
                return consumer
        return None

    @abstractmethod
    def select(self) -> Consumer | None:
        """A consumer with credit for the next message, or None if none can take one."""
