"""MQTT test clients: paho-mqtt wrapped so that a test waits on events with a deadline, and a
tiny raw client over a plain socket for what paho will not send (bad packets, a QoS 2 flow
stopped half-way, a PUBLISH never acknowledged)."""

from __future__ import annotations

import queue
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho

TIMEOUT = 10.0


@dataclass(frozen=True)
class MQTTAddress:
    host: str
    port: int
    #: another broker (mosquitto, say) given by WARRENMQ_TEST_MQTT_EXTERNAL
    external: bool = False
    #: MQTT over WebSocket at this path (paho's transport="websockets"); None: over TCP
    websocket_path: str | None = None
    #: TLS (wss or mqtts) with this client context
    tls: ssl.SSLContext | None = None


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Client:
    """A paho client on its own network thread; every wait has a deadline."""

    def __init__(
        self,
        address: MQTTAddress,
        client_id: str,
        *,
        clean: bool = True,
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, bytes, int] | None = None,
        keepalive: int = 60,
        tls: ssl.SSLContext | None = None,
        bridge: bool = False,
    ) -> None:
        self.address = address
        self.keepalive = keepalive
        self.paho = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean,
            protocol=paho.MQTTv311,
            transport="tcp" if address.websocket_path is None else "websockets",
        )
        if address.websocket_path is not None:
            self.paho.ws_set_options(path=address.websocket_path)
        tls = tls or address.tls
        if tls is not None:
            self.paho.tls_set_context(tls)
        if username is not None:
            self.paho.username_pw_set(username, password)
        if will is not None:
            self.paho.will_set(will[0], will[1], will[2])
        if bridge:  # protocol level 0x84, as mosquitto's bridges with try_private
            self.paho.enable_bridge_mode()
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connacks: queue.Queue[tuple[int, bool]] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.disconnected = threading.Event()
        self.paho.on_message = self._on_message
        self.paho.on_connect = self._on_connect
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_disconnect = self._on_disconnect

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        self.messages.put(Received(message.topic, message.payload, message.qos, message.retain))

    def _on_connect(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        self.connacks.put((code.value, bool(flags.session_present)))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self.subacks.put([code.value for code in codes])

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        # no automatic reconnect (paho's network thread would otherwise reconnect and, with
        # the same client id, take the session back from whoever took it over)
        client.disconnect()
        self.disconnected.set()
        self.connacks.put((-1, False))  # a refusal, or a close before any CONNACK

    def connect(self) -> tuple[int, bool]:
        """CONNECT; returns the CONNACK's (return code, session present); -1 if closed."""
        self.paho.connect(self.address.host, self.address.port, self.keepalive)
        self.paho.loop_start()
        return self.connacks.get(timeout=TIMEOUT)

    def subscribe(self, *filters: tuple[str, int]) -> list[int]:
        self.paho.subscribe(list(filters))
        return self.subacks.get(timeout=TIMEOUT)

    def unsubscribe(self, topic: str) -> None:
        done = threading.Event()
        self.paho.on_unsubscribe = lambda *args: done.set()
        self.paho.unsubscribe(topic)
        assert done.wait(TIMEOUT), "no UNSUBACK"

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish and wait until it is sent (QoS 0) or acknowledged (PUBACK, PUBCOMP)."""
        self.paho.publish(topic, payload, qos, retain).wait_for_publish(TIMEOUT)

    def next(self, timeout: float = TIMEOUT) -> Received:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        """A clean DISCONNECT."""
        self.paho.disconnect()
        self.paho.loop_stop()

    def drop(self) -> None:
        """Go away without DISCONNECT (the socket just closes)."""
        self.paho.loop_stop()
        sock = self.paho.socket()
        if sock is not None:
            sock.close()


# -- a raw client --------------------------------------------------------------------------


def _length(size: int) -> bytes:
    out = bytearray()
    while True:
        byte, size = size % 128, size // 128
        out.append(byte | 0x80 if size else byte)
        if not size:
            return bytes(out)


def _string(data: str | bytes) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return struct.pack(">H", len(raw)) + raw


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _length(len(body)) + body


def connect_packet(
    client_id: str,
    *,
    clean: bool = True,
    keepalive: int = 60,
    level: int = 4,
    name: str = "MQTT",
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    flags = (2 if clean else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    body = _string(name) + bytes((level, flags)) + struct.pack(">H", keepalive)
    body += _string(client_id)
    if level == 5:
        body = _string(name) + bytes((level, flags)) + struct.pack(">H", keepalive) + b"\x00"
        body += _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return packet(0x10, body)


def publish_packet(
    topic: str, payload: bytes, qos: int = 0, packet_id: int = 0, dup: bool = False
) -> bytes:
    first = 0x30 | qos << 1 | (8 if dup else 0)
    body = _string(topic) + (struct.pack(">H", packet_id) if qos else b"") + payload
    return packet(first, body)


def subscribe_packet(packet_id: int, *filters: tuple[str, int]) -> bytes:
    body = struct.pack(">H", packet_id)
    for topic_filter, qos in filters:
        body += _string(topic_filter) + bytes((qos,))
    return packet(0x82, body)


def ack_packet(kind: int, packet_id: int) -> bytes:
    """PUBACK (4), PUBREC (5), PUBREL (6) or PUBCOMP (7)."""
    return packet(kind << 4 | (2 if kind == 6 else 0), struct.pack(">H", packet_id))


class RawClient:
    """A socket that sends bytes and reads whole MQTT packets with a deadline."""

    def __init__(self, address: MQTTAddress, tls: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection((address.host, address.port), timeout=TIMEOUT)
        self.sock = sock if tls is None else tls.wrap_socket(sock, server_hostname="localhost")
        self._buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = self.sock.recv(65536)
        if not data:
            return False
        self._buf += data
        return True

    def read(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """The next packet's (first byte, body); raises EOFError if the server closed."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self._buf) >= 2:
                size, multiplier, index = 0, 1, 1
                while index < len(self._buf):
                    byte = self._buf[index]
                    index += 1
                    size += (byte & 0x7F) * multiplier
                    multiplier *= 128
                    if not byte & 0x80:
                        if len(self._buf) >= index + size:
                            first, body = self._buf[0], self._buf[index : index + size]
                            self._buf = self._buf[index + size :]
                            return first, body
                        break
            if not self._fill(deadline):
                raise EOFError("the server closed the connection")

    def connect(self, client_id: str, **options: Any) -> bytes:
        """CONNECT and return the CONNACK body."""
        self.send(connect_packet(client_id, **options))
        first, body = self.read()
        assert first == 0x20, f"expected CONNACK, got {first:#x}"
        return body

    def closed_by_server(self, timeout: float = TIMEOUT) -> bool:
        """Reads (and discards) until the server closes; False if it did not in time."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self._fill(deadline):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()
