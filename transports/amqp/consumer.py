"""An AMQP consumer: a ``basic.consume`` on a channel, as the core's ``SessionConsumer``."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from warrenmq import Message, Queue
from warrenmq.queue import Entry
from warrenmq.session import SessionConsumer

from .frames import (
    BASIC_DELIVER_PREFIX,
    END_AND_HEAD,
    FRAME_BODY,
    FRAME_END,
    FRAME_END_BYTE,
    FRAME_HEADER,
    FRAME_METHOD,
    TAG_REDELIVERED,
    body_frames,
    short_string,
)
from .properties import AMQP_CODEC

if TYPE_CHECKING:
    from .channel import Channel

_pack_end_and_head: Final = END_AND_HEAD.pack


class AMQPConsumer(SessionConsumer):
    __slots__ = ("channel", "_prefix", "_method_size", "_pack_deliver")

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
        #: the method frame's size without the route (exchange and routing key)
        self._method_size = len(self._prefix) + TAG_REDELIVERED.size
        #: packs the frame head, the prefix, the delivery tag and the redelivered bit at once
        self._pack_deliver = struct.Struct(f">BHI{len(self._prefix)}sQB").pack

    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        channel = self.channel
        header = message.encoded
        if header is None or message.codec is not AMQP_CODEC:
            header = message.encoded_for(AMQP_CODEC)
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
        body = message.body
        size = len(body)
        # basic.deliver, then the content frames, in as few appends as the layout allows
        out += self._pack_deliver(
            FRAME_METHOD, number, self._method_size + len(route), self._prefix, tag, redelivered
        )
        out += route
        out += _pack_end_and_head(FRAME_END, FRAME_HEADER, number, len(header))
        out += header
        if size and size <= connection.max_body:  # one body frame: the usual case
            out += _pack_end_and_head(FRAME_END, FRAME_BODY, number, size)
            out += body
            out += FRAME_END_BYTE
        else:
            out += FRAME_END_BYTE
            body_frames(out, number, body, connection.max_body)
        if len(out) > connection.out_limit:
            connection.output_full()

    def cancelled_by_broker(self, queue: Queue) -> None:
        self.channel.consumer_cancelled_by_broker(self)

    def __repr__(self) -> str:
        return f"AMQPConsumer({self.tag!r}, queue={self.queue.name!r})"
