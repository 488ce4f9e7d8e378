"""One bridge: a paho-mqtt client connection to a remote MQTT broker, and the local side in
the broker's core.

Out (local to remote): a durable queue, ``mqtt-bridge.NAME``, bound to ``amq.topic`` with the
out rules' local filters, consumed through a core ``Session`` while the remote is connected.
A QoS 1/2 delivery is settled (acked in the queue) only when paho reports the remote's PUBACK
(PUBCOMP for QoS 2), so a message waits in the queue, and in the store for a persistent one,
until the remote has it. Paho keeps its unacknowledged messages across reconnections and sends
them again, flagged dup; after a broker restart the queue delivers them again: QoS 1's
at-least-once, never a loss.

In (remote to local): paho acknowledges a message (manual acks) only once it is published
into ``amq.topic`` and the store has made it durable (``Store.when_synced``).

Threads: paho runs its network loop in a thread of its own, and calls back from it while
holding its own locks. Every callback only hands its arguments to the broker's event loop with
``loop.call_soon_threadsafe`` (never waits on it), and everything else (queues, sessions,
counters) happens on the event loop. Calls into paho from the loop (``publish``, ``ack``) only
queue packets for its thread. The blocking ``connect`` (DNS, TCP, TLS handshake) and the join
of paho's thread run in worker threads.

Loops: a message that came in through a bridge carries the header ``x-mqtt-bridge`` with the
bridge's name, and that bridge never sends it back out. The remote's echo of what the bridge
published (a bridge both ways on the same topics) is stopped by connecting as a bridge
(``try_private``, mosquitto's protocol-level bit: the remote sends a bridge none of its own
messages); with ``try_private = false`` the bridge drops the echo itself, recognising what it
sent within the last minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import paho.mqtt.client as paho

from warrenmq import Broker, BrokerError, Message, Properties, Queue
from warrenmq.failures import log_failure
from warrenmq.queue import ACK, Entry
from warrenmq.session import Session, SessionConsumer
from warrenmq.transports.mqtt.connection import (
    EXCHANGE,
    PUBLISHED_RETAINED_HEADER,
    QOS_HEADER,
    RETAIN_HEADER,
)
from warrenmq.transports.mqtt.state import TOPIC_HEADER, mqtt_state
from warrenmq.transports.mqtt.topics import BadTopic, check_topic, to_amqp, to_mqtt
from warrenmq.vhost import VirtualHost

from .settings import BridgeSettings

log = logging.getLogger("warrenmq.mqtt_bridge")

#: header of a message that came in through a bridge: the bridge's name
BRIDGE_HEADER = "x-mqtt-bridge"
#: seconds a message sent to the remote is remembered to recognise its echo
ECHO_WINDOW = 60.0
#: seconds to wait for the remote's CONNACK
CONNACK_TIMEOUT = 30.0
#: seconds between checks for cleared resource alarms while acknowledgements are held
ALARM_CHECK_INTERVAL = 0.25


class OutConsumer(SessionConsumer):
    """Takes the bridge queue's messages while the remote is connected (the session is paused
    while it is not), up to ``max_inflight`` unacknowledged."""

    __slots__ = ("bridge",)

    def __init__(self, bridge: Bridge, queue: Queue) -> None:
        super().__init__(
            bridge.session,
            queue,
            f"mqtt-bridge-{bridge.settings.name}",
            prefetch=bridge.settings.max_inflight,
        )
        self.bridge = bridge

    def deliver(self, queue: Queue, message: Message, entry: Entry | None) -> None:
        self.bridge.forward(self, queue, message, entry)

    def cancelled_by_broker(self, queue: Queue) -> None:
        self.bridge.queue_deleted(self)

    def failed(self, queue: Queue, error: BaseException) -> None:
        self.bridge.consumer_failed(self, error)


class Bridge:
    """A bridge's connection, local queue, counters and last error (see the module's doc)."""

    def __init__(self, broker: Broker, settings: BridgeSettings) -> None:
        self.broker = broker
        self.settings = settings
        self.vhost: VirtualHost | None = None
        self.session = Session()
        self.session.paused = True  # until the remote is connected
        self.queue: Queue | None = None
        self.consumer: OutConsumer | None = None
        self.client: paho.Client | None = None
        self.connected = False
        self.connected_since: float | None = None
        #: the remote granted the in rules' subscriptions on this connection
        self.subscribed = False
        #: connections accepted so far, counted on the event loop and (``_paho_generation``)
        #: in paho's thread; an incoming message is acked on its own connection only
        self.generation = 0
        self._paho_generation = 0
        self.forwarded_out = self.forwarded_in = self.dropped = self.reconnects = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        #: paho message id -> delivery tag of the queue's message awaiting the remote's ack
        self.pending: dict[int, int] = {}
        #: (remote topic, hash of the body) -> copies sent whose echo may come back
        self._echoes: dict[tuple[str, int], int] = {}
        self._echo_times: deque[tuple[float, tuple[str, int]]] = deque()
        #: acknowledgements of incoming messages held back while a resource alarm is on
        self._held: list[tuple[int, int, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: anyio.Event | None = None
        self._lost: anyio.Event | None = None
        #: None until CONNACK comes; then "" (accepted) or the reason it was refused
        self._connack_refusal: str | None = None
        self._disconnect_reason = ""

    # -- state ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``warrenmq bridge status`` shows."""
        queue = self.queue
        s = self.settings
        return {
            "name": s.name,
            "remote": f"{s.host}:{s.port}",
            "vhost": s.vhost,
            "client_id": s.client_id,
            "connected": self.connected,
            "connected_since": self.connected_since,
            "subscribed": self.subscribed,
            "queue": queue.name if queue is not None else None,
            "queued": queue.ready_count + queue.unacked_count if queue is not None else 0,
            "inflight": len(self.pending),
            "forwarded_out": self.forwarded_out,
            "forwarded_in": self.forwarded_in,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }

    def _error(self, text: str) -> None:
        if text != self.last_error:
            log.warning("bridge '%s': %s", self.settings.name, text)
        self.last_error = text
        self.last_error_at = time.time()

    # -- lifetime -------------------------------------------------------------------------

    async def run(self) -> None:
        """Attach the local side, then connect and reconnect until cancelled."""
        self._loop = asyncio.get_running_loop()
        vhost = self.broker.vhosts.get(self.settings.vhost)
        if vhost is None:
            self._error(f"no vhost '{self.settings.vhost}': the bridge does not run")
            return
        self.vhost = vhost
        try:
            self._attach()
        except BrokerError as exc:  # a queue of that name with other properties, say
            self._error(f"cannot declare queue '{self.settings.queue_name}': {exc}")
            return
        self.client = self._make_client()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._release_held_acks)
                await self._keep_connected()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop()

    def _attach(self) -> None:
        """Declare the bridge queue and bind it to the out rules' filters (and unbind the
        filters of rules that were removed from the config)."""
        assert self.vhost is not None
        vhost, s = self.vhost, self.settings
        if not s.out_rules:
            return
        queue = vhost.queues.get(s.queue_name) or vhost.declare_queue(s.queue_name, durable=True)
        wanted = {to_amqp(rule.local_filter) for rule in s.out_rules}
        for binding in list(queue.incoming):
            if binding.source.name == EXCHANGE and binding.routing_key not in wanted:
                vhost.unbind(queue, EXCHANGE, binding.routing_key, binding.arguments)
        for key in sorted(wanted):
            vhost.bind(queue, EXCHANGE, key)
        self.queue = queue
        self.consumer = OutConsumer(self, queue)
        self.session.add_consumer(self.consumer)

    def queue_deleted(self, consumer: OutConsumer) -> None:
        """Someone deleted the bridge queue: declare it again, so forwarding goes on."""
        self.session.consumers.pop(consumer.tag, None)
        self.pending.clear()  # those deliveries went with the queue
        self.session.unacked.clear()
        self._error(f"queue '{self.settings.queue_name}' was deleted; declared again")
        assert self._loop is not None
        self._loop.call_soon(self._guarded, self._attach, ())

    def consumer_failed(self, consumer: OutConsumer, error: BaseException) -> None:
        """A delivery raised (a bug): the queue kept the message and detached the consumer;
        attach again a little later, as after a reconnection."""
        log_failure(log, f"bridge '{self.settings.name}': forwarding failed", error)
        self._error(f"forwarding failed: {type(error).__name__}: {error}")
        assert self._loop is not None
        self._loop.call_soon(self._guarded, self._recover, (consumer,))

    def _recover(self, consumer: OutConsumer) -> None:
        """After a failed delivery (outside the queue's delivery): unsettled messages go back
        to the queue, and the bridge consumes again after ``reconnect_delay_max``."""
        self.session.consumers.pop(consumer.tag, None)
        self.session.requeue_all()
        self.pending.clear()
        assert self._loop is not None
        self._loop.call_later(self.settings.reconnect_delay_max, self._guarded, self._attach, ())

    def _make_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            clean_session=s.clean_session,
            protocol=paho.MQTTv311,
            reconnect_on_failure=False,  # reconnections are ours, with backoff and reasons
            manual_ack=True,
        )
        if s.try_private:
            client.enable_bridge_mode()
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls is not None:
            client.tls_set_context(s.tls.context())
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(0)  # the queue's credit bounds what paho holds
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_message = self._paho_message
        client.on_subscribe = self._paho_subscribe
        return client

    async def _keep_connected(self) -> None:
        s = self.settings
        delay = s.reconnect_delay
        while True:
            if await self._connect_once():
                delay = s.reconnect_delay  # it worked: the next failure starts over
            await anyio.sleep(delay)
            delay = min(delay * 2, s.reconnect_delay_max)
            self.reconnects += 1

    async def _connect_once(self) -> bool:
        """One connection, from connect to its loss; True if the remote accepted it."""
        client, s = self.client, self.settings
        assert client is not None
        self._connack, self._lost = anyio.Event(), anyio.Event()
        self._connack_refusal = None
        self._disconnect_reason = ""
        try:
            await anyio.to_thread.run_sync(
                client.connect, s.host, s.port, s.keepalive, abandon_on_cancel=True
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self._error(f"cannot connect to {s.host}:{s.port}: {exc}")
            return False
        client.loop_start()
        try:
            with anyio.move_on_after(CONNACK_TIMEOUT):
                await self._connack.wait()
            refusal = self._connack_refusal
            if refusal == "":
                self._connected()
                await self._lost.wait()
                self._error(f"connection lost: {self._disconnect_reason or 'closed'}")
                return True
            if refusal is None and self._lost.is_set():
                hint = " (if the remote does not take bridges, set try_private = false)"
                self._error(
                    "the remote closed the connection before accepting it: "
                    f"{self._disconnect_reason or 'closed'}" + (hint if s.try_private else "")
                )
            elif refusal is None:
                self._error(f"no CONNACK within {CONNACK_TIMEOUT:.0f} s")
            else:
                self._error(f"the remote refused the connection: {refusal}")
            return False
        finally:
            self._disconnected()
            client.disconnect()
            await anyio.to_thread.run_sync(client.loop_stop)

    async def _stop(self) -> None:
        """At shutdown: unsettled deliveries go back to the queue (paho's copies are dropped
        with it; the queue sends them again next time), and paho's thread ends."""
        self._disconnected()
        self.session.close()
        self.pending.clear()
        client = self.client
        if client is not None:
            client.disconnect()
            await anyio.to_thread.run_sync(client.loop_stop)

    def _connected(self) -> None:
        client, s = self.client, self.settings
        assert client is not None
        self.connected = True
        self.connected_since = time.time()
        log.info("bridge '%s': connected to %s:%d", s.name, s.host, s.port)
        if s.in_rules:
            client.subscribe([(rule.remote_filter, rule.qos) for rule in s.in_rules])
        self.session.paused = False
        self.session.credit_changed()

    def _disconnected(self) -> None:
        if self.connected:
            log.info("bridge '%s': disconnected", self.settings.name)
        self.connected = self.subscribed = False
        self.connected_since = None
        if not self.session.paused:
            self.session.pause()

    # -- paho's thread: hand everything to the event loop ---------------------------------

    def _call(self, function: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: the broker has stopped
            loop.call_soon_threadsafe(self._guarded, function, args)

    def _guarded(self, function: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            function(*args)
        except Exception as exc:
            log_failure(log, f"bridge '{self.settings.name}'", exc)

    def _paho_connect(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        if not code.is_failure:
            # counted here, before paho's thread reads the messages of the new connection
            self._paho_generation += 1
        self._call(self._on_connack, bool(code.is_failure), str(code), self._paho_generation)

    def _paho_disconnect(
        self, client: Any, userdata: Any, flags: Any, code: Any, props: Any
    ) -> None:
        self._call(self._on_lost, str(code))

    def _paho_publish(self, client: Any, userdata: Any, mid: int, code: Any, props: Any) -> None:
        self._call(self._on_published, mid)

    def _paho_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        self._call(
            self._on_message,
            message.topic,
            message.payload,
            message.qos,
            message.retain,
            message.mid,
            self._paho_generation,
        )

    def _paho_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        refused = sum(1 for code in codes if code.is_failure)
        self._call(self._on_suback, refused)

    # -- on the event loop ------------------------------------------------------------------

    def _on_connack(self, refused: bool, reason: str, generation: int) -> None:
        self._connack_refusal = reason if refused else ""
        self.generation = generation
        if self._connack is not None:
            self._connack.set()

    def _on_suback(self, refused: int) -> None:
        if refused:
            self._error(f"the remote refused {refused} of the in rules' subscriptions")
        self.subscribed = self.connected and not refused

    def _on_lost(self, reason: str) -> None:
        self._disconnect_reason = "" if reason == "Unspecified error" else reason
        for event in (self._lost, self._connack):
            if event is not None:
                event.set()

    def forward(
        self, consumer: OutConsumer, queue: Queue, message: Message, entry: Entry | None
    ) -> None:
        """Send one of the bridge queue's messages to the remote (the queue's delivery)."""
        assert entry is not None and self.client is not None
        headers = message.properties.headers or {}
        if headers.get(BRIDGE_HEADER) == self.settings.name:
            queue.ack(entry)  # it came from this remote: do not send it back
            return
        topic = to_mqtt(message.routing_key)
        remote = qos = None
        for rule in self.settings.out_rules:
            remote = rule.to_remote(topic)
            if remote is not None:
                qos = rule.qos
                break
        published = headers.get(QOS_HEADER)
        if isinstance(published, int) and 0 <= published < (qos or 0):
            qos = published
        try:
            if remote is None or qos is None:
                raise BadTopic(f"no out rule maps '{topic}'")
            check_topic(remote)
        except BadTopic as exc:
            queue.ack(entry)
            self.dropped += 1
            self._error(f"message dropped: {exc}")
            return
        if not self.settings.try_private:
            self._remember_echo(remote, message.body)
        # published retained: sent retained, so that the remote keeps it too (as mosquitto)
        retain = bool(headers.get(PUBLISHED_RETAINED_HEADER))
        if qos == 0:  # at most once: settled as soon as paho has it
            self.client.publish(remote, message.body, 0, retain)
            queue.ack(entry)
            self.forwarded_out += 1
            return
        tag = self.session.track(queue, entry, consumer)
        self.pending[self.client.publish(remote, message.body, qos, retain).mid] = tag

    def _on_published(self, mid: int) -> None:
        tag = self.pending.pop(mid, None)
        if tag is None:
            return
        self.forwarded_out += 1
        if tag in self.session.unacked:
            self.session.settle(tag, False, ACK)

    def _on_message(
        self, topic: str, payload: bytes, qos: int, retain: bool, mid: int, generation: int
    ) -> None:
        """A message from the remote: publish it into ``amq.topic``, then ack it."""
        client = self.client
        assert client is not None and self.vhost is not None
        local = None
        for rule in self.settings.in_rules:
            local = rule.to_local(topic)
            if local is not None:
                break
        if local is None or self._is_echo(topic, payload):
            if local is None:
                self.dropped += 1
            self._ack(mid, qos, generation)
            return
        headers = {QOS_HEADER: qos, BRIDGE_HEADER: self.settings.name}
        # a retained one is marked as an MQTT client's retained publish is: bridges get the flag
        live = {**headers, PUBLISHED_RETAINED_HEADER: True} if retain else headers
        properties = Properties(headers=live, delivery_mode=2 if qos else 1)
        message = Message(EXCHANGE, to_amqp(local), payload, properties)
        if retain:
            state = mqtt_state(self.vhost)
            if payload:
                kept = Properties(
                    headers={**headers, RETAIN_HEADER: True, TOPIC_HEADER: local},
                    delivery_mode=2,
                )
                state.retain(local, Message(EXCHANGE, message.routing_key, payload, kept))
            else:
                state.clear_retained(local)
        self.vhost.publish(EXCHANGE, message)
        self.forwarded_in += 1
        if qos:
            self.broker.store.when_synced(lambda: self._ack(mid, qos, generation))

    def _ack(self, mid: int, qos: int, generation: int) -> None:
        """Acknowledge an incoming message, on the connection it came by only (a packet id
        means nothing on another: the remote sends it again, as QoS 1 may)."""
        if not qos or generation != self.generation or not self.connected:
            return
        if self.broker.alarms:
            self._held.append((mid, qos, generation))  # the remote waits: back-pressure
            return
        assert self.client is not None
        self.client.ack(mid, qos)

    async def _release_held_acks(self) -> None:
        """While a resource alarm blocks publishers, incoming QoS 1/2 messages are not
        acknowledged, so the remote stops at its in-flight window; acknowledge them once the
        alarms clear."""
        while True:
            await anyio.sleep(ALARM_CHECK_INTERVAL)
            if self._held and not self.broker.alarms:
                held, self._held = self._held, []
                for mid, qos, generation in held:
                    self._ack(mid, qos, generation)

    # -- echoes (with try_private = false) ----------------------------------------------------

    def _remember_echo(self, topic: str, body: bytes) -> None:
        if not any(rule.to_local(topic) is not None for rule in self.settings.in_rules):
            return  # no in rule takes this topic back
        key = (topic, hash(body))
        self._echoes[key] = self._echoes.get(key, 0) + 1
        now = time.monotonic()
        self._echo_times.append((now + ECHO_WINDOW, key))
        self._expire_echoes(now)

    def _is_echo(self, topic: str, body: bytes) -> bool:
        if not self._echoes:
            return False
        self._expire_echoes(time.monotonic())
        key = (topic, hash(body))
        count = self._echoes.get(key)
        if not count:
            return False
        if count == 1:
            del self._echoes[key]
        else:
            self._echoes[key] = count - 1
        return True

    def _expire_echoes(self, now: float) -> None:
        times, echoes = self._echo_times, self._echoes
        while times and times[0][0] <= now:
            _, key = times.popleft()
            count = echoes.get(key, 0)
            if count <= 1:
                echoes.pop(key, None)
            else:
                echoes[key] = count - 1
