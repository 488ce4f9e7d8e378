"""The roles on the hot path: the windowed publishing loop (AMQP and MQTT), the AMQP producer
with confirms, and the verifying AMQP consumer."""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Callable, Sequence
from time import perf_counter, perf_counter_ns
from typing import Any, Protocol

from bench import wire
from bench.amqp import CHANNEL, BrokerError, Connection

MAX_SEQUENCE = 1 << 31  # a larger sequence number in a body can only be corruption
PACE = 0.001  # seconds: at a fixed rate, one write per this much time's worth of messages


class Consumer:
    """Consumes one queue: counts each sequence number, records latency, acks if manual.

    With manual acks it acks ``multiple=True`` once ``ack_every`` deliveries are pending and
    at the end of every socket read, like a fast real consumer.
    """

    def __init__(
        self,
        conn: Connection,
        queue: str,
        *,
        manual_ack: bool,
        ack_every: int,
        capacity: int,
        on_progress: Callable[[], None],
    ) -> None:
        self.conn = conn
        self.queue = queue
        self.manual_ack = manual_ack
        self.ack_every = max(1, ack_every)
        self.received = 0
        self.malformed = 0
        self.seen = bytearray(capacity)  # per sequence number: how many times it arrived
        self.latencies = array("q")  # ns, one per delivery
        self._last_tag = 0
        self._unacked = 0
        self._on_progress = on_progress
        conn.on_deliver = self._deliver
        conn.after_read = self._after_read

    def _deliver(self, buf: bytearray, pos: int, end: int, n: int) -> int:
        """Parse Basic.Deliver + content header + body frames in place; -1 if incomplete."""
        head = wire.FRAME_HEAD.unpack_from
        p = pos + 11  # past frame header, class id and method id
        p += 1 + buf[p]  # consumer tag
        tag = wire.U64.unpack_from(buf, p)[0]
        h = end + 1
        if n - h <= wire.HEAD_SIZE + wire.CONTENT_HEADER_SIZE:
            return -1
        htype, _, hsize = head(buf, h)
        b = h + wire.HEAD_SIZE + hsize + 1  # first body frame
        if b > n:
            return -1
        if htype != wire.FRAME_HEADER:
            self.conn.fail(BrokerError(f"expected a content header frame, got type {htype}"))
            return n
        body_size = wire.U64.unpack_from(buf, h + 11)[0]
        first = b + wire.HEAD_SIZE
        remaining = body_size
        while remaining > 0:
            if n - b <= wire.HEAD_SIZE:
                return -1
            btype, _, bsize = head(buf, b)
            if btype != wire.FRAME_BODY:
                self.conn.fail(BrokerError(f"expected a body frame, got type {btype}"))
                return n
            b += wire.HEAD_SIZE + bsize + 1
            if b > n:
                return -1
            remaining -= bsize
        if body_size < wire.STAMP.size:
            self.malformed += 1
        else:
            seq, sent_ns = wire.STAMP.unpack_from(buf, first)
            self.latencies.append(perf_counter_ns() - sent_ns)
            try:
                self.seen[seq] += 1
            except IndexError:
                self._grow(seq)
            except ValueError:
                pass  # already seen 255 times: a duplicate either way
        self.received += 1
        if self.manual_ack:
            self._last_tag = tag
            self._unacked += 1
            if self._unacked >= self.ack_every:
                self._ack()
        return b

    def _grow(self, seq: int) -> None:
        if seq >= MAX_SEQUENCE:
            self.malformed += 1
            return
        self.seen.extend(bytes(max(seq + 1, 2 * len(self.seen)) - len(self.seen)))
        self.seen[seq] += 1

    def _ack(self) -> None:
        assert self.conn.transport is not None
        self.conn.transport.write(wire.basic_ack(CHANNEL, self._last_tag, True))
        self._unacked = 0

    def _after_read(self) -> None:
        if self._unacked and self.conn.error is None:
            self._ack()
        self._on_progress()


class RecordingConsumer(Consumer):
    """A Consumer that also records, for checks after the run, the sequence number of every
    delivery in arrival order (``order``, aligned with ``latencies``) and the content header
    (its payload: class id, weight, body size, properties) of every ``keep_every``-th one,
    starting with the first (none if ``keep_every`` is 0)."""

    def __init__(
        self,
        conn: Connection,
        queue: str,
        *,
        manual_ack: bool,
        ack_every: int,
        capacity: int,
        on_progress: Callable[[], None],
        keep_every: int,
    ) -> None:
        super().__init__(
            conn,
            queue,
            manual_ack=manual_ack,
            ack_every=ack_every,
            capacity=capacity,
            on_progress=on_progress,
        )
        self.keep_every = max(0, keep_every)
        self.order = array("Q")
        self.headers: list[bytes] = []

    def _deliver(self, buf: bytearray, pos: int, end: int, n: int) -> int:
        nxt = super()._deliver(buf, pos, end, n)
        if nxt < 0 or self.conn.error is not None:
            return nxt
        header = end + 1 + wire.HEAD_SIZE
        size = wire.FRAME_HEAD.unpack_from(buf, end + 1)[2]
        if wire.U64.unpack_from(buf, header + 4)[0] < wire.STAMP.size:
            return nxt  # malformed: already counted
        if self.keep_every and len(self.order) % self.keep_every == 0:
            self.headers.append(bytes(buf[header : header + size]))
        self.order.append(wire.U64.unpack_from(buf, header + size + 1 + wire.HEAD_SIZE)[0])
        return nxt


