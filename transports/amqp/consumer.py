"""An AMQP consumer: a ``basic.consume`` on a channel, as the core's ``SessionConsumer``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from warrenmq import Message, Queue
from warrenmq.queue import Entry
from warrenmq.session import SessionConsumer

from .frames import (
    BASIC_DELIVER_PREFIX,
    FRAME_END_BYTE,
    FRAME_HEAD,
    FRAME_METHOD,
    TAG_REDELIVERED,
    content_frames,
    short_string,
)
from .properties import AMQP_CODEC

if TYPE_CHECKING:
    from .channel import Channel

_pack_head = FRAME_HEAD.pack
_pack_tag = TAG_REDELIVERED.pack


class AMQPConsumer(SessionConsumer):
    __slots__ = ("channel", "_prefix", "_prefix_len")

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
        super().__init__(
            channel,
            queue,
            tag,
            acks=not no_ack,
            exclusive=exclusive,
            prefetch=prefetch,
            priority=priority,
        )
        self.channel = channel
        #: basic.deliver's class/method ids and consumer tag, prebuilt once
        self._prefix = BASIC_DELIVER_PREFIX + short_string(tag)
        self._prefix_len = len(self._prefix) + TAG_REDELIVERED.size

    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        channel = self.channel
        # an AMQP-coded message always has ``encoded`` (see Message.with_properties)
        header = message.encoded if message.codec is AMQP_CODEC else message.encoded_for(AMQP_CODEC)
        route = message.route_bytes or channel.encoded_route(message)
        # the session's ``track``, inlined: this runs once per delivered message
        tag = channel.delivery_tag = channel.delivery_tag + 1
        if entry is None:
            redelivered = False
        else:
            redelivered = entry.deliveries > 1
            if self.acks:
                channel.unacked[tag] = (queue, entry, self)
                self.unacked += 1
        connection = channel.connection
        out = connection._out
        if not out and not connection._receiving:
            connection._wake()
        number = channel.number
        out += _pack_head(FRAME_METHOD, number, self._prefix_len + len(route))
        out += self._prefix
        out += _pack_tag(tag, redelivered)
        out += route
        out += FRAME_END_BYTE
        content_frames(out, number, header, message.body, connection.max_body)  # type: ignore[arg-type]
        if len(out) > connection.out_limit:
            connection.output_full()

    def cancelled_by_broker(self, queue: Queue) -> None:
        self.channel.consumer_cancelled_by_broker(self)

    def __repr__(self) -> str:
        return f"AMQPConsumer({self.tag!r}, queue={self.queue.name!r})"
