"""The MQTT engine's cost per message, without sockets: a warrenmq broker's MQTT connections
fed by hand.

One publisher and one subscriber of the same topic (``--qos`` 0 or 1, 64-byte payloads):
the publisher's PUBLISHes arrive in chunks of about one socket read, the subscriber's output
is taken after each chunk and, at QoS 1, PUBACKed in one read, as the bench's subscribers do.
``--subscribers N`` subscribes N clients (a fan-out). Prints the CPU per message. For an
exact comparison, count instructions with callgrind for two sizes and take the difference
(start-up cancels out)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m bench.mqtt_engine --messages 10000 --qos 1
"""

from __future__ import annotations

import argparse
import struct
import time

import warrenmq
from warrenmq.transports.mqtt import MQTTConnection
from warrenmq.transports.mqtt import packets as p

CHUNK = 100  # publishes per read: the bench's window (1,000) spread over a few reads
TOPIC = "bench/mqtt/engine"


def _connect(broker: warrenmq.Broker, client_id: str, port: int) -> MQTTConnection:
    conn = MQTTConnection(broker, ("127.0.0.1", port))
    body = p.utf8("MQTT") + bytes((4, 2)) + p.u16(0) + p.utf8(client_id)
    conn.receive_data(p.packet(p.CONNECT << 4, body))
    if not conn.data_to_send().startswith(b"\x20\x02\x00\x00"):
        raise RuntimeError(f"{client_id}: CONNECT refused")
    return conn


def _pubacks(output: bytes | bytearray) -> bytes:
    """A PUBACK for every QoS 1 PUBLISH in ``output`` (a subscriber's read)."""
    acks = bytearray()
    pos, end = 0, len(output)
    while pos < end:
        first, length, start = p.parse_fixed_header(output, pos) or (0, 0, end)
        if first >> 4 == p.PUBLISH and (first >> 1) & 3:
            topic_end = start + 2 + (output[start] << 8 | output[start + 1])
            acks += b"\x40\x02" + output[topic_end : topic_end + 2]
        pos = start + length
    return bytes(acks)


def run(messages: int, qos: int, subscribers: int) -> tuple[float, int]:
    """CPU seconds per message, and the messages delivered."""
    broker = warrenmq.Broker(warrenmq.Settings(amqp_port=0))
    publisher = _connect(broker, "publisher", 1)
    readers = [_connect(broker, f"subscriber-{n}", 2 + n) for n in range(subscribers)]
    for reader in readers:
        reader.receive_data(
            p.packet(p.SUBSCRIBE << 4 | 2, p.u16(1) + p.utf8(TOPIC) + bytes((qos,)))
        )
        reader.data_to_send()
    payload = b"x" * 64
    topic = p.utf8(TOPIC)
    packet_ids = struct.Struct(">H")
    chunks = [
        b"".join(
            p.packet(
                p.PUBLISH << 4 | qos << 1,
                topic + (packet_ids.pack(n + 1) if qos else b"") + payload,
            )
            for n in range(start, start + CHUNK)
        )
        for start in range(0, 1000, CHUNK)
    ]
    delivered = 0
    started = time.process_time()
    for n in range(messages // CHUNK):
        publisher.receive_data(chunks[n % len(chunks)])
        publisher.data_to_send()
        for reader in readers:
            output = reader.data_to_send()
            delivered += output.count(payload)
            if qos:
                reader.receive_data(_pubacks(output))
    elapsed = time.process_time() - started
    return elapsed / (messages // CHUNK * CHUNK), delivered


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mqtt_engine", description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0)
    parser.add_argument("--subscribers", type=int, default=1)
    args = parser.parse_args()
    cpu, delivered = run(args.messages, args.qos, args.subscribers)
    expected = args.messages // CHUNK * CHUNK * args.subscribers
    if delivered != expected:
        raise SystemExit(f"delivered {delivered} of {expected} messages")
    print(f"qos{args.qos} x{args.subscribers}: {cpu * 1e6:.2f} µs/msg published")


if __name__ == "__main__":
    main()
