"""The sans-IO AMQP 0-9-1 server connection: bytes in, broker calls, bytes out.

``receive_data`` parses every complete frame of a read in one pass (publish, content and ack
frames on a hand-written fast path, everything else through pamqp), and queues all replies
and deliveries in one output buffer that the transport writes once per read.
"""

from __future__ import annotations

import logging
import platform
import struct
import time
import types
from collections.abc import Callable
from typing import Any, Final

from pamqp import commands, decode

import warrenmq
from warrenmq import Broker, ProtocolConnection
from warrenmq.access import TOPIC_EXCHANGE_TYPE, Kind, TopicKind
from warrenmq.auth import LoginRefused, User
from warrenmq.errors import (
    AccessRefused,
    BrokerError,
    ChannelError,
    CommandInvalid,
    ConnectionAccessRefused,
    ConnectionForced,
    FrameError,
    InternalError,
    NotAllowed,
    NotImplementedFeature,
    PreconditionFailed,
    UnexpectedFrame,
)
from warrenmq.failures import log_failure
from warrenmq.limits import MAX_MESSAGE_SIZE
from warrenmq.tls import TLSPeer
from warrenmq.vhost import VirtualHost, server_generated_name
from warrenmq.views import ConnectionView

from . import reply_to
from .channel import Channel
from .frames import (
    BASIC_ACK_INDEX,
    BASIC_PUBLISH_INDEX,
    END_AND_HEAD,
    FRAME_BODY,
    FRAME_END,
    FRAME_HEAD,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_MIN_SIZE,
    FRAME_OVERHEAD,
    HEARTBEAT_FRAME,
    LONG,
    METHOD_ID,
    PROTOCOL_HEADER,
    PROTOCOL_HEADER_0_9,
    TAG_BITS,
    MethodDecodeError,
    basic_ack_frame,
    binary_name,
    check_nesting,
    close_frame,
    decode_method,
    headers_too_deep,
    method_frame,
    printable,
    queue_declare_ok_frame,
    short_string,
)

log = logging.getLogger("warrenmq.amqp")

CLOSE_TIMEOUT: Final = 3.0
#: output buffered in the engine beyond which deliveries wait for the transport to take it
OUT_LIMIT: Final = 1024 * 1024
#: input between two memory-alarm checks made by the connection itself
MEMORY_CHECK_BYTES: Final = 4 * 1024 * 1024
_unpack_tag_bits: Final = TAG_BITS.unpack_from
# The pure build reads frame heads with struct (one C call per head); the compiled build
# indexes the bytes, which it compiles to native integer arithmetic (no tuple, no boxed ints)
# but which costs a bytecode per octet in pure Python.
_unpack_frame_head: Final = FRAME_HEAD.unpack_from
_unpack_method_key: Final = struct.Struct(">I").unpack_from
#: a content header frame's head with its class id and body size (weight skipped)
_unpack_content_head: Final = struct.Struct(">BHIH2xQ").unpack_from
_unpack_end_and_head: Final = END_AND_HEAD.unpack_from


def _running_compiled() -> bool:
    """Whether this module runs compiled by mypyc (its functions are then native)."""
    return not isinstance(_running_compiled, types.FunctionType)


COMPILED: Final = _running_compiled()
_unpack_body_size: Final = struct.Struct(">Q").unpack_from
#: distinct (exchange, routing key) pairs a connection keeps decoded
ROUTE_CACHE_SIZE: Final = 256

CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}

# connection states
AWAIT_HEADER: Final = 0
AWAIT_START_OK: Final = 1
AWAIT_TUNE_OK: Final = 2
AWAIT_OPEN: Final = 3
OPEN: Final = 4
#: the states as RabbitMQ names them in its errors
STATE_NAMES = ("pre-init", "starting", "tuning", "opening", "running")


def _server_properties() -> dict[str, Any]:
    return {
        "product": "warrenmq",
        "version": warrenmq.__version__,
        "platform": f"Python {platform.python_version()}",
        "copyright": "warrenmq authors",
        "information": "https://pypi.org/project/warrenmq/",
        "capabilities": CAPABILITIES,
        "cluster_name": "warrenmq",
    }


