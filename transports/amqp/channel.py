"""One AMQP channel: its consumers, unacknowledged deliveries, confirms and transactions."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands

from warrenmq import Exchange, Message, Queue
from warrenmq.errors import (
    AccessRefused,
    NotAllowed,
    NotFound,
    NotImplementedFeature,
    PreconditionFailed,
)
from warrenmq.vhost import server_generated_name

from . import reply_to
from .consumer import AMQPConsumer
from .frames import (
    BASIC_GET_OK_PREFIX,
    BASIC_RETURN_PREFIX,
    EXPIRATION_FLAG_HIGH,
    FRAME_END_BYTE,
    FRAME_HEAD,
    FRAME_METHOD,
    LONG,
    REPLY_TO_FLAG_HIGH,
    SHORT,
    TAG_REDELIVERED,
    USER_ID_FLAG,
    content_frames,
    method_frame,
    short_string,
)

if TYPE_CHECKING:
    from .connection import AMQPConnection

#: an unacknowledged delivery: the message, its queue, the consumer (None for basic.get)
Unacked = tuple[Message, Queue, "AMQPConsumer | None"]


class Channel:
    """Channel state; the connection routes frames here once the channel is open."""

    def __init__(self, connection: AMQPConnection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.vhost = connection.vhost
        self.consumers: dict[str, AMQPConsumer] = {}
        #: delivery tag -> unacked delivery, in tag order
        self.unacked: OrderedDict[int, Unacked] = OrderedDict()
        self.delivery_tag = 0
        self.prefetch = 0
        self.global_prefetch = 0
        self.flow_active = True
        #: no deliveries now (client flow, or the socket is backed up)
        self.paused = connection.write_paused
        self.confirm_mode = False
        self.publish_seq = 0
        self.confirmed_seq = 0
        #: publishes held by an open transaction (None: not transactional)
        self.tx: list[Callable[[], None]] | None = None
        #: acks (None), requeues (True) and discards (False) held by the transaction
        self.tx_settles: list[tuple[list[tuple[int, Unacked]], bool | None]] = []
        self.last_queue: str | None = None
        #: content being assembled: (exchange, routing key, mandatory, route bytes)
        self.pending: tuple[str, str, bool, bytes] | None = None
        self.pending_header: bytes | None = None
        self.pending_size = 0
        self.pending_parts: list[bytes] = []
        self.pending_received = 0
        self.closing = False
        #: the pseudo-queue of this channel's direct reply-to consumer, if any
        self.reply_queue: Queue | None = None

    # -- helpers --------------------------------------------------------------------------

    def send(self, method: Any) -> None:
        self.connection.write(method_frame(self.number, method))

    def _queue_name(self, name: str) -> str:
        """An empty queue name means the last queue declared on this channel (AMQP rule)."""
        if name:
            return name
        if self.last_queue is None:
            raise NotFound("no previously declared queue")
        return self.last_queue

    def _queue(self, name: str) -> Queue:
        return self.vhost.get_queue(self._queue_name(name), self.connection)

    def update_paused(self) -> None:
        paused = not self.flow_active or self.connection.write_paused
        if self.paused and not paused:
            self.paused = False
            self.dispatch_consumed_queues()
        self.paused = paused

    def dispatch_consumed_queues(self) -> None:
        for consumer in list(self.consumers.values()):
            if consumer.queue.ready:
                consumer.queue.dispatch()

    # -- publishing (hot path) ------------------------------------------------------------

    def start_content(self, exchange: str, routing_key: str, mandatory: bool, route: bytes) -> None:
        self.pending = (exchange, routing_key, mandatory, route)
        self.pending_header = None

    def publish(self, header: bytes, body: bytes) -> None:
        exchange_name, routing_key, mandatory, route = self.pending  # type: ignore[misc]
        self.pending = None
        self.pending_header = None
        exchange = self.vhost.exchanges.get(exchange_name)
        if exchange is None:
            raise NotFound(f"no exchange '{exchange_name}' in vhost '{self.vhost.name}'")
        if exchange.internal:
            raise AccessRefused(
                f"cannot publish to internal exchange '{exchange_name}' in vhost '{self.vhost.name}'"
            )
        message = Message(exchange_name, routing_key, header, body, route)
        self.connection.has_published = True
        if header[13] & USER_ID_FLAG:
            self._check_user_id(message)
        if header[12] & EXPIRATION_FLAG_HIGH:
            self._set_expiry(message)
        if header[12] & REPLY_TO_FLAG_HIGH:
            reply_to.rewrite_reply_to(self, message)
        if self.confirm_mode:
            self.publish_seq += 1
            self.connection.confirm_pending.add(self)
        if self.tx is not None:
            self.tx.append(lambda: self._route(exchange, message, mandatory))
            return
        self._route(exchange, message, mandatory)

    def _route(self, exchange: Exchange, message: Message, mandatory: bool) -> None:
        queues = self.vhost.route(exchange, message)
        if queues:
            for queue in queues:
                queue.publish(message)
            return
        if exchange is self.vhost.default_exchange:
            reply_queue = reply_to.reply_destination(self.vhost, message.routing_key)
            if reply_queue is not None:
                reply_queue.publish(message)
                return
        if mandatory:
            self._return(message, 312, "NO_ROUTE")

    def _check_user_id(self, message: Message) -> None:
        user_id = message.properties.user_id
        user = self.connection.user
        if user_id is not None and user is not None and user_id != user.name:
            raise PreconditionFailed(
                f"user_id property set to '{user_id}' but authenticated user was '{user.name}'"
            )

    @staticmethod
    def _set_expiry(message: Message) -> None:
        expiration = message.properties.expiration
        if expiration is None:
            return
        try:
            ttl = int(expiration)
            if ttl < 0:
                raise ValueError
        except ValueError:
            raise PreconditionFailed(f"invalid expiration '{expiration}': no_integer") from None
        message.expires_at = time.monotonic() + ttl / 1000

    def _return(self, message: Message, code: int, text: str) -> None:
        connection = self.connection
        args = SHORT.pack(code) + short_string(text) + message.encoded_route()
        out = connection.out_buffer()
        out += FRAME_HEAD.pack(FRAME_METHOD, self.number, 4 + len(args))
        out += BASIC_RETURN_PREFIX
        out += args
        out += FRAME_END_BYTE
        content_frames(out, self.number, message.header, message.body, connection.max_body)

    # -- acknowledgements -----------------------------------------------------------------

    def _take(self, delivery_tag: int, multiple: bool) -> list[tuple[int, Unacked]]:
        """Remove and return the (tag, delivery) pairs an ack/nack/reject names."""
        unacked = self.unacked
        if multiple:
            if delivery_tag == 0:
                taken = list(unacked.items())
                unacked.clear()
                return taken
            taken = []
            while unacked:
                first = next(iter(unacked))
                if first > delivery_tag:
                    break
                taken.append(unacked.popitem(last=False))
            if not taken:
                raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
            return taken
        entry = unacked.pop(delivery_tag, None)
        if entry is None:
            raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
        return [(delivery_tag, entry)]

    def ack(self, delivery_tag: int, multiple: bool) -> None:
        taken = self._take(delivery_tag, multiple)
        if self.tx is not None:
            self.tx_settles.append((taken, None))  # applied at commit, restored on rollback
            return
        self._settle([entry for _, entry in taken])

    def _settle(self, entries: list[Unacked]) -> None:
        touched: dict[Queue, None] = {}
        for message, queue, consumer in entries:
            if consumer is not None:
                consumer.unacked -= 1
            queue.settle(message)
            touched[queue] = None
        self._after_credit(touched)

    def _after_credit(self, touched: dict[Queue, None]) -> None:
        if self.global_prefetch:
            for consumer in self.consumers.values():
                touched[consumer.queue] = None
        for queue in touched:
            if queue.ready and not queue.deleted:
                queue.dispatch()

    def reject(self, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        taken = self._take(delivery_tag, multiple)
        if self.tx is not None:
            self.tx_settles.append((taken, requeue))
            return
        self._finish(taken, requeue)

    def _finish(self, taken: list[tuple[int, Unacked]], requeue: bool | None) -> None:
        entries = [entry for _, entry in taken]
        if requeue:
            self._requeue(entries)
        else:
            self._settle(entries)  # acked, or rejected without requeue: dropped

    def _requeue(self, entries: list[Unacked]) -> None:
        by_queue: dict[Queue, list[Message]] = {}
        for message, queue, consumer in entries:
            if consumer is not None:
                consumer.unacked -= 1
            by_queue.setdefault(queue, []).append(message)
        for queue, messages in by_queue.items():
            queue.requeue(messages)
        self._after_credit(dict.fromkeys(by_queue))

    def recover(self, requeue: bool) -> None:
        if not requeue:
            raise NotImplementedFeature("requeue=false")  # as RabbitMQ
        entries = list(self.unacked.values())
        self.unacked.clear()
        self._requeue(entries)

    # -- consumers ------------------------------------------------------------------------

    def consume(self, method: commands.Basic.Consume) -> None:
        if method.queue == reply_to.PSEUDO_QUEUE:
            queue = reply_to.open_reply_queue(self, method.no_ack)
        else:
            queue = self._queue(method.queue)
        tag = method.consumer_tag or server_generated_name("amq.ctag-")
        if tag in self.consumers:
            raise NotAllowed(f"attempt to reuse consumer tag '{tag}'")
        arguments = method.arguments or {}
        priority = arguments.get("x-priority", 0)
        consumer = AMQPConsumer(
            self,
            queue,
            tag,
            no_ack=method.no_ack,
            exclusive=method.exclusive,
            prefetch=self.prefetch,
            priority=priority if isinstance(priority, int) else 0,
        )
        if queue.exclusive_consumer is not None or (method.exclusive and queue.consumers):
            raise AccessRefused(
                f"queue '{queue.name}' in vhost '{self.vhost.name}' in exclusive use"
            )
        if not method.nowait:
            self.send(commands.Basic.ConsumeOk(tag))
        self.consumers[tag] = consumer
        queue.add_consumer(consumer)

    def cancel(self, consumer_tag: str, nowait: bool) -> None:
        consumer = self.consumers.pop(consumer_tag, None)
        if not nowait:
            self.send(commands.Basic.CancelOk(consumer_tag))
        if consumer is not None:
            consumer.queue.remove_consumer(consumer)
            if consumer.queue is self.reply_queue:
                reply_to.close_reply_queue(self)

    def consumer_cancelled_by_broker(self, consumer: AMQPConsumer) -> None:
        if self.consumers.pop(consumer.tag, None) is None:
            return
        if self.connection.cancel_notify and not self.closing:
            self.send(commands.Basic.Cancel(consumer.tag, nowait=True))

    def get(self, method: commands.Basic.Get) -> None:
        queue = self._queue(method.queue)
        message = queue.get()
        if message is None:
            self.send(commands.Basic.GetEmpty())
            return
        tag = self.delivery_tag = self.delivery_tag + 1
        if method.no_ack:
            queue.settle(message)
        else:
            self.unacked[tag] = (message, queue, None)
        connection = self.connection
        route = message.encoded_route()
        out = connection.out_buffer()
        out += FRAME_HEAD.pack(FRAME_METHOD, self.number, 4 + TAG_REDELIVERED.size + len(route) + 4)
        out += BASIC_GET_OK_PREFIX
        out += TAG_REDELIVERED.pack(tag, message.redelivered)
        out += route
        out += LONG.pack(len(queue.ready))
        out += FRAME_END_BYTE
        content_frames(out, self.number, message.header, message.body, connection.max_body)

    def qos(self, method: commands.Basic.Qos) -> None:
        if method.prefetch_size:
            raise NotImplementedFeature(f"prefetch_size!=0 ({method.prefetch_size})")
        if method.global_:
            self.global_prefetch = method.prefetch_count
            self.send(commands.Basic.QosOk())
            self.dispatch_consumed_queues()
        else:
            self.prefetch = method.prefetch_count
            self.send(commands.Basic.QosOk())

    # -- modes ----------------------------------------------------------------------------

    def select_confirm(self, nowait: bool) -> None:
        if self.tx is not None:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        self.confirm_mode = True
        if not nowait:
            self.send(commands.Confirm.SelectOk())

    def select_tx(self) -> None:
        if self.confirm_mode:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        if self.tx is None:
            self.tx = []
        self.send(commands.Tx.SelectOk())

    def commit(self) -> None:
        if self.tx is None:
            raise PreconditionFailed("channel is not transactional")
        actions, self.tx = self.tx, []
        settles, self.tx_settles = self.tx_settles, []
        for action in actions:
            action()
        for taken, requeue in settles:
            self._finish(taken, requeue)
        self.send(commands.Tx.CommitOk())

    def rollback(self) -> None:
        if self.tx is None:
            raise PreconditionFailed("channel is not transactional")
        self.tx = []
        self._restore_tx_settles()
        self.send(commands.Tx.RollbackOk())

    def _restore_tx_settles(self) -> None:
        """Acks and rejects of a rolled-back transaction never happened: unacked again."""
        settles, self.tx_settles = self.tx_settles, []
        if not settles:
            return
        restored = dict(self.unacked)
        for taken, _ in settles:
            restored.update(taken)
        self.unacked = OrderedDict(sorted(restored.items()))

    # -- closing --------------------------------------------------------------------------

    def release(self) -> None:
        """The channel is closing: cancel consumers, requeue unacked deliveries."""
        self.closing = True
        self.pending = None
        self._restore_tx_settles()
        consumers = list(self.consumers.values())
        self.consumers.clear()
        # cancel first so requeued messages go to other consumers, not back to these
        for consumer in consumers:
            consumer.queue.remove_consumer(consumer)
        reply_to.close_reply_queue(self)
        self.recover(requeue=True)
