"""MQTT sessions across broker restarts with the disk store: persistent sessions, QoS 2
exchanges stopped half-way in both directions (MQTT 3.1.1 4.3.3, 4.4), wills and retained
messages, and exactly once counted end to end with paho-mqtt. Each test restarts its own
broker on the same data directory."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from line_reader import LineReader
from mqtt_helpers import TIMEOUT, Client, MQTTAddress, RawClient, ack_packet, publish_packet
from mqtt_helpers import subscribe_packet as subscribe

from warrenmq.broker import Settings
from warrenmq.testing import RunningBroker, running_broker

pytestmark = pytest.mark.warrenmq_only

PUBACK, PUBREC, PUBREL, PUBCOMP = 4, 5, 6, 7


@contextmanager
def disk_broker(data_dir: Path) -> Iterator[MQTTAddress]:
    settings = Settings(host="127.0.0.1", amqp_port=0, mqtt_port=0, store="disk", data_dir=data_dir)
    with running_broker(settings) as running:
        yield address(running)


def address(running: RunningBroker) -> MQTTAddress:
    info = next(i for i in running.broker.listeners if i.spec.protocol == "mqtt")
    return MQTTAddress(info.host, info.port)


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def packet_id_of(publish: bytes) -> int:
    """The packet id of a QoS 1 or 2 PUBLISH body."""
    topic_size = int.from_bytes(publish[:2], "big")
    return int.from_bytes(publish[2 + topic_size : 4 + topic_size], "big")


def ident(packet_id: int) -> bytes:
    return packet_id.to_bytes(2, "big")


def test_a_persistent_session_without_subscriptions_is_present_after_a_restart(
    tmp_path: Path, unique: str
) -> None:
    with disk_broker(tmp_path) as mqtt:
        raw = RawClient(mqtt)
        assert raw.connect(unique, clean=False) == b"\x00\x00"
        raw.close()
    with disk_broker(tmp_path) as mqtt:
        raw = RawClient(mqtt)
        assert raw.connect(unique, clean=False) == b"\x01\x00"  # session present
        raw.close()
        raw = RawClient(mqtt)
        assert raw.connect(unique, clean=True) == b"\x00\x00"  # discards it
        raw.close()
    with disk_broker(tmp_path) as mqtt:
        raw = RawClient(mqtt)
        assert raw.connect(unique, clean=False) == b"\x00\x00"  # gone for good
        raw.close()


def test_inbound_qos2_released_after_a_restart_is_delivered_once(
    tmp_path: Path, unique: str
) -> None:
    """PUBLISH and PUBREC, then the broker restarts before PUBREL: the client sends the
    PUBLISH again (DUP), which must not be routed a second time."""
    with disk_broker(tmp_path) as mqtt:
        sub = RawClient(mqtt)
        sub.connect(f"{unique}-s", clean=False)
        sub.send(subscribe(1, (f"{unique}/#", 2)))
        assert sub.read() == (0x90, b"\x00\x01\x02")
        sub.close()
        pub = RawClient(mqtt)
        assert pub.connect(f"{unique}-p", clean=False) == b"\x00\x00"
        pub.send(publish_packet(f"{unique}/once", b"once", qos=2, packet_id=9))
        assert pub.read() == (0x50, ident(9))  # PUBREC: the broker owns it now
        pub.close()  # gone before PUBREL
    with disk_broker(tmp_path) as mqtt:
        pub = RawClient(mqtt)
        assert pub.connect(f"{unique}-p", clean=False) == b"\x01\x00"
        pub.send(publish_packet(f"{unique}/once", b"once", qos=2, packet_id=9, dup=True))
        assert pub.read() == (0x50, ident(9))
        pub.send(ack_packet(PUBREL, 9))
        assert pub.read() == (0x70, ident(9))  # PUBCOMP
        pub.send(publish_packet(f"{unique}/marker", b"marker", qos=1, packet_id=10))
        assert pub.read() == (0x40, ident(10))
        sub = RawClient(mqtt)
        assert sub.connect(f"{unique}-s", clean=False) == b"\x01\x00"
        payloads = []
        while not payloads or payloads[-1] != b"marker":
            first, body = sub.read()
            assert first & 0xF0 == 0x30
            payloads.append(body[4 + int.from_bytes(body[:2], "big") :])
            sub.send(ack_packet(PUBREC if first & 6 == 4 else PUBACK, packet_id_of(body)))
        assert payloads == [b"once", b"marker"]
        pub.close()
        sub.close()


def test_outbound_qos2_after_pubrec_gets_pubrel_not_the_message_after_a_restart(
    tmp_path: Path, unique: str
) -> None:
    """The client PUBRECs a QoS 2 delivery; the broker restarts before PUBCOMP: on
    reconnect it sends PUBREL for that packet id, and not the message again."""
    with disk_broker(tmp_path) as mqtt:
        sub = RawClient(mqtt)
        sub.connect(f"{unique}-s", clean=False)
        sub.send(subscribe(1, (f"{unique}/#", 2)))
        assert sub.read() == (0x90, b"\x00\x01\x02")
        pub = Client(mqtt, f"{unique}-p")
        pub.connect()
        pub.publish(f"{unique}/q2", b"exactly once", qos=2)
        pub.close()
        first, body = sub.read()
        assert first == 0x34 and body.endswith(b"exactly once")
        packet_id = packet_id_of(body)
        sub.send(ack_packet(PUBREC, packet_id))
        assert sub.read() == (0x62, ident(packet_id))  # PUBREL
        sub.close()  # gone before PUBCOMP
    with disk_broker(tmp_path) as mqtt:
        sub = RawClient(mqtt)
        assert sub.connect(f"{unique}-s", clean=False) == b"\x01\x00"
        assert sub.read() == (0x62, ident(packet_id))  # PUBREL again, not the PUBLISH
        sub.send(ack_packet(PUBCOMP, packet_id))
        pub = Client(mqtt, f"{unique}-p")
        pub.connect()
        pub.publish(f"{unique}/marker", b"marker", qos=2)
        pub.close()
        first, body = sub.read()
        assert first == 0x34 and body.endswith(b"marker")  # nothing came before it
        sub.close()
    with disk_broker(tmp_path) as mqtt:  # and the finished exchange stays finished
        sub = RawClient(mqtt)
        assert sub.connect(f"{unique}-s", clean=False) == b"\x01\x00"
        first, body = sub.read()  # the marker was never PUBREC'd: it comes again
        assert first == 0x3C and body.endswith(b"marker")
        sub.close()


def test_outbound_qos2_before_pubrec_is_sent_again_with_its_packet_id_after_a_restart(
    tmp_path: Path, unique: str
) -> None:
    """A receiver that stored the packet id of a QoS 2 PUBLISH (method B of 4.3.3) knows a
    resend by its packet id: after a restart the broker must resend it with the same one."""
    with disk_broker(tmp_path) as mqtt:
        sub = RawClient(mqtt)
        sub.connect(f"{unique}-s", clean=False)
        sub.send(subscribe(1, (f"{unique}/#", 2)))
        assert sub.read() == (0x90, b"\x00\x01\x02")
        pub = Client(mqtt, f"{unique}-p")
        pub.connect()
        pub.publish(f"{unique}/q2", b"finished", qos=2)
        first, body = sub.read()  # one exchange finished, so later packet ids are not 1, 2...
        sub.send(ack_packet(PUBREC, packet_id_of(body)))
        assert sub.read()[0] == 0x62
        sub.send(ack_packet(PUBCOMP, packet_id_of(body)))
        for n in range(3):
            pub.publish(f"{unique}/q2", b"m%d" % n, qos=2)
        pub.close()
        first_ids = []
        for n in range(3):
            first, body = sub.read()
            assert first == 0x34 and body.endswith(b"m%d" % n)
            first_ids.append(packet_id_of(body))
        sub.close()  # no PUBREC for any
    with disk_broker(tmp_path) as mqtt:
        sub = RawClient(mqtt)
        assert sub.connect(f"{unique}-s", clean=False) == b"\x01\x00"
        for n in range(3):
            first, body = sub.read()
            assert first == 0x3C and body.endswith(b"m%d" % n)  # DUP
            assert packet_id_of(body) == first_ids[n]
        for packet_id in first_ids:
            sub.send(ack_packet(PUBREC, packet_id))
            assert sub.read() == (0x62, ident(packet_id))
            sub.send(ack_packet(PUBCOMP, packet_id))
        sub.close()


def test_wills_and_retained_messages_across_a_restart(tmp_path: Path, unique: str) -> None:
    """A will published while its subscriber was away waits in the persistent session across
    a restart; a will whose client was still connected when the broker stopped is not
    published; retained messages (the will's included) come back."""
    with disk_broker(tmp_path) as mqtt:
        sub = Client(mqtt, f"{unique}-s", clean=False)
        assert sub.connect() == (0, False)
        assert sub.subscribe((f"{unique}/will/#", 1)) == [1]
        sub.close()
        gone = Client(mqtt, f"{unique}-gone", will=(f"{unique}/will/gone", b"gone", 1))
        gone.paho.will_set(f"{unique}/will/gone", b"gone", 1, retain=True)
        assert gone.connect() == (0, False)
        gone.drop()  # abrupt: the will is published
        stays = Client(mqtt, f"{unique}-stays", will=(f"{unique}/will/stays", b"stays", 1))
        assert stays.connect() == (0, False)
    # the broker stopped with "stays" connected
    stays.drop()
    with disk_broker(tmp_path) as mqtt:
        back = Client(mqtt, f"{unique}-s", clean=False)
        assert back.connect() == (0, True)
        got = back.next()
        assert (got.topic, got.payload, got.qos) == (f"{unique}/will/gone", b"gone", 1)
        back.publish(f"{unique}/will/marker", b"marker", qos=1)
        assert back.next().payload == b"marker"  # no will of "stays"
        back.close()
        late = Client(mqtt, f"{unique}-late")
        assert late.connect() == (0, False)
        late.subscribe((f"{unique}/will/+", 1))
        got = late.next()
        assert (got.topic, got.payload, got.retain) == (f"{unique}/will/gone", b"gone", True)
        late.close()


class Counting:
    """A paho client with a persistent session whose network loop the test drives, so that
    it survives the broker going away and reconnects (to a new port) with its session."""

    def __init__(self, client_id: str) -> None:
        self.paho = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        self.paho.max_inflight_messages_set(20)
        self.received: Counter[bytes] = Counter()
        self.connected = threading.Event()
        self.paho.on_message = lambda c, u, m: self.received.update([m.payload])
        self.paho.on_connect = lambda *args: self.connected.set()
        self.paho.on_disconnect = lambda *args: self.connected.clear()

    def connect(self, mqtt: MQTTAddress) -> None:
        self.paho.connect(mqtt.host, mqtt.port, 60)
        self.paho.loop_start()
        assert self.connected.wait(TIMEOUT)

    def stop(self) -> None:
        self.paho.loop_stop()
        sock = self.paho.socket()
        if sock is not None:
            sock.close()


def test_qos2_exactly_once_end_to_end_across_a_restart(tmp_path: Path, unique: str) -> None:
    """paho publisher and subscriber at QoS 2 with persistent sessions; the broker restarts
    in the middle of the stream and both reconnect: every message arrives exactly once."""
    total = 300
    sub, pub = Counting(f"{unique}-s"), Counting(f"{unique}-p")
    with disk_broker(tmp_path) as mqtt:
        sub.connect(mqtt)
        done = threading.Event()
        sub.paho.subscribe(f"{unique}/n", 2)
        sub.paho.on_subscribe = lambda *args: done.set()
        assert done.wait(TIMEOUT)
        pub.connect(mqtt)
        infos = [pub.paho.publish(f"{unique}/n", b"%d" % n, qos=2) for n in range(total // 2)]
        wait_until(lambda: sum(sub.received.values()) >= 50, timeout=TIMEOUT)
        pub.stop()
        sub.stop()
    with disk_broker(tmp_path) as mqtt:
        pub.connect(mqtt)
        infos += [
            pub.paho.publish(f"{unique}/n", b"%d" % n, qos=2) for n in range(total // 2, total)
        ]
        sub.connect(mqtt)
        wait_until(lambda: all(info.is_published() for info in infos), timeout=2 * TIMEOUT)
        wait_until(lambda: len(sub.received) == total, timeout=2 * TIMEOUT)
        pub.paho.publish(f"{unique}/n", b"marker", qos=2).wait_for_publish(TIMEOUT)
        wait_until(lambda: sub.received[b"marker"] == 1, timeout=TIMEOUT)
        pub.paho.disconnect()
        sub.paho.disconnect()
        pub.stop()
        sub.stop()
    duplicated = {payload: n for payload, n in sub.received.items() if n != 1}
    assert not duplicated
    assert set(sub.received) == {b"%d" % n for n in range(total)} | {b"marker"}


# -- kill -9 -------------------------------------------------------------------------------


@contextmanager
def killable_broker(data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], MQTTAddress]]:
    """``warrenmq run`` in a subprocess, so that the test can SIGKILL it."""
    process = subprocess.Popen(
        [
            sys.executable, "-m", "warrenmq", "run", "--port", "0", "--mqtt-port", "0",
            "--data-dir", str(data_dir), "--log-level", "info",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        line = LineReader(process.stderr).wait_for("listening for mqtt", 20.0)
        found = re.search(r":(\d+)\s*$", line)
        assert found, line
        yield process, MQTTAddress("127.0.0.1", int(found.group(1)))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(TIMEOUT)


def test_qos2_acknowledgements_survive_kill_9(tmp_path: Path, unique: str) -> None:
    """PUBREC and PUBREL are sent only once the store has made durable what they promise:
    the broker killed right after each still knows, after a restart, the packet id it
    PUBREC'd (the resent PUBLISH is not routed again) and the delivery the client PUBREC'd
    (PUBREL comes again, not the message)."""
    with killable_broker(tmp_path) as (process, mqtt):
        sub = RawClient(mqtt)
        assert sub.connect(f"{unique}-s", clean=False) == b"\x00\x00"
        sub.send(subscribe(1, (f"{unique}/#", 2)))
        assert sub.read() == (0x90, b"\x00\x01\x02")
        pub = RawClient(mqtt)
        assert pub.connect(f"{unique}-p", clean=False) == b"\x00\x00"
        pub.send(publish_packet(f"{unique}/once", b"once", qos=2, packet_id=9))
        assert pub.read() == (0x50, ident(9))  # PUBREC
        first, body = sub.read()
        assert first == 0x34 and body.endswith(b"once")
        delivered_id = packet_id_of(body)
        sub.send(ack_packet(PUBREC, delivered_id))
        assert sub.read() == (0x62, ident(delivered_id))  # PUBREL
        process.send_signal(signal.SIGKILL)
        process.wait(TIMEOUT)
    with killable_broker(tmp_path) as (process, mqtt):
        sub = RawClient(mqtt)
        assert sub.connect(f"{unique}-s", clean=False) == b"\x01\x00"
        assert sub.read() == (0x62, ident(delivered_id))  # PUBREL again, not the PUBLISH
        sub.send(ack_packet(PUBCOMP, delivered_id))
        pub = RawClient(mqtt)
        assert pub.connect(f"{unique}-p", clean=False) == b"\x01\x00"
        pub.send(publish_packet(f"{unique}/once", b"once", qos=2, packet_id=9, dup=True))
        assert pub.read() == (0x50, ident(9))  # acknowledged, not routed again
        pub.send(ack_packet(PUBREL, 9))
        assert pub.read() == (0x70, ident(9))
        pub.send(publish_packet(f"{unique}/marker", b"marker", qos=1, packet_id=10))
        assert pub.read() == (0x40, ident(10))
        first, body = sub.read()
        assert first == 0x32 and body.endswith(b"marker")  # QoS 1, and nothing before it
        sub.close()
        pub.close()
