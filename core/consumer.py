"""The consumer interface: whatever a queue delivers to (an AMQP consumer, an MQTT session)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .message import Message
    from .queue import Queue


class Consumer(ABC):
    """A sink a protocol session implements. Queues call ``has_credit`` then ``deliver``."""

    #: unique within its channel/session; shown in errors and management
    tag: str
    #: deliveries not yet settled (fair dispatch reads this)
    unacked: int = 0
    #: exclusive consumers keep every other consumer off the queue
    exclusive: bool = False
    #: higher priorities are offered messages first (x-priority); 0 by default
    priority: int = 0

    @abstractmethod
    def has_credit(self) -> bool:
        """May this consumer take one more message now (prefetch, flow, socket backpressure)?"""

    @abstractmethod
    def deliver(self, queue: Queue, message: Message) -> None:
        """Take ``message``; it stays owed to ``queue`` until the session settles it."""

    def cancelled_by_broker(self, queue: Queue) -> None:
        """The queue went away (deleted); tell the client if the protocol can."""
