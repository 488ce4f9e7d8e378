"""The dispatch-policy interface: which consumer of a queue gets the next message.

A policy sees only consumers that can take a message now. The queue adds a consumer when it
attaches or gets credit back, and removes it when it leaves or is found without credit (the
queue checks ``has_credit`` on the consumer ``select`` returns). So ``select`` never scans
consumers that cannot take a message, and its cost does not grow with how many are waiting.

Consumer priorities (``x-priority``) are the queue's business: it keeps one policy instance per
priority and asks the highest first, so a policy never sees two priorities at once.
Built-in policies (``round-robin``, ``fair``) are plugins like any other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import TYPE_CHECKING, ClassVar

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from .consumer import Consumer
    from .queue import Queue


@mypyc_attr(allow_interpreted_subclasses=True)
class DispatchPolicy(ABC):
    """Chooses among some of a queue's consumers; one instance per queue and priority."""

    #: the value of the ``x-dispatch`` queue argument that selects this policy
    name: ClassVar[str]
    #: the consumer when it is the only one added, else None (then the queue may deliver it
    #: a run of messages without asking ``select`` each time); a policy may leave it None
    only: Consumer | None = None

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    @abstractmethod
    def add(self, consumer: Consumer) -> None:
        """``consumer`` may be offered messages (it attached, or has credit again)."""

    @abstractmethod
    def remove(self, consumer: Consumer) -> None:
        """Stop offering ``consumer`` messages. Called per delivery that exhausts a
        consumer's credit, so it must be cheap (O(1) or O(log n)), not a scan."""

    @abstractmethod
    def select(self) -> Consumer | None:
        """The consumer for the next message among those added, or None if none is.

        Called once per delivered message. The queue delivers to the consumer if it has
        credit, else removes it and asks again.
        """

    @abstractmethod
    def __len__(self) -> int:
        """How many consumers are added."""


@mypyc_attr(allow_interpreted_subclasses=True)
class TurnOrderPolicy(DispatchPolicy):
    """A policy that keeps its consumers in turn order: the first waited longest.

    ``add``, ``remove`` and ``len`` are O(1); ``only`` is the consumer when there is exactly
    one (the usual case, which ``select`` can answer at once). Subclasses choose in ``select``
    and call ``served`` to send the chosen consumer to the back of the line.
    """

    def __init__(self, queue: Queue) -> None:
        super().__init__(queue)
        self.turns: OrderedDict[Consumer, None] = OrderedDict()
        self.only: Consumer | None = None

    def add(self, consumer: Consumer) -> None:
        self.turns[consumer] = None
        self.only = consumer if len(self.turns) == 1 else None

    def remove(self, consumer: Consumer) -> None:
        turns = self.turns
        turns.pop(consumer, None)
        self.only = next(iter(turns)) if len(turns) == 1 else None

    def served(self, consumer: Consumer) -> None:
        self.turns.move_to_end(consumer)

    def __len__(self) -> int:
        return len(self.turns)
