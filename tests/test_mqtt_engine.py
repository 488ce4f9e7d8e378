"""The sans-IO MQTT engine driven by hand: bytes in, bytes out, no sockets.

Each script runs fed whole and byte by byte; the engine must answer with the same bytes."""

from __future__ import annotations

import pytest
from mqtt_helpers import ack_packet, connect_packet, publish_packet, subscribe_packet

import warrenmq
from warrenmq.transports.mqtt import MQTTConnection

pytestmark = pytest.mark.warrenmq_only

CONNACK_OK = b"\x20\x02\x00\x00"


def run(script: list[bytes], bytewise: bool) -> tuple[list[bytes], bool]:
    """Feed each step; return the engine's output after each, and whether it closed."""
    broker = warrenmq.Broker(warrenmq.Settings(amqp_port=0))
    engine = MQTTConnection(broker, ("127.0.0.1", 5000))
    outputs = []
    for data in script:
        if bytewise:
            for index in range(len(data)):
                engine.receive_data(data[index : index + 1])
        else:
            engine.receive_data(data)
        outputs.append(bytes(engine.data_to_send()))
    return outputs, engine.closed


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_subscribe_publish_to_itself_and_puback(bytewise: bool) -> None:
    script = [
        connect_packet("engine", username="guest", password="guest"),
        subscribe_packet(1, ("a/+", 1)),
        publish_packet("a/b", b"payload", qos=1, packet_id=5),
        ack_packet(4, 1),  # PUBACK of the delivery (the engine's first packet id)
        b"\xc0\x00",  # PINGREQ
        b"\xe0\x00",  # DISCONNECT
    ]
    outputs, closed = run(script, bytewise)
    assert outputs[0] == CONNACK_OK
    assert outputs[1] == b"\x90\x03\x00\x01\x01"  # SUBACK, QoS 1 granted
    # the delivery at QoS 1 with packet id 1 (routed at once), then the PUBACK of the publish,
    # which comes once the message is in its queues
    assert outputs[2] == b"\x32\x0e\x00\x03a/b\x00\x01payload" + b"\x40\x02\x00\x05"
    assert outputs[3] == b""
    assert outputs[4] == b"\xd0\x00"
    assert closed
    assert (outputs, closed) == run(script, not bytewise)


@pytest.mark.parametrize(
    "bad",
    [
        b"\x30\xff\xff\xff\xff\x01",  # a remaining length of five bytes
        b"\x82\x02\x00\x01",  # SUBSCRIBE without a filter
        b"\x36\x05\x00\x01a\x00\x01",  # PUBLISH with QoS 3
        b"\x10\x00",  # a second CONNECT
    ],
)
def test_malformed_input_closes_the_connection(bad: bytes) -> None:
    outputs, closed = run([connect_packet("engine"), bad], bytewise=False)
    assert outputs == [CONNACK_OK, b""]
    assert closed
