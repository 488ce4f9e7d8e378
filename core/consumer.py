"""The consumer interface: whatever a queue delivers to (an AMQP consumer, an MQTT session)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from .message import Message
    from .queue import Entry, Queue


@mypyc_attr(allow_interpreted_subclasses=True)
class Consumer(ABC):
    """A sink a protocol session implements. Queues call ``has_credit`` then ``deliver``.

    Credit that comes back (an ack, a larger prefetch, a socket that drained) must be reported
    with ``queue.consumer_ready(consumer)`` when ``parked`` is set: a queue that found the
    consumer without credit stopped offering it messages until then.
    """

    #: unique within its channel/session; shown in errors and management
    tag: str
    #: deliveries not yet settled (fair dispatch reads this)
    unacked: int = 0
    #: exclusive consumers keep every other consumer off the queue
    exclusive: bool = False
    #: higher priorities are offered messages first (x-priority); 0 by default
    priority: int = 0
    #: False for consumers that settle on delivery (AMQP no-ack): the queue forgets the message
    acks: bool = True
    #: set by the queue when it found this consumer without credit; cleared by consumer_ready
    parked: bool = False

    @abstractmethod
    def has_credit(self) -> bool:
        """May this consumer take one more message now (prefetch, flow, socket backpressure)?"""

    def available_credit(self) -> int:
        """How many messages this consumer may take now without ``has_credit`` being asked
        again. A queue whose only consumer this is delivers a run of up to that many, and stops
        early once ``parked`` is set: a consumer that can lose credit during a run (its
        socket backs up) must get itself parked with ``queue.park``. One by default."""
        return 1 if self.has_credit() else 0

    @abstractmethod
    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        """Take ``message``.

        For a consumer that ``acks``, ``entry`` is the queue's record of the delivery: keep it
        and settle it later with ``queue.settle``. ``entry.deliveries > 1`` means redelivered.
        For one that does not, ``entry`` is None for a message never delivered before (or the
        queue's settled record otherwise). If ``deliver`` raises, the queue keeps the message,
        detaches the consumer and calls ``failed``; so raise before recording anything.
        """

    def cancelled_by_broker(self, queue: Queue) -> None:
        """The queue went away (deleted); tell the client if the protocol can."""

    def failed(self, queue: Queue, error: BaseException) -> None:
        """``deliver`` raised; the queue has detached this consumer. Close its session."""