class _Conn(Protocol):
    """What the publishing loop needs of a connection (AMQP's or MQTT's)."""

    error: BaseException | None
    writable: asyncio.Event
    transport: asyncio.Transport | None


class _Template(Protocol):
    """A batch of pre-encoded publishes (AMQP's or MQTT's)."""

    batch: int

    def render(self, first_seq: int, count: int, now_ns: int) -> bytes | bytearray: ...


class Publisher:
    """The publishing loop of every scenario, AMQP and MQTT: numbered, timestamped messages
    in batches, one socket write per batch.

    At most ``window`` messages are in flight (published, not yet received by the slowest
    consumer, see ``received``); a subclass may narrow that (``room``). With a ``rate``
    (messages per second) publishing is paced: message n (from 0) goes no sooner than n / rate s
    after the start, in writes of about a millisecond's worth.
    """

    def __init__(
        self,
        conn: _Conn,
        template: _Template,
        consumers: Sequence[Any],
        *,
        total: int | None,
        duration: float | None,
        window: int,
        on_progress: Callable[[], None] | None = None,
        rate: float | None = None,
    ) -> None:
        self.conn = conn
        self.template = template
        self.consumers = consumers  # each with a ``received`` count
        self.total = total
        self.duration = duration
        self.window = window
        self.rate = rate
        self.batch = min(template.batch, window)
        if rate is not None:
            self.batch = min(self.batch, max(1, round(rate * PACE)))
        self.sent = 0
        self.finished = False
        self._wake: asyncio.Future[None] | None = None
        self._on_progress = on_progress

    def received(self) -> int:
        """Messages received by the slowest consumer."""
        return min(c.received for c in self.consumers)

    def room(self) -> int:
        """How many more messages the window allows right now."""
        return self.window - (self.sent - self.received())

    def notify(self) -> None:
        """Wake the publishing loop if it waits and at least half a batch may go."""
        if self._wake is not None and not self._wake.done() and self.room() >= self.batch // 2:
            self._wake.set_result(None)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        writable = self.conn.writable
        batch = self.batch
        start = perf_counter()
        deadline = start + self.duration if self.duration else None
        rate = self.rate
        render = self.template.render
        while True:
            if self.conn.error is not None:
                raise self.conn.error
            left = batch if self.total is None else self.total - self.sent
            if left <= 0 or (deadline is not None and perf_counter() >= deadline):
                break
            count = min(self.room(), left, batch)
            if count < min(batch // 2, left) or count <= 0:
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
                continue
            if not writable.is_set():
                await writable.wait()
                continue
            if rate is not None:
                ahead = start + (self.sent + count - 1) / rate - perf_counter()
                if ahead > 0:  # wait until the last of them is due
                    await asyncio.sleep(ahead)
                    continue
            assert self.conn.transport is not None
            self.conn.transport.write(render(self.sent, count, perf_counter_ns()))
            self.sent += count
            await asyncio.sleep(0)  # let the consumers read
        self.finished = True
        if self._on_progress is not None:
            self._on_progress()


class Producer(Publisher):
    """The AMQP publisher: ``Publisher`` plus publisher confirms, of which at most
    ``confirm_window`` may be outstanding."""

    def __init__(
        self,
        conn: Connection,
        template: wire.PublishTemplate,
        consumers: Sequence[Consumer],
        *,
        total: int | None,
        duration: float | None,
        window: int,
        confirm_window: int | None,
        on_progress: Callable[[], None],
        rate: float | None = None,
    ) -> None:
        super().__init__(
            conn,
            template,
            consumers,
            total=total,
            duration=duration,
            window=min(window, confirm_window or window),
            on_progress=on_progress,
            rate=rate,
        )
        self.window = window
        self.confirm_window = confirm_window
        self.nacked = 0
        self._confirmed_upto = 0  # every delivery tag up to here is confirmed
        self._confirmed_above: set[int] = set()  # confirmed tags beyond it (out of order)
        if confirm_window is not None:
            conn.on_confirm = self._on_confirm

    @property
    def confirmed(self) -> int:
        return self._confirmed_upto + len(self._confirmed_above)

    def room(self) -> int:
        room = super().room()
        if self.confirm_window is not None:
            room = min(room, self.confirm_window - (self.sent - self.confirmed))
        return room

    def _on_confirm(self, tag: int, multiple: bool, nack: bool) -> None:
        before = self.confirmed
        above = self._confirmed_above
        if multiple:
            if tag > self._confirmed_upto:
                self._confirmed_upto = tag
                if above:
                    self._confirmed_above = {t for t in above if t > tag}
        elif tag == self._confirmed_upto + 1:
            tag += 1
            while tag in above:
                above.discard(tag)
                tag += 1
            self._confirmed_upto = tag - 1
        elif tag > self._confirmed_upto:
            above.add(tag)
        if nack:
            self.nacked += self.confirmed - before
        if self._on_progress is not None:
            self._on_progress()
