"""One AMQP channel: the core's delivery tracker (``Session``) plus AMQP's own state.

Publishing, settlement, credit, transactions and requeue-on-close are the core's; a channel
adds what only AMQP has: the content being assembled, confirm sequence numbers, basic.return
and the frames of deliveries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from pamqp import commands

from warrenmq import Message, Queue
from warrenmq.errors import (
    InternalError,
    NotAllowed,
    NotFound,
    NotImplementedFeature,
    PreconditionFailed,
)
from warrenmq.queue import ACK, REJECT, REQUEUE, consumer_view
from warrenmq.queue_arguments import message_ttl
from warrenmq.session import Session
from warrenmq.vhost import REFUSED, UNROUTABLE, server_generated_name
from warrenmq.views import SessionView

from . import reply_to
from .consumer import AMQPConsumer
from .frames import (
    BASIC_GET_OK_PREFIX,
    BASIC_RETURN_PREFIX,
    EXPIRATION_FLAG_HIGH,
    FRAME_END_BYTE,
    FRAME_HEAD,
    FRAME_METHOD,
    HEADERS_FLAG_HIGH,
    LONG,
    REPLY_TO_FLAG_HIGH,
    SHORT,
    TAG_REDELIVERED,
    USER_ID_FLAG,
    basic_ack_frame,
    basic_nack_frame,
    content_frames,
    method_frame,
    short_string,
)
from .properties import AMQP_CODEC, sender_selected_keys

if TYPE_CHECKING:
    from .connection import AMQPConnection


#: exchanges a channel remembers as writable before it forgets them all and checks again
WRITABLE_CACHE_SIZE: Final = 64
#: property flags (high byte) that need work at publish: expiration, reply-to, headers
_SPECIAL_FLAGS_HIGH: Final = EXPIRATION_FLAG_HIGH | REPLY_TO_FLAG_HIGH | HEADERS_FLAG_HIGH


class Channel(Session):
    """Channel state; the connection routes frames here once the channel is open."""

    def __init__(self, connection: AMQPConnection, number: int) -> None:
        super().__init__()
        self.connection = connection
        self.number = number
        self.vhost = connection.vhost
        self.consumers: dict[str, AMQPConsumer] = {}  # type: ignore[assignment]
        self.prefetch = 0
        self.flow_active = True
        self.paused = connection.write_paused
        self.confirm_mode = False
        self.publish_seq = 0
        self.confirmed_seq = 0
        self.store = connection.broker.store
        #: confirms waiting for the store's fsync: (publish seq, store write mark, is a nack)
        self.unsynced: deque[tuple[int, int, bool]] = deque()
        self.last_queue: str | None = None
        #: content being assembled: (exchange, routing key, mandatory, route bytes)
        self.pending: tuple[str, str, bool, bytes] | None = None
        self.pending_header: bytes | None = None
        self.pending_size = 0
        self.pending_parts: list[bytes] = []
        self.pending_received = 0
        #: the pseudo-queue of this channel's direct reply-to consumer, if any
        self.reply_queue: Queue | None = None
        #: exchanges this channel's user was found allowed to write to (RabbitMQ caches
        #: permission checks per channel too): one set lookup per publish
        self.writable: set[str] = set()

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

    @staticmethod
    def encoded_route(message: Message) -> bytes:
        """Exchange and routing key as basic.deliver carries them (cached on the message)."""
        route = message.route_bytes
        if route is None:
            route = message.route_bytes = short_string(message.exchange) + short_string(
                message.routing_key
            )
        return route

    def update_paused(self) -> None:
        paused = not self.flow_active or self.connection.write_paused
        was_paused, self.paused = self.paused, paused
        if was_paused and not paused:
            self.credit_changed()

    # -- publishing (hot path) ------------------------------------------------------------

    def start_content(self, exchange: str, routing_key: str, mandatory: bool, route: bytes) -> None:
        self.pending = (exchange, routing_key, mandatory, route)
        self.pending_header = None
        self.connection.has_published = True

    def publish(self, header: bytes, body: bytes) -> None:
        """The pending publish's content arrived (frame by frame)."""
        exchange_name, routing_key, mandatory, route = self.pending  # type: ignore[misc]
        self.pending = None
        self.pending_header = None
        self.publish_content(exchange_name, routing_key, mandatory, route, header, body)

    def publish_content(
        self,
        exchange_name: str,
        routing_key: str,
        mandatory: bool,
        route: bytes,
        header: bytes,
        body: bytes,
    ) -> None:
        """A complete basic.publish: its method's fields, content header and body."""
        if exchange_name not in self.writable:
            self.connection.check("write", "exchange", exchange_name)
            # an exchange whose routing keys a topic permission limits is checked every time
            if self.connection.check_topic("write", exchange_name, routing_key):
                if len(self.writable) >= WRITABLE_CACHE_SIZE:
                    self.writable.clear()
                self.writable.add(exchange_name)
        message = Message(exchange_name, routing_key, body, None, header, AMQP_CODEC, route)
        self.connection.messages_in += 1
        if header[13] & USER_ID_FLAG:
            self._check_user_id(message)
        also_keys: Sequence[str] = ()
        flags = header[12]
        if flags & _SPECIAL_FLAGS_HIGH:  # none of these in the usual message
            if flags & EXPIRATION_FLAG_HIGH:
                expiration = AMQP_CODEC.expiration(header)
                if expiration is not None:
                    message.ttl = message_ttl(expiration)
            if flags & REPLY_TO_FLAG_HIGH:
                reply_to.rewrite_reply_to(self, message)
            if flags & HEADERS_FLAG_HIGH and (b"\x02CC" in header or b"\x03BCC" in header):
                also_keys = sender_selected_keys(message)
        if self.confirm_mode:  # (never transactional too)
            self.publish_seq += 1
            self.connection.confirm_pending.add(self)
            store = self.store
            written = store.written
            outcome = self.vhost.publish(exchange_name, message, also_keys)
            if store.written != written:  # the store wrote it: confirm after the fsync
                self.unsynced.append((self.publish_seq, store.written, False))
            if outcome:
                self._outcome(outcome, message, mandatory)
            return
        if self.tx is not None:
            self._publish_in_tx(self.tx, exchange_name, message, mandatory, also_keys)
            return
        outcome = self.vhost.publish(exchange_name, message, also_keys)  # _publish, inlined
        if outcome:
            self._outcome(outcome, message, mandatory)

    def _publish_in_tx(
        self,
        tx: list[Callable[[], None]],
        exchange_name: str,
        message: Message,
        mandatory: bool,
        also_keys: Sequence[str],
    ) -> None:
        # not inlined: a closure in publish_content would cost every publish, compiled, an
        # environment object for its variables
        self.vhost.get_exchange(exchange_name)  # 404 now, not at commit
        tx.append(lambda: self._publish(exchange_name, message, mandatory, also_keys))

    def _publish(
        self, exchange_name: str, message: Message, mandatory: bool, also_keys: Sequence[str]
    ) -> None:
        outcome = self.vhost.publish(exchange_name, message, also_keys)
        if outcome:
            self._outcome(outcome, message, mandatory)

    def _outcome(self, outcome: int, message: Message, mandatory: bool) -> None:
        """Map a publish that did not simply reach its queues to AMQP replies."""
        if outcome == UNROUTABLE:
            if mandatory:
                self._return(message, 312, "NO_ROUTE")
        elif outcome == REFUSED and self.confirm_mode:
            self._nack(self.publish_seq)

    def _nack(self, seq: int) -> None:
        """A refused publish: confirm everything before it, then nack it."""
        if self.unsynced:  # earlier publishes wait for the store: the nack waits behind them
            self.unsynced.append((seq, self.store.written, True))
            return
        out = self.connection.out_buffer()
        if seq - 1 > self.confirmed_seq:
            out += basic_ack_frame(self.number, seq - 1, seq - 1 - self.confirmed_seq > 1)
        out += basic_nack_frame(self.number, seq, False)
        self.confirmed_seq = seq

    def send_synced_confirms(self, out: bytearray) -> bool:
        """Confirm what the store's fsyncs now cover; True if some confirms still wait."""
        waits = self.unsynced
        synced = self.store.synced
        number = self.number
        while waits and waits[0][1] <= synced:
            seq, _, nack = waits.popleft()
            if nack and seq > self.confirmed_seq:
                if seq - 1 > self.confirmed_seq:
                    out += basic_ack_frame(number, seq - 1, seq - 1 - self.confirmed_seq > 1)
                out += basic_nack_frame(number, seq, False)
                self.confirmed_seq = seq
        upto = waits[0][0] - 1 if waits else self.publish_seq
        if upto > self.confirmed_seq:
            out += basic_ack_frame(number, upto, upto - self.confirmed_seq > 1)
            self.confirmed_seq = upto
        return bool(waits)

    def _check_user_id(self, message: Message) -> None:
        user_id = message.properties.user_id
        user = self.connection.user
        if (
            user_id is not None
            and user is not None
            and user_id != user.name
            and "impersonator" not in user.tags
        ):
            raise PreconditionFailed(
                f"user_id property set to '{user_id}' but authenticated user was '{user.name}'"
            )

    def _return(self, message: Message, code: int, text: str) -> None:
        connection = self.connection
        args = SHORT.pack(code) + short_string(text) + self.encoded_route(message)
        out = connection.out_buffer()
        out += FRAME_HEAD.pack(FRAME_METHOD, self.number, 4 + len(args))
        out += BASIC_RETURN_PREFIX
        out += args
        out += FRAME_END_BYTE
        header = message.encoded_for(AMQP_CODEC)
        content_frames(out, self.number, header, message.body, connection.max_body)

    # -- acknowledgements -----------------------------------------------------------------

    def ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple or self.tx is not None:
            self.settle(delivery_tag, multiple, ACK)
            return
        delivery = self.unacked.pop(delivery_tag, None)  # the common case, kept short
        if delivery is None:
            raise PreconditionFailed(f"unknown delivery tag {delivery_tag}")
        queue, entry, consumer = delivery
        queue.ack(entry)
        if consumer is not None:
            consumer.unacked -= 1
            if consumer.parked:
                queue.consumer_ready(consumer)
        if self.global_prefetch:
            self.credit_changed()

    def reject(self, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        self.settle(delivery_tag, multiple, REQUEUE if requeue else REJECT)

    def recover(self, requeue: bool) -> None:
        if not requeue:
            raise NotImplementedFeature("requeue=false")  # as RabbitMQ
        self.requeue_all()

    # -- consumers ------------------------------------------------------------------------

    def consume(self, method: commands.Basic.Consume) -> None:
        if method.queue == reply_to.PSEUDO_QUEUE:
            queue = reply_to.open_reply_queue(self, method.no_ack)
        else:
            name = self._queue_name(method.queue)
            self.connection.check("read", "queue", name)
            queue = self._queue(name)
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
        queue.check_consumer(method.exclusive)
        if not method.nowait:
            self.send(commands.Basic.ConsumeOk(tag))
        self.add_consumer(consumer)

    def cancel(self, consumer_tag: str, nowait: bool) -> None:
        consumer = self.remove_consumer(consumer_tag)
        if not nowait:
            self.send(commands.Basic.CancelOk(consumer_tag))
        if consumer is not None and consumer.queue is self.reply_queue:
            reply_to.close_reply_queue(self)

    def consumer_cancelled_by_broker(self, consumer: AMQPConsumer) -> None:
        if self.consumers.pop(consumer.tag, None) is None:
            return
        if self.connection.cancel_notify and not self.closing:
            self.send(commands.Basic.Cancel(consumer.tag, nowait=True))

    def consumer_failed(self, consumer: Any, error: BaseException) -> None:
        self.consumers.pop(consumer.tag, None)
        self.connection.fail(InternalError(f"delivery to consumer '{consumer.tag}' failed"))

    def get(self, method: commands.Basic.Get) -> None:
        name = self._queue_name(method.queue)
        self.connection.check("read", "queue", name)
        queue = self._queue(name)
        got = queue.get(method.no_ack)
        if got is None:
            self.send(commands.Basic.GetEmpty())
            return
        message, entry = got
        tag = self.next_tag() if method.no_ack else self.track(queue, entry, None)
        connection = self.connection
        route = self.encoded_route(message)
        out = connection.out_buffer()
        out += FRAME_HEAD.pack(FRAME_METHOD, self.number, 4 + TAG_REDELIVERED.size + len(route) + 4)
        out += BASIC_GET_OK_PREFIX
        out += TAG_REDELIVERED.pack(tag, entry.deliveries > 1)
        out += route
        out += LONG.pack(queue.ready_count)
        out += FRAME_END_BYTE
        header = message.encoded_for(AMQP_CODEC)
        content_frames(out, self.number, header, message.body, connection.max_body)

    def qos(self, method: commands.Basic.Qos) -> None:
        if method.prefetch_size:
            raise NotImplementedFeature(f"prefetch_size!=0 ({method.prefetch_size})")
        if method.global_:
            self.global_prefetch = method.prefetch_count
            self.send(commands.Basic.QosOk())
            self.credit_changed()
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
        store = self.store
        written = store.written
        super().commit()
        if store.written == written:
            self.send(commands.Tx.CommitOk())
            return
        mark = store.written  # commit-ok once the store's fsync covers the publishes

        def synced() -> None:
            if store.synced < mark:
                store.when_synced(synced)
            elif not self.closing and not self.connection.closed:
                self.send(commands.Tx.CommitOk())
                self.connection.wake()

        store.when_synced(synced)

    def rollback(self) -> None:
        if self.tx is None:
            raise PreconditionFailed("channel is not transactional")
        super().rollback()
        self.send(commands.Tx.RollbackOk())

    # -- closing --------------------------------------------------------------------------

    def view(self) -> SessionView:
        return SessionView(
            number=self.number,
            prefetch=self.prefetch,
            global_prefetch=self.global_prefetch,
            unacked=len(self.unacked),
            consumers=[consumer_view(c.queue, c) for c in self.consumers.values()],
            confirm=self.confirm_mode,
            transactional=self.tx is not None,
            paused=self.paused,
        )

    def release(self) -> None:
        """The channel is closing: cancel consumers, requeue unacked deliveries."""
        self.pending = None
        self.close()
        reply_to.close_reply_queue(self)
