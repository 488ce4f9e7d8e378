"""RabbitMQ's direct reply-to: RPC replies straight to a consumer, with no reply queue.

A client consumes the pseudo-queue ``amq.rabbitmq.reply-to`` (no-ack) and publishes requests
with ``reply_to = "amq.rabbitmq.reply-to"``; the broker rewrites that to a name unique to the
channel, and a reply published to the default exchange under that name goes straight to the
channel's reply consumer. Nothing is declared, so nothing is left behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pamqp.header import ContentHeader

from warrenmq import Message, Queue
from warrenmq.errors import PreconditionFailed
from warrenmq.vhost import VirtualHost, server_generated_name

if TYPE_CHECKING:
    from .channel import Channel

PSEUDO_QUEUE = "amq.rabbitmq.reply-to"
PREFIX = PSEUDO_QUEUE + "."
_EXTENSION = "amqp.direct-reply-to"


def _registry(vhost: VirtualHost) -> dict[str, Queue]:
    return vhost.extensions.setdefault(_EXTENSION, {})


def open_reply_queue(channel: Channel, no_ack: bool) -> Queue:
    """The per-channel pseudo-queue a reply consumer is attached to."""
    if not no_ack:
        raise PreconditionFailed("reply consumer cannot acknowledge")
    if channel.reply_queue is not None:
        raise PreconditionFailed("reply consumer already set")
    vhost = channel.vhost
    name = server_generated_name(PREFIX)
    policy = vhost.broker.dispatch_policies[vhost.broker.settings.default_dispatch]
    queue = Queue(vhost, name, policy, auto_delete=False)
    _registry(vhost)[name] = queue
    channel.reply_queue = queue
    return queue


def close_reply_queue(channel: Channel) -> None:
    queue = channel.reply_queue
    if queue is None:
        return
    channel.reply_queue = None
    queue.deleted = True
    queue.ready.clear()
    _registry(channel.vhost).pop(queue.name, None)


def reply_destination(vhost: VirtualHost, routing_key: str) -> Queue | None:
    """The reply consumer's pseudo-queue for a reply routed by the default exchange."""
    if not routing_key.startswith(PREFIX):
        return None
    return _registry(vhost).get(routing_key)


def rewrite_reply_to(channel: Channel, message: Message) -> None:
    """A request asking for a direct reply: name this channel's reply consumer in reply_to."""
    properties = message.properties
    if properties.reply_to != PSEUDO_QUEUE:
        return
    queue = channel.reply_queue
    if queue is None:
        raise PreconditionFailed("fast reply consumer does not exist")
    properties.reply_to = queue.name
    message.header = ContentHeader(0, len(message.body), properties).marshal()
