"""The dispatch-policy interface: which consumer of a queue gets the next message.

A policy sees only consumers; queues ask ``select()`` once per message, so it must be cheap.
Built-in policies (``round-robin``, ``fair``) are plugins like any other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .consumer import Consumer
    from .queue import Queue


class DispatchPolicy(ABC):
    """Chooses among a queue's consumers; one instance per queue."""

    #: the value of the ``x-dispatch`` queue argument that selects this policy
    name: ClassVar[str]
    #: index of the consumer to consider first next time (for policies that rotate)
    cursor: int = 0

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.consumers: list[Consumer] = []

    def add(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)

    def remove(self, consumer: Consumer) -> None:
        """Drop ``consumer``, keeping ``cursor`` on the same next consumer."""
        index = self.consumers.index(consumer)
        del self.consumers[index]
        if index < self.cursor:
            self.cursor -= 1
        if self.cursor >= len(self.consumers):
            self.cursor = 0

    @abstractmethod
    def select(self) -> Consumer | None:
        """A consumer with credit for the next message, or None if none can take one."""
