"""The cost of paging, without sockets: a warrenmq broker's AMQP engine fed by hand.

Publishes ``--messages`` messages of ``--body-size`` bytes to a queue with no consumer (its
memory budget ``--budget`` messages, so nearly all are paged out), then drains it with one
consumer, manual acks (multiple, every 50) and prefetch 100, letting the broker page between
socket-sized chunks as its timer would. Prints the CPU per message of each phase. For an
exact comparison, count instructions with callgrind for two sizes and take the difference
(start-up cancels out), with and without ``--in-memory``::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m bench.paged_engine --messages 10000
"""

from __future__ import annotations

import argparse
import time

from pamqp import commands, frame, header
from pamqp.body import ContentBody

import warrenmq
from warrenmq.transports.amqp.connection import AMQPConnection

CHUNK = 2000  # publishes per read, about what one socket read carries


def _frame(channel: int, method: object) -> bytes:
    return frame.marshal(method, channel)  # type: ignore[arg-type]


def _open(conn: AMQPConnection) -> None:
    conn.receive_data(b"AMQP\x00\x00\x09\x01")
    for method in (
        commands.Connection.StartOk(
            client_properties={}, mechanism="PLAIN", response="\x00guest\x00guest"
        ),
        commands.Connection.TuneOk(channel_max=0, frame_max=131072, heartbeat=0),
        commands.Connection.Open(virtual_host="/"),
    ):
        conn.receive_data(_frame(0, method))
    conn.receive_data(_frame(1, commands.Channel.Open()))
    conn.data_to_send()


def run(messages: int, body_size: int, budget: int | None) -> tuple[float, float]:
    """CPU seconds per message of the fill and of the drain."""
    broker = warrenmq.Broker(warrenmq.Settings(amqp_port=0))
    publisher = AMQPConnection(broker, ("127.0.0.1", 1))
    consumer = AMQPConnection(broker, ("127.0.0.1", 2))
    _open(publisher)
    _open(consumer)
    arguments = (
        {"x-max-in-memory-length": budget}
        if budget is not None
        else {"x-max-in-memory-length": 2**62, "x-max-in-memory-bytes": 2**62}
    )
    consumer.receive_data(_frame(1, commands.Queue.Declare(queue="q", arguments=arguments)))
    body = b"x" * body_size
    one = (
        _frame(1, commands.Basic.Publish(exchange="", routing_key="q"))
        + frame.marshal(header.ContentHeader(0, len(body), commands.Basic.Properties()), 1)
        + frame.marshal(ContentBody(body), 1)
    )
    queue = broker.vhosts["/"].queues["q"]
    started = time.process_time()
    for _ in range(messages // CHUNK):
        publisher.receive_data(one * CHUNK)
        publisher.data_to_send()
        broker.page_queues()
    filled = time.process_time()
    consumer.receive_data(_frame(1, commands.Basic.Qos(prefetch_count=100)))
    consumer.receive_data(_frame(1, commands.Basic.Consume(queue="q", consumer_tag="c")))
    acked = rounds = 0
    total = messages // CHUNK * CHUNK
    while acked < total:
        consumer.data_to_send()
        delivered = queue.delivered
        acks = b"".join(
            _frame(1, commands.Basic.Ack(delivery_tag=tag, multiple=True))
            for tag in range(acked + 50, delivered + 1, 50)
        )
        if delivered % 50:
            acks += _frame(1, commands.Basic.Ack(delivery_tag=delivered, multiple=True))
        acked = delivered
        consumer.receive_data(acks)
        rounds += 1
        if rounds % 20 == 0:
            broker.page_queues()
    drained = time.process_time()
    broker.paging.close()
    return (filled - started) / total, (drained - filled) / total


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.paged_engine", description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--body-size", type=int, default=1024)
    parser.add_argument("--budget", type=int, default=1000, help="messages kept in memory")
    parser.add_argument(
        "--in-memory", action="store_true", help="no budget: nothing is paged (to compare)"
    )
    args = parser.parse_args()
    fill, drain = run(args.messages, args.body_size, None if args.in_memory else args.budget)
    print(f"fill {fill * 1e6:.2f} µs/msg, drain {drain * 1e6:.2f} µs/msg")


if __name__ == "__main__":
    main()
