"""RabbitMQ's direct reply-to: RPC replies straight to a consumer, with no reply queue.

A client consumes the pseudo-queue ``amq.rabbitmq.reply-to`` (no-ack) and publishes requests
with ``reply_to = "amq.rabbitmq.reply-to"``; the broker rewrites that to a name unique to the
channel, and a reply published to the default exchange under that name goes straight to the
channel's reply consumer (the core's ``VirtualHost.publish`` looks reply queues up). Nothing is
declared, so nothing is left behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from warrenmq import Message, Queue
from warrenmq.errors import PreconditionFailed

if TYPE_CHECKING:
    from .channel import Channel

PSEUDO_QUEUE = "amq.rabbitmq.reply-to"


def open_reply_queue(channel: Channel, no_ack: bool) -> Queue:
    """The per-channel pseudo-queue a reply consumer is attached to."""
    if not no_ack:
        raise PreconditionFailed("reply consumer cannot acknowledge")
    if channel.reply_queue is not None:
        raise PreconditionFailed("reply consumer already set")
    queue = channel.reply_queue = channel.vhost.open_reply_queue()
    return queue


def close_reply_queue(channel: Channel) -> None:
    queue = channel.reply_queue
    if queue is None:
        return
    channel.reply_queue = None
    channel.vhost.close_reply_queue(queue)


def rewrite_reply_to(channel: Channel, message: Message) -> None:
    """A request asking for a direct reply: name this channel's reply consumer in reply_to."""
    properties = message.properties
    if properties.reply_to != PSEUDO_QUEUE:
        return
    queue = channel.reply_queue
    if queue is None:
        raise PreconditionFailed("fast reply consumer does not exist")
    properties = properties.copy()
    properties.reply_to = queue.name
    message.with_properties(properties)
