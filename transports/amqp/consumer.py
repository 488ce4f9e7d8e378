"""An AMQP consumer: a ``basic.consume`` on a channel, as the core's ``Consumer``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from warrenmq import Consumer, Message, Queue

from .frames import (
    BASIC_DELIVER_PREFIX,
    FRAME_END_BYTE,
    FRAME_HEAD,
    FRAME_METHOD,
    TAG_REDELIVERED,
    content_frames,
    short_string,
)

if TYPE_CHECKING:
    from .channel import Channel


class AMQPConsumer(Consumer):
    __slots__ = (
        "tag",
        "channel",
        "queue",
        "no_ack",
        "exclusive",
        "priority",
        "prefetch",
        "unacked",
        "_prefix",
        "_prefix_len",
    )

    def __init__(
        self,
        channel: Channel,
        queue: Queue,
        tag: str,
        no_ack: bool,
        exclusive: bool,
        prefetch: int,
        priority: int = 0,
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = priority
        #: per-consumer prefetch_count (0 = unlimited), fixed at consume time as in RabbitMQ
        self.prefetch = prefetch
        self.unacked = 0
        #: basic.deliver's class/method ids and consumer tag, prebuilt once
        self._prefix = BASIC_DELIVER_PREFIX + short_string(tag)
        self._prefix_len = len(self._prefix) + TAG_REDELIVERED.size

    def has_credit(self) -> bool:
        channel = self.channel
        if channel.paused:
            return False
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        limit = channel.global_prefetch
        return not limit or len(channel.unacked) < limit

    def deliver(self, queue: Queue, message: Message) -> None:
        channel = self.channel
        tag = channel.delivery_tag = channel.delivery_tag + 1
        if not self.no_ack:
            channel.unacked[tag] = (message, queue, self)
            self.unacked += 1
        connection = channel.connection
        out = connection._out
        if not out and not connection._receiving:
            connection._wake()
        route = message.route_bytes or message.encoded_route()
        number = channel.number
        out += FRAME_HEAD.pack(FRAME_METHOD, number, self._prefix_len + len(route))
        out += self._prefix
        out += TAG_REDELIVERED.pack(tag, message.redelivered)
        out += route
        out += FRAME_END_BYTE
        content_frames(out, number, message.header, message.body, connection.max_body)

    def cancelled_by_broker(self, queue: Queue) -> None:
        self.channel.consumer_cancelled_by_broker(self)

    def __repr__(self) -> str:
        return f"AMQPConsumer({self.tag!r}, queue={self.queue.name!r})"