def _text(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


class AMQPConnection(ProtocolConnection):
    """One client connection, from protocol header to close."""

    # slots: more attributes than CPython shares dict keys for, several used per message
    __slots__ = (
        "broker",
        "peer",
        "name",
        "transport_name",
        "_out",
        "_buf",
        "_routes",
        "_receiving",
        "_state",
        "_closed",
        "_close_deadline",
        "_released",
        "frame_max",
        "max_body",
        "max_message_size",
        "channel_max",
        "heartbeat",
        "channels",
        "confirm_pending",
        "durable_pending",
        "_sync_awaited",
        "user",
        "vhost",
        "client_properties",
        "cancel_notify",
        "write_paused",
        "out_limit",
        "_out_full",
        "_blocked",
        "_blocked_sent",
        "has_published",
        "blocked_notify",
        "timers_changed",
        "_started",
        "_login",
        "_last_recv",
        "_last_send",
        "connected_at",
        "messages_in",
        "_closed_messages_out",
        "bytes_in",
        "bytes_out",
        "_next_memory_check",
        "wakeup",
        "transport_buffer",
        "tls",
    )

    def __init__(
        self, broker: Broker, peer: tuple[str, int] | None = None, transport_name: str = "tcp"
    ) -> None:
        self.broker = broker
        self.peer = peer
        self.name = f"{peer[0]}:{peer[1]}" if peer else "local"
        self.transport_name = transport_name
        settings = broker.settings
        self._out = bytearray()
        self._buf = b""
        #: basic.publish's exchange and routing key as sent -> (exchange, routing key, the
        #: same bytes): a publisher's few routes are decoded once, and its messages share them
        self._routes: dict[bytes, tuple[str, str, bytes]] = {}
        self._receiving = False
        self._state = AWAIT_HEADER
        self._closed = False
        #: set once we sent connection.close and wait for close-ok
        self._close_deadline: float | None = None
        self._released = False
        #: the frame size limit: FRAME_MIN_SIZE until tune-ok, as in RabbitMQ (so a client
        #: that has not logged in cannot send large frames), then the negotiated one
        self.frame_max = FRAME_MIN_SIZE
        self.max_body = self.frame_max - FRAME_OVERHEAD
        self.channel_max = settings.channel_max
        #: read per message; the broker's settings do not change while it runs
        self.max_message_size = settings.max_message_size
        self.heartbeat = 0
        self.channels: dict[int, Channel] = {}
        self.confirm_pending: set[Channel] = set()
        #: channels whose confirms wait for the store's fsync
        self.durable_pending: set[Channel] = set()
        self._sync_awaited = False
        self.user: User | None = None
        self.vhost: VirtualHost = next(iter(broker.vhosts.values()))
        self.client_properties: dict[str, Any] = {}
        self.cancel_notify = False
        #: the transport's buffer is full: no deliveries, and the client is not read
        self.write_paused = False
        self.out_limit = OUT_LIMIT
        #: deliveries stopped because the engine's own output buffer passed ``out_limit``
        self._out_full = False
        #: a resource alarm of the broker is on; publishing connections are not read meanwhile
        self._blocked = bool(broker.alarms)
        self._blocked_sent = False
        self.has_published = False
        self.blocked_notify = False
        #: the transport re-reads ``tick`` when this is set (heartbeat negotiated, closing)
        self.timers_changed = False
        now = time.monotonic()
        self._started = self._last_recv = self._last_send = now
        #: (mechanism, client capabilities) while the broker checks a login
        self._login: tuple[str, dict[str, Any]] | None = None
        self.connected_at = time.time()
        # counters for management (plain integers, cheap on the hot path)
        self.messages_in = 0
        #: deliveries made on channels since closed (an open channel's count is its last tag)
        self._closed_messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._next_memory_check = MEMORY_CHECK_BYTES
        self.wakeup: Callable[[], None] | None = None
        self.transport_buffer: Callable[[], int] | None = None
        self.tls: TLSPeer | None = None
        broker.connections.add(self)

    # -- transport-facing API -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def data_to_send(self) -> bytearray:
        out = self._out
        if out:
            self._out = bytearray()
            self._last_send = time.monotonic()
            self.bytes_out += len(out)
        if self._out_full:
            self._out_full = False  # the transport took the output: deliver more
            if not self.write_paused:
                for channel in list(self.channels.values()):
                    channel.update_paused()
        return out

    @property
    def messages_out(self) -> int:
        """Messages delivered (consumers and basic.get): every delivery takes a channel's next
        delivery tag, so the hot path needs no counter of its own."""
        return self._closed_messages_out + sum(
            channel.delivery_tag for channel in self.channels.values()
        )

    def forget_channel(self, channel: Channel) -> None:
        """A closed channel leaves the table; its deliveries stay counted."""
        self._closed_messages_out += channel.delivery_tag
        del self.channels[channel.number]

    def output_full(self) -> None:
        """A delivery filled the output buffer: stop delivering until it is written."""
        if not self._out_full:
            self._out_full = True
            for channel in self.channels.values():
                channel.pause()

    def session_count(self) -> int:
        return len(self.channels)

    def buffered_bytes(self) -> int:
        """Bytes this connection holds: output not yet written and content being assembled."""
        held = len(self._out) + len(self._buf)
        for channel in self.channels.values():
            held += channel.pending_received
        transport_buffer = self.transport_buffer
        if transport_buffer is not None:
            held += transport_buffer()
        return held

    def view(self) -> ConnectionView:
        peer = self.peer
        return ConnectionView(
            name=self.name,
            protocol="amqp",
            transport=self.transport_name,
            peer_host=peer[0] if peer else None,
            peer_port=peer[1] if peer else None,
            user=self.user.name if self.user else None,
            vhost=self.vhost.name if self._state == OPEN else None,
            connected_at=self.connected_at,
            client=dict(self.client_properties),
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            blocked=self.reading_paused,
            sessions=[channel.view() for channel in self.channels.values()],
        )

    def fail(self, error: BrokerError) -> None:
        """Close the connection for an error found outside its own input (a delivery bug)."""
        self._connection_error(error, 0, 0)
        self._wake()

    def receive_data(self, data: bytes) -> None:
        if self._closed:
            return
        if not data:
            self.connection_lost()
            return
        self._last_recv = time.monotonic()
        received = self.bytes_in = self.bytes_in + len(data)
        if received >= self._next_memory_check:
            # between the broker's periodic checks, a fast publisher could overshoot the
            # memory limit by a lot: check every few MiB of input too
            self._next_memory_check = received + MEMORY_CHECK_BYTES
            self.broker.check_memory()
        if self._buf:
            data = self._buf + data
            self._buf = b""
        elif data.__class__ is not bytes:  # slices must be hashable bytes (route cache)
            data = bytes(data)
        self._receiving = True
        try:
            if self._state == AWAIT_HEADER:
                data = self._protocol_header(data)
                if not data:
                    return
            self._parse(data)
        except Exception as exc:  # a bug must cost this connection only
            self._log_internal_error(exc)
            self._connection_error(InternalError("internal error"), 0, 0)
            self._closed = True
        finally:
            self._receiving = False

    def _log_internal_error(self, exc: Exception) -> None:
        log_failure(log, f"internal error on connection {self.name}", exc)

    def connection_lost(self) -> None:
        if not self._closed and self._state == OPEN:
            log.info("connection %s went away without connection.close", self.name)
        self._closed = True
        self._release_all()

    def tick(self, now: float) -> float | None:
        if self._closed:
            return None
        if self._close_deadline is not None:
            if now >= self._close_deadline:
                self._closed = True
                return None
            return self._close_deadline
        if self._state != OPEN:
            deadline = self._started + self.broker.settings.handshake_timeout
            if now >= deadline:
                log.warning("closing %s: handshake timeout", self.name)
                self._closed = True
                self._release_all()
                return None
            return deadline
        beat = self.heartbeat
        if not beat:
            return None
        if self.reading_paused:
            self._last_recv = now  # not reading a blocked publisher: its silence is ours
        if now - self._last_recv > 2 * beat:
            log.warning("closing %s: missed heartbeats from client, timeout: %ds", self.name, beat)
            self._closed = True
            self._release_all()
            return None
        half = beat / 2
        if now - self._last_send >= half:
            self.write(HEARTBEAT_FRAME)
            self._last_send = now
        return min(self._last_send + half, self._last_recv + 2 * beat + 0.05)

    def shutdown(self, reason: str) -> None:
        if self._closed or self._close_deadline is not None:
            return
        if self._state != OPEN:
            self._closed = True
            self._release_all()
            return
        error = ConnectionForced(f"broker forced connection closure with reason '{reason}'")
        self._connection_error(error, 0, 0)

    @property
    def reading_paused(self) -> bool:  # type: ignore[override]
        # a publisher under a resource alarm; or a client that does not read what we send
        # (its returns, say): stop reading it until its output drains
        return (self._blocked and self.has_published) or self.write_paused

    def resource_alarm(self, alarms: frozenset[str]) -> None:
        # as RabbitMQ: one connection.blocked while any alarm is on (a second alarm adds no
        # frame), one connection.unblocked when the last clears
        self._blocked = bool(alarms)
        self._last_recv = time.monotonic()
        if self._blocked and self.has_published:
            self._send_blocked()
        elif not self._blocked and self._blocked_sent:
            self._blocked_sent = False
            self.write(method_frame(0, commands.Connection.Unblocked()))
        self._wake()  # the transport re-reads reading_paused

    def _send_blocked(self) -> None:
        if self.blocked_notify and not self._blocked_sent and self._state == OPEN:
            self._blocked_sent = True
            # RabbitMQ's reason: "low on memory", "low on disk", "low on disk & memory"
            reason = "low on " + " & ".join(sorted(self.broker.alarms))
            log.info("blocking publisher %s: %s", self.name, reason)
            self.write(method_frame(0, commands.Connection.Blocked(reason)))

    def pause_writing(self) -> None:
        self.write_paused = True
        for channel in self.channels.values():
            channel.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._out_full = False
        for channel in list(self.channels.values()):
            channel.update_paused()

    # -- output ---------------------------------------------------------------------------

    def _wake(self) -> None:
        if self.wakeup is not None:
            self.wakeup()

    def wake(self) -> None:
        """Have the transport write the output (produced outside a read of input)."""
        self._wake()

    def out_buffer(self) -> bytearray:
        """The output buffer, waking the transport if this output is not a reply to input."""
        out = self._out
        if not out and not self._receiving and self.wakeup is not None:
            self.wakeup()
        return out

    def write(self, data: bytes) -> None:
        self.out_buffer().extend(data)

    # -- parsing --------------------------------------------------------------------------

    def _protocol_header(self, data: bytes) -> bytes:
        if len(data) < len(PROTOCOL_HEADER) and (
            PROTOCOL_HEADER.startswith(data) or PROTOCOL_HEADER_0_9.startswith(data)
        ):
            self._buf = data
            return b""
        if data[:8] != PROTOCOL_HEADER and data[:8] != PROTOCOL_HEADER_0_9:
            log.warning("closing %s: bad protocol header %r", self.name, bytes(data[:8]))
            self._out += PROTOCOL_HEADER
            self._closed = True
            self._release_all()
            return b""
        self._state = AWAIT_START_OK
        start = commands.Connection.Start(
            version_major=0,
            version_minor=9,
            server_properties=_server_properties(),
            mechanisms=" ".join(self.mechanisms()),
            locales="en_US",
        )
        self.write(method_frame(0, start))
        return data[8:]

    def _parse(self, data: bytes) -> None:
        pos = 0
        # as RabbitMQ, a payload may be as large as frame_max itself (a fudge for clients that
        # forget the 8 bytes of frame overhead); larger is a frame error
        size_limit = self.frame_max
        length = len(data)
        channels = self.channels
        while length - pos >= 8:
            if COMPILED:
                frame_type = data[pos]
                number = data[pos + 1] << 8 | data[pos + 2]
                size = (
                    data[pos + 3] << 24 | data[pos + 4] << 16 | data[pos + 5] << 8 | data[pos + 6]
                )
            else:
                frame_type, number, size = _unpack_frame_head(data, pos)
            if size > size_limit:
                self._frame_error(
                    f"type {frame_type}, all octets = <<>>: "
                    f"{{frame_too_large,{size},{self.frame_max - FRAME_OVERHEAD}}}"
                )
                return
            start = pos + 7
            end = start + size
            if end >= length:
                break
            if data[end] != FRAME_END:
                self._frame_error(f"bad frame end marker {data[end]:#x}")
                return
            pos = end + 1
            if self._close_deadline is not None:
                self._while_closing(frame_type, number, data, start, end)
                if self._closed:
                    return
                continue
            if frame_type == FRAME_METHOD:
                if size < 4:
                    key = -1
                elif COMPILED:
                    key = (
                        data[start] << 24
                        | data[start + 1] << 16
                        | data[start + 2] << 8
                        | data[start + 3]
                    )
                else:
                    key = _unpack_method_key(data, start)[0]
                channel = channels.get(number)
                if key == BASIC_PUBLISH_INDEX and channel is not None and channel.pending is None:
                    if not channel.closing:
                        after = self._fast_publish(channel, data, start, end, length, size_limit)
                        if after:
                            pos = after
                            if self._closed:
                                return
                            continue
                elif (
                    key == BASIC_ACK_INDEX
                    and channel is not None
                    and not channel.closing
                    and channel.pending is None
                    and end - start == 13
                ):
                    tag, bits = _unpack_tag_bits(data, start + 4)
                    try:
                        channel.ack(tag, bool(bits & 1))
                    except BrokerError as error:
                        self._error(error, number, 60, 80)
                    continue
                self._method(number, data[start:end])
                size_limit = self.frame_max  # tune-ok sets it
            elif frame_type == FRAME_BODY:
                self._body(number, data[start:end])
            elif frame_type == FRAME_HEADER:
                self._header(number, data[start:end])
            elif frame_type == FRAME_HEARTBEAT:
                if number != 0:
                    self._connection_error(
                        UnexpectedFrame(f"heartbeat frame on channel {number}"), 0, 0
                    )
                    return
            else:
                self._frame_error(f"unknown frame type {frame_type}")
                return
            if self._closed:
                return
        if pos < length:
            self._buf = data[pos:]
        if self.confirm_pending:
            self._send_confirms()
        if self._blocked and self.has_published and not self._blocked_sent:
            self._send_blocked()

    def _fast_publish(
        self, channel: Channel, data: bytes, start: int, end: int, length: int, size_limit: int
    ) -> int:
        """Basic.Publish without pamqp, and with it (the usual case) its content header and
        one body frame if both are already read: publish in one go and return the position
        after them. If the content is not all there, the publish waits for it (``pending``)
        and the position after the method frame is returned; 0 leaves the method frame to
        the slow path, and the frame loop reports any error in what follows."""
        try:
            p = start + 6
            exchange_end = p + 1 + data[p]
            key_end = exchange_end + 1 + data[exchange_end]
            bits = data[key_end]
            if key_end + 1 != end or bits & 2:  # trailing bytes, or immediate=true
                return 0
        except IndexError:
            return 0
        route = data[p:key_end]
        names = self._routes.get(route)
        if names is None:
            names = self._route_names(route, p, exchange_end, key_end, data)
        exchange, routing_key, route = names
        self.has_published = True
        mandatory = bool(bits & 1)
        # the content header and body frames that should follow, their heads read at once
        pos = end + 1
        header_start = pos + 7
        header_end = body_end = 0
        if length - header_start >= 15:
            number: int = channel.number
            # the header frame's type, channel, size and class id (weight skipped), and the
            # body size, a 64-bit number whose high half is 0 below max_message_size (at most
            # 512 MiB): anything else is left to the frame loop, which refuses it
            if COMPILED:
                size = (
                    data[pos + 3] << 24 | data[pos + 4] << 16 | data[pos + 5] << 8 | data[pos + 6]
                )
                b = pos + 11
                if (
                    data[pos] == FRAME_HEADER
                    and data[pos + 1] << 8 | data[pos + 2] == number
                    and data[pos + 7] == 0
                    and data[pos + 8] == 60
                    and 14 <= size <= size_limit
                    and data[b] | data[b + 1] | data[b + 2] | data[b + 3] == 0
                ):
                    body_size = (
                        data[b + 4] << 24 | data[b + 5] << 16 | data[b + 6] << 8 | data[b + 7]
                    )
                else:
                    body_size = -1
            else:
                frame_type, channel_number, size, class_id, body_size = _unpack_content_head(
                    data, pos
                )
                if not (
                    frame_type == FRAME_HEADER
                    and channel_number == number
                    and class_id == 60
                    and 14 <= size <= size_limit
                ):
                    body_size = -1
            if 0 <= body_size <= self.max_message_size:  # else the loop refuses
                header_end = header_start + size
                if body_size == 0:  # no body frame
                    if header_end < length and data[header_end] == FRAME_END:
                        body_end = header_end
                else:
                    body_end = header_end + 8 + body_size
                    if body_size > size_limit or body_end >= length:
                        body_end = 0
                    else:
                        h = header_end
                        if COMPILED:
                            bad = (
                                data[h] != FRAME_END
                                or data[h + 1] != FRAME_BODY
                                or data[h + 2] << 8 | data[h + 3] != number
                                or data[h + 4] << 24
                                | data[h + 5] << 16
                                | data[h + 6] << 8
                                | data[h + 7]
                                != body_size
                            )
                        else:
                            marker, frame_type, channel_number, size = _unpack_end_and_head(data, h)
                            bad = (
                                marker != FRAME_END
                                or frame_type != FRAME_BODY
                                or channel_number != number
                                or size != body_size
                            )
                        if bad or data[body_end] != FRAME_END:
                            body_end = 0
        if not body_end:  # the content comes frame by frame
            channel.pending = (exchange, routing_key, mandatory, route)
            return pos
        header = data[header_start:header_end]
        body = data[header_end + 8 : body_end] if body_end != header_end else b""
        try:
            channel.publish_content(exchange, routing_key, mandatory, route, header, body)
        except BrokerError as error:
            self._error(error, channel.number, 60, 40)
        except RecursionError as exc:
            self._recursion_in_publish(exc, header)
        return body_end + 1

    def _route_names(
        self, route: bytes, p: int, exchange_end: int, key_end: int, data: bytes
    ) -> tuple[str, str, bytes]:
        """Decode basic.publish's exchange and routing key, and remember them."""
        try:
            exchange = data[p + 1 : exchange_end].decode()
            routing_key = data[exchange_end + 1 : key_end].decode()
        except UnicodeDecodeError:  # RabbitMQ takes these as bytes; UTF-8 names pay nothing
            exchange = binary_name(data[p + 1 : exchange_end])
            routing_key = binary_name(data[exchange_end + 1 : key_end])
        routes = self._routes
        if len(routes) >= ROUTE_CACHE_SIZE:
            routes.clear()
        names = routes[route] = (exchange, routing_key, route)
        return names

    def _header(self, number: int, payload: bytes) -> None:
        channel = self.channels.get(number)
        if channel is not None and channel.closing:
            return
        if len(payload) < 14 and self._state == OPEN:
            # as RabbitMQ: a malformed frame, whatever the channel expects
            self._frame_error(f"content header frame of {len(payload)} bytes is too short")
            return
        if channel is None or channel.pending is None or channel.pending_header is not None:
            self._unexpected_frame(channel)
            return
        if payload[0] != 0 or payload[1] != 60:
            self._connection_error(
                UnexpectedFrame(
                    "expected content header for class 60, "
                    f"got one for class {payload[0] << 8 | payload[1]} instead"
                ),
                60,
                40,
            )
            return
        body_size = _unpack_body_size(payload, 4)[0]
        try:
            largest = self.max_message_size
            if body_size > largest:
                # refused at the header, before any body is buffered (RabbitMQ reads the
                # whole body first); RabbitMQ's words, which omit "configured" at its maximum
                channel.pending = None
                configured = "" if largest == MAX_MESSAGE_SIZE else "configured "
                raise PreconditionFailed(
                    f"message size {body_size} is larger than {configured}max size {largest}"
                )
            if body_size == 0:
                channel.publish(payload, b"")
                return
        except BrokerError as error:
            self._error(error, number, 60, 40)
            return
        except RecursionError as exc:
            self._recursion_in_publish(exc, payload)
            return
        channel.pending_header = payload
        channel.pending_size = body_size
        channel.pending_parts = []
        channel.pending_received = 0

    def _body(self, number: int, payload: bytes) -> None:
        channel = self.channels.get(number)
        if channel is not None and channel.closing:
            return
        if channel is None or channel.pending_header is None:
            self._unexpected_frame(channel)
            return
        received = channel.pending_received + len(payload)
        size = channel.pending_size
        if received < size:
            channel.pending_parts.append(payload)
            channel.pending_received = received
            return
        if received > size:
            self._frame_error(f"content body exceeds declared size {size}", 60, 40)
            return
        parts = channel.pending_parts
        if parts:
            parts.append(payload)
            payload = b"".join(parts)
            channel.pending_parts = []
        header: bytes = channel.pending_header  # type: ignore[assignment]
        try:
            channel.publish(header, payload)
        except BrokerError as error:
            self._error(error, number, 60, 40)
        except RecursionError as exc:
            self._recursion_in_publish(exc, header)

    def _recursion_in_publish(self, exc: RecursionError, header: bytes) -> None:
        """Properties are decoded (by pamqp, recursively) only when the broker needs them:
        headers nested too deep for that are the client's error (501); else it is a bug."""
        if not headers_too_deep(header):
            raise exc
        self._frame_error("message headers nested too deep to decode", 60, 40)

    def _unexpected_frame(self, channel: Channel | None) -> None:
        """505 for a frame the channel's content state does not expect, in RabbitMQ's words:
        the frame it expected instead, and the interrupted basic.publish as the culprit."""
        if channel is None or channel.pending is None:
            error, culprit = "expected method frame, got non method frame instead", (0, 0)
        elif channel.pending_header is None:
            error = "expected content header for class 60, got non content header frame instead"
            culprit = (60, 40)
        else:
            error, culprit = "expected content body, got non content body frame instead", (60, 40)
        self._connection_error(UnexpectedFrame(error), *culprit)

    def _send_confirms(self) -> None:
        out = self._out
        for channel in self.confirm_pending:
            if channel.unsynced:
                if not channel.closing and channel.send_synced_confirms(out):
                    self.durable_pending.add(channel)
                continue
            seq = channel.publish_seq
            if seq > channel.confirmed_seq and not channel.closing:
                out += basic_ack_frame(channel.number, seq, seq - channel.confirmed_seq > 1)
                channel.confirmed_seq = seq
        self.confirm_pending.clear()
        if self.durable_pending and not self._sync_awaited:
            self._sync_awaited = True
            self.broker.store.when_synced(self._store_synced)

    def _store_synced(self) -> None:
        """The store's fsync advanced: send the confirms it covers (outside any input)."""
        self._sync_awaited = False
        pending, self.durable_pending = self.durable_pending, set()
        if self._closed or self._close_deadline is not None:
            return
        self.confirm_pending.update(channel for channel in pending if not channel.closing)
        self._send_confirms()
        self._wake()

    # -- methods --------------------------------------------------------------------------

    def _method(self, number: int, payload: bytes) -> None:
        if len(payload) < 4:
            self._frame_error("method frame too short")
            return
        class_id, method_id = METHOD_ID.unpack_from(payload)
        channel = self.channels.get(number)
        if channel is None and self._state == OPEN and not self._may_open_channel():
            return
        if channel is not None and channel.pending is not None and not channel.closing:
            self._unexpected_frame(channel)
            return
        if number and self._state != OPEN:
            error = UnexpectedFrame(f"method frame on channel {number} before connection.open")
            self._connection_error(error, 0, 0)
            return
        try:
            method = decode_method(payload)
        except MethodDecodeError as exc:
            if (class_id << 16 | method_id) not in commands.INDEX_MAPPING:
                self._error(CommandInvalid(str(exc)), number, class_id, method_id)
            elif exc.names_method:
                self._frame_error(str(exc), class_id, method_id)
            else:
                self._frame_error(str(exc))
            return
        try:
            if number == 0:
                self._connection_method(method)
            else:
                self._channel_method(number, method)
        except BrokerError as error:
            self._error(error, number, class_id, method_id)

    def _may_open_channel(self) -> bool:
        """Whether one more channel may open; if not, close the connection (530) as RabbitMQ,
        which counts open channels (not channel numbers) against channel_max, and then the
        user's channels over all its connections against its max-channels limit."""
        try:
            if len(self.channels) >= self.channel_max:
                raise NotAllowed(
                    f"number of channels opened ({len(self.channels)}) has reached "
                    f"the negotiated channel_max ({self.channel_max})"
                )
            if self.user is not None:
                self.broker.limits.check_new_session(self.user.name)
        except NotAllowed as error:
            self._connection_error(error, 0, 0)
            return False
        return True

    def _connection_method(self, method: Any) -> None:
        state = self._state
        if (
            isinstance(method, commands.Connection.StartOk)
            and state == AWAIT_START_OK
            and self._login is None
        ):
            self._start_ok(method)
        elif isinstance(method, commands.Connection.TuneOk) and state == AWAIT_TUNE_OK:
            self._tune_ok(method)
        elif isinstance(method, commands.Connection.Open) and state == AWAIT_OPEN:
            self._open(method)
        elif isinstance(method, commands.Connection.Close):
            log.info("client %s closed the connection", self.name)
            self._release_all()
            self.write(method_frame(0, commands.Connection.CloseOk()))
            self._closed = True
        elif isinstance(method, commands.Connection.CloseOk):
            self._closed = True
        elif isinstance(method, commands.Connection.UpdateSecret) and state == OPEN:
            self.write(method_frame(0, commands.Connection.UpdateSecretOk()))
        elif isinstance(method, commands.Connection.Blocked | commands.Connection.Unblocked):
            pass
        else:  # as RabbitMQ, for any method out of place on channel 0
            raise ChannelError(f"unexpected method in connection state {STATE_NAMES[state]}")

    def mechanisms(self) -> list[str]:
        """The SASL mechanisms offered: the configured ones, EXTERNAL only over TLS with
        client certificates verified (RabbitMQ offers it over any TLS, then refuses it there)."""
        verifies = self.tls is not None and self.tls.verifies
        return [
            name for name in self.broker.settings.auth_mechanisms if name != "EXTERNAL" or verifies
        ]

    def _start_ok(self, method: commands.Connection.StartOk) -> None:
        properties = method.client_properties or {}
        self.client_properties = properties
        found = properties.get("capabilities")
        capabilities: dict[str, Any] = found if isinstance(found, dict) else {}
        self.cancel_notify = bool(capabilities.get("consumer_cancel_notify"))
        self.blocked_notify = bool(capabilities.get("connection.blocked"))
        mechanism = method.mechanism
        host = self.peer[0] if self.peer else None
        try:
            if mechanism not in self.mechanisms():
                raise LoginRefused(f"unknown authentication mechanism '{mechanism}'")
            username, password = self._credentials(mechanism, _text(method.response or b""))
        except LoginRefused as refused:
            self._refuse_login(mechanism, refused.reason, capabilities)
            return
        self._login = (mechanism, capabilities)
        # the broker answers at once or, after checking an expensive hash or holding back an
        # address that failed before, on a later turn of the event loop
        self.broker.login(username, password, host, self._login_done)

    def _login_done(self, result: User | LoginRefused) -> None:
        if self._login is None or self._closed or self._released:
            return  # the client went away meanwhile
        mechanism, capabilities = self._login
        self._login = None
        if isinstance(result, LoginRefused):
            self._refuse_login(mechanism, result.reason, capabilities)
        else:
            self.user = result
            self._state = AWAIT_TUNE_OK
            tune = commands.Connection.Tune(
                channel_max=self.channel_max,
                frame_max=self.broker.settings.frame_max,
                heartbeat=self.broker.settings.heartbeat,
            )
            self.write(method_frame(0, tune))
        if not self._receiving:
            self._wake()  # an answer that did not come from reading: the transport flushes

    def _refuse_login(self, mechanism: str, reason: str, capabilities: dict[str, Any]) -> None:
        """The log says why, in RabbitMQ's words; the client only that the login was refused."""
        log.warning("%s login refused: %s (connection %s)", mechanism, printable(reason), self.name)
        if capabilities.get("authentication_failure_close"):
            error = ConnectionAccessRefused(
                f"Login was refused using authentication mechanism {mechanism}. "
                "For details see the broker logfile."
            )
            self._connection_error(error, 0, 0)
        self._closed = True  # without the capability, RabbitMQ just closes the socket
        self._release_all()

    def _credentials(self, mechanism: str, response: bytes) -> tuple[str, str | None]:
        """User name and password from a SASL response (LoginRefused if it has none); for
        EXTERNAL, the client certificate's user name and None (no password to check)."""
        if mechanism == "EXTERNAL":  # the response (an authorization identity) is ignored
            name = (
                self.tls.login_name(self.broker.settings.ssl_cert_login_from) if self.tls else None
            )
            if name is None:
                raise LoginRefused("no peer certificate")
            return name, None
        if mechanism == "PLAIN":
            # authzid NUL authcid NUL passwd (RFC 4616). As RabbitMQ, no authorization
            # identity: a client may not ask to act as another user than it logs in as.
            parts = response.split(b"\x00")
            if len(parts) != 3:
                raise LoginRefused("response is not NUL, user name, NUL, password")
            authzid, username, password = (part.decode(errors="replace") for part in parts)
            if authzid:
                raise LoginRefused(
                    f"user '{username}' - authorization identity '{authzid}' is not supported"
                )
            return username, password
        if mechanism == "AMQPLAIN":
            try:
                data = LONG.pack(len(response)) + response
                check_nesting(data, 0)
                _, table = decode.field_table(data)
            except Exception:
                raise LoginRefused("response is not a field table") from None
            login, secret = table.get("LOGIN"), table.get("PASSWORD")
            if not isinstance(login, str | bytes) or not isinstance(secret, str | bytes):
                raise LoginRefused("response lacks LOGIN or PASSWORD")
            return _text(login).decode(errors="replace"), _text(secret).decode(errors="replace")
        raise LoginRefused(f"unknown authentication mechanism '{mechanism}'")

    def _tune_ok(self, method: commands.Connection.TuneOk) -> None:
        largest = self.broker.settings.frame_max
        frame_max = method.frame_max or largest
        if frame_max < FRAME_MIN_SIZE:
            raise NotAllowed(f"frame_max={frame_max} < {FRAME_MIN_SIZE} min size")
        if frame_max > largest:
            raise NotAllowed(f"frame_max={frame_max} > {largest} max size")
        self.frame_max = frame_max
        self.max_body = frame_max - FRAME_OVERHEAD
        if method.channel_max:
            self.channel_max = min(method.channel_max, self.channel_max)
        self.heartbeat = method.heartbeat
        self._state = AWAIT_OPEN
        self.timers_changed = True

    def _open(self, method: commands.Connection.Open) -> None:
        vhost = self.broker.vhosts.get(method.virtual_host)
        if vhost is None:
            raise NotAllowed(f"vhost {method.virtual_host} not found")
        user = self.user.name if self.user else ""
        # RabbitMQ 3.10's order: the vhost's connection limit, the user's, then permissions
        self.broker.limits.open_connection(self, user, vhost.name)
        if self.user is not None:
            try:
                self.broker.access.check_vhost(self.user.name, vhost.name)
            except NotAllowed:
                log.warning(
                    "login refused: user '%s' has no access to vhost '%s' (connection %s)",
                    self.user.name,
                    printable(vhost.name),
                    self.name,
                )
                raise
        self.vhost = vhost
        self._state = OPEN
        self.timers_changed = True
        self.write(method_frame(0, commands.Connection.OpenOk()))
        log.info(
            "accepted connection %s (user '%s', vhost '%s', client %s)",
            self.name,
            user,
            vhost.name,
            self.client_properties.get("product", "?"),
        )

    def _channel_method(self, number: int, method: Any) -> None:
        channel = self.channels.get(number)
        if channel is None:
            if isinstance(method, commands.Channel.Open):
                self.channels[number] = Channel(self, number)
                self.write(method_frame(number, commands.Channel.OpenOk()))
                return
            raise ChannelError(f"expected 'channel.open' on channel {number}")
        if channel.closing:
            if isinstance(method, commands.Channel.CloseOk):
                self.forget_channel(channel)
            elif isinstance(method, commands.Channel.Close):
                self.write(method_frame(number, commands.Channel.CloseOk()))
            return
        handler = CHANNEL_HANDLERS.get(type(method))
        if handler is None:
            if isinstance(method, commands.Channel.Open):
                raise ChannelError(f"second 'channel.open' seen on channel {number}")
            raise CommandInvalid(f"unexpected method {method.name} on channel {number}")
        handler(self, channel, method)

    # -- permissions ----------------------------------------------------------------------

    def check(self, kind: Kind, resource: str, name: str) -> None:
        """403 unless the user may ``kind`` (configure, write, read) the resource ``name``."""
        user = self.user.name if self.user is not None else ""
        self.broker.access.check(user, self.vhost.name, kind, resource, name)

    def check_topic(self, kind: TopicKind, exchange_name: str, routing_key: str) -> bool:
        """403 unless the user's topic permission on the topic exchange allows ``routing_key``
        (RabbitMQ's check on publish, and on binding from the exchange). True if no topic
        permission applies to that exchange, so the answer holds for every routing key."""
        access = self.broker.access
        user = self.user.name if self.user is not None else ""
        if access.topic_permission(user, self.vhost.name, exchange_name) is None:
            return True
        exchange = self.vhost.exchanges.get(exchange_name)
        if exchange is None:
            return False  # 404 comes next; it may be declared a topic exchange later
        if exchange.type_name != TOPIC_EXCHANGE_TYPE:
            return True
        access.check_topic(user, self.vhost.name, kind, exchange_name, routing_key)
        return False

    # -- errors and closing ---------------------------------------------------------------

    def _error(self, error: BrokerError, number: int, class_id: int, method_id: int) -> None:
        if error.connection_level or number == 0 or number not in self.channels:
            self._connection_error(error, class_id, method_id)
            return
        channel = self.channels[number]
        text = printable(error.reply_text)
        log.info("channel error on connection %s, channel %d: %s", self.name, number, text)
        channel.release()
        self.confirm_pending.discard(channel)
        self.write(close_frame(number, error.reply_code, text, class_id, method_id))

    def _connection_error(self, error: BrokerError, class_id: int, method_id: int) -> None:
        if self._close_deadline is not None or self._closed:
            return
        level = logging.INFO if isinstance(error, ConnectionForced) else logging.WARNING
        text = printable(error.reply_text)
        log.log(level, "closing connection %s: %s", self.name, text)
        self._release_all()
        self.write(close_frame(0, error.reply_code, text, class_id, method_id))
        if self._state != OPEN and isinstance(error, ConnectionAccessRefused):
            self._closed = True  # as RabbitMQ: no close-ok awaited after a refused login
            return
        self._close_deadline = time.monotonic() + CLOSE_TIMEOUT
        self.timers_changed = True

    def _frame_error(self, text: str, class_id: int = 0, method_id: int = 0) -> None:
        """Framing is broken: nothing after this can be parsed. Close and stop reading."""
        self._connection_error(FrameError(text), class_id, method_id)
        self._closed = True

    def _while_closing(
        self, frame_type: int, number: int, data: bytes, start: int, end: int
    ) -> None:
        """After connection.close was sent, only close and close-ok matter."""
        if frame_type != FRAME_METHOD or number != 0:
            return
        key = data[start : start + 4]
        if key == METHOD_ID.pack(10, 51):
            self._closed = True
        elif key == METHOD_ID.pack(10, 50):
            self.write(method_frame(0, commands.Connection.CloseOk()))
            self._closed = True

    def _release_all(self) -> None:
        if self._released:
            return
        self._released = True
        for channel in list(self.channels.values()):
            if not channel.closing:
                channel.release()
        self.confirm_pending.clear()
        for vhost in self.broker.vhosts.values():
            vhost.connection_closed(self)
        self.broker.limits.connection_closed(self)
        self.broker.connections.discard(self)


# -- channel method handlers (cold path) ----------------------------------------------------


def _text_argument(arguments: dict[str, Any] | None, key: str) -> str | None:
    """A string argument (an exchange name) as RabbitMQ reads one for a permission check."""
    value = (arguments or {}).get(key)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


Handler = Callable[[AMQPConnection, Channel, Any], None]


def _channel_close(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.release()
    connection.confirm_pending.discard(channel)
    connection.forget_channel(channel)
    connection.write(method_frame(channel.number, commands.Channel.CloseOk()))


def _channel_flow(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.flow_active = bool(method.active)
    channel.update_paused()
    channel.send(commands.Channel.FlowOk(method.active))


def _exchange_declare(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    name = method.exchange
    if not method.passive and name:  # the default exchange is refused by name, first
        connection.check("configure", "exchange", name)
        alternate = _text_argument(method.arguments, "alternate-exchange")
        if alternate is not None and name not in channel.vhost.exchanges:
            connection.check("read", "exchange", name)
            connection.check("write", "exchange", alternate)
    channel.vhost.declare_exchange(
        method.exchange,
        method.exchange_type,
        passive=method.passive,
        durable=method.durable,
        auto_delete=method.auto_delete,
        internal=method.internal,
        arguments=method.arguments,
    )
    if not method.nowait:
        channel.send(commands.Exchange.DeclareOk())


def _exchange_delete(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    name = method.exchange
    if name and not name.startswith("amq."):  # those are refused by name, first
        connection.check("configure", "exchange", name)
    channel.vhost.delete_exchange(name, if_unused=method.if_unused)
    if not method.nowait:
        channel.send(commands.Exchange.DeleteOk())


def _exchange_binding(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    """exchange.bind and exchange.unbind (exchange-to-exchange bindings)."""
    vhost = channel.vhost
    connection.check("write", "exchange", method.destination)
    if method.destination == "" or method.source == "":
        raise AccessRefused("operation not permitted on the default exchange")
    connection.check("read", "exchange", method.source)
    connection.check_topic("read", method.source, method.routing_key)
    if isinstance(method, commands.Exchange.Bind):
        destination = vhost.get_exchange(method.destination)
        vhost.bind(destination, method.source, method.routing_key, method.arguments)
        reply: Any = commands.Exchange.BindOk()
    else:
        vhost.unbind_exchange(
            method.destination, method.source, method.routing_key, method.arguments
        )
        reply = commands.Exchange.UnbindOk()
    if not method.nowait:
        channel.send(reply)


def _queue_declare(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    if method.passive and method.queue == reply_to.PSEUDO_QUEUE:  # exists, as in RabbitMQ
        connection.write(queue_declare_ok_frame(channel.number, method.queue, 0, 0))
        return
    name, generated = method.queue, False
    if not method.passive:
        if not name:  # named first, so that the permission is checked on the name it gets
            name, generated = server_generated_name("amq.gen-"), True
        elif name.startswith("amq."):
            raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        connection.check("configure", "queue", name)
        dead_letter_exchange = _text_argument(method.arguments, "x-dead-letter-exchange")
        if dead_letter_exchange is not None and name not in channel.vhost.queues:
            connection.check("read", "queue", name)
            connection.check("write", "exchange", dead_letter_exchange)
    queue = channel.vhost.declare_queue(
        name,
        generated=generated,
        passive=method.passive,
        durable=method.durable,
        exclusive=method.exclusive,
        auto_delete=method.auto_delete,
        arguments=method.arguments,
        owner=connection,
    )
    channel.last_queue = queue.name
    if not method.nowait:
        connection.write(
            queue_declare_ok_frame(
                channel.number, queue.name, queue.message_count, queue.consumer_count
            )
        )


def _check_queue_binding(connection: AMQPConnection, channel: Channel, method: Any) -> str:
    """The queue's name, once the user may write to it and read from the exchange."""
    name = channel._queue_name(method.queue)
    connection.check("write", "queue", name)
    if method.exchange == "":
        raise AccessRefused("operation not permitted on the default exchange")
    connection.check("read", "exchange", method.exchange)
    connection.check_topic("read", method.exchange, method.routing_key)
    return name


def _queue_bind(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    queue = channel._queue(_check_queue_binding(connection, channel, method))
    channel.vhost.bind(queue, method.exchange, method.routing_key, method.arguments)
    if not method.nowait:
        channel.send(commands.Queue.BindOk())


def _queue_unbind(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.vhost.unbind_queue(
        _check_queue_binding(connection, channel, method),
        method.exchange,
        method.routing_key,
        method.arguments,
        owner=connection,
    )
    channel.send(commands.Queue.UnbindOk())


def _queue_purge(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    name = channel._queue_name(method.queue)
    connection.check("read", "queue", name)
    count = channel.vhost.purge_queue(name, connection)
    if not method.nowait:
        channel.send(commands.Queue.PurgeOk(count))


def _queue_delete(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    name = channel._queue_name(method.queue)
    connection.check("configure", "queue", name)
    count = channel.vhost.delete_queue(
        name,
        if_unused=method.if_unused,
        if_empty=method.if_empty,
        owner=connection,
    )
    if not method.nowait:
        channel.send(commands.Queue.DeleteOk(count))


def _basic_qos(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.qos(method)


def _basic_consume(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.consume(method)


def _basic_cancel(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.cancel(method.consumer_tag, method.nowait)


def _basic_publish(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    if method.immediate:
        raise NotImplementedFeature("immediate=true")
    route = short_string(method.exchange) + short_string(method.routing_key)
    channel.start_content(method.exchange, method.routing_key, method.mandatory, route)


def _basic_get(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.get(method)


def _basic_ack(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.ack(method.delivery_tag, method.multiple)


def _basic_reject(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.reject(method.delivery_tag, False, method.requeue)


def _basic_nack(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.reject(method.delivery_tag, method.multiple, method.requeue)


def _basic_recover(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.recover(method.requeue)
    if isinstance(method, commands.Basic.Recover):
        channel.send(commands.Basic.RecoverOk())


def _confirm_select(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.select_confirm(method.nowait)


def _tx_select(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.select_tx()


def _tx_commit(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.commit()


def _tx_rollback(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    channel.rollback()


def _ignore(connection: AMQPConnection, channel: Channel, method: Any) -> None:
    pass


CHANNEL_HANDLERS: dict[type, Handler] = {
    commands.Channel.Close: _channel_close,
    commands.Channel.CloseOk: _ignore,
    commands.Channel.Flow: _channel_flow,
    commands.Channel.FlowOk: _ignore,
    commands.Exchange.Declare: _exchange_declare,
    commands.Exchange.Delete: _exchange_delete,
    commands.Exchange.Bind: _exchange_binding,
    commands.Exchange.Unbind: _exchange_binding,
    commands.Queue.Declare: _queue_declare,
    commands.Queue.Bind: _queue_bind,
    commands.Queue.Unbind: _queue_unbind,
    commands.Queue.Purge: _queue_purge,
    commands.Queue.Delete: _queue_delete,
    commands.Basic.Qos: _basic_qos,
    commands.Basic.Consume: _basic_consume,
    commands.Basic.Cancel: _basic_cancel,
    commands.Basic.Publish: _basic_publish,
    commands.Basic.Get: _basic_get,
    commands.Basic.Ack: _basic_ack,
    commands.Basic.Reject: _basic_reject,
    commands.Basic.Nack: _basic_nack,
    commands.Basic.Recover: _basic_recover,
    commands.Basic.RecoverAsync: _basic_recover,
    commands.Confirm.Select: _confirm_select,
    commands.Tx.Select: _tx_select,
    commands.Tx.Commit: _tx_commit,
    commands.Tx.Rollback: _tx_rollback,
}
