"""Hostile input never reaches an internal error: random frames, valid methods in random
order, truncated and corrupt payloads, split at random points (a fixed seed, so repeatable)."""

from __future__ import annotations

import logging
import random
import struct

import pytest
from pamqp import commands, frame
from pamqp.header import ProtocolHeader

from warrenmq import Broker, Settings
from warrenmq.transports.amqp import AMQPConnection

#: pamqp warns when it decodes deprecated methods (basic.recover-async) that the junk hits
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

VALID = [
    commands.Queue.Declare(queue="fz"),
    commands.Basic.Consume(queue="fz"),
    commands.Basic.Qos(prefetch_count=2),
    commands.Basic.Get(queue="fz"),
    commands.Exchange.Declare(exchange="fx", exchange_type="topic"),
    commands.Queue.Bind(queue="fz", exchange="fx", routing_key="#"),
    commands.Basic.Publish(exchange="fx", routing_key="a"),
    commands.Basic.Ack(delivery_tag=1),
    commands.Basic.Nack(delivery_tag=0, multiple=True),
    commands.Basic.Reject(delivery_tag=2, requeue=True),
    commands.Tx.Select(),
    commands.Tx.Commit(),
    commands.Tx.Rollback(),
    commands.Confirm.Select(),
    commands.Basic.Recover(requeue=True),
    commands.Channel.Flow(active=False),
    commands.Channel.Flow(active=True),
    commands.Basic.Cancel(consumer_tag="x"),
    commands.Queue.Purge(queue="fz"),
    commands.Queue.Delete(queue="fz"),
    commands.Exchange.Delete(exchange="fx"),
    commands.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0),
    commands.Channel.CloseOk(),
    commands.Channel.Open(),
]


def _open(broker: Broker, n: int) -> AMQPConnection:
    connection = AMQPConnection(broker, ("127.0.0.1", 10000 + n))
    start_ok = commands.Connection.StartOk(
        client_properties={"capabilities": {"consumer_cancel_notify": True}},
        mechanism="PLAIN",
        response="\0guest\0guest",
    )
    tune_ok = commands.Connection.TuneOk(channel_max=10, frame_max=131072, heartbeat=0)
    for data in (
        ProtocolHeader().marshal(),
        frame.marshal(start_ok, 0),
        frame.marshal(tune_ok, 0),
        frame.marshal(commands.Connection.Open(), 0),
        frame.marshal(commands.Channel.Open(), 1),
    ):
        connection.receive_data(data)
    connection.data_to_send()
    assert not connection.closed
    return connection


def _random_frame(rng: random.Random) -> bytes:
    channel = rng.choice([1, 1, 1, 2, 0, 3])
    draw = rng.random()
    if draw < 0.5:
        return frame.marshal(rng.choice(VALID), channel)
    if draw < 0.6:
        header = struct.pack(">HHQH", 60, 0, rng.randint(0, 5), 0)
        return struct.pack(">BHI", 2, channel, len(header)) + header + b"\xce"
    if draw < 0.7:
        size = rng.randint(0, 5)
        return struct.pack(">BHI", 3, channel, size) + bytes(size) + b"\xce"
    if draw < 0.85:
        index = rng.choice(list(commands.INDEX_MAPPING))
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
        return struct.pack(">BHII", 1, channel, 4 + len(junk), index) + junk + b"\xce"
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 30)))


def test_random_input_never_causes_an_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(20261125)
    broker = Broker(Settings(amqp_port=0))
    with caplog.at_level(logging.WARNING, logger="warrenmq"):
        for n in range(400):
            connection = _open(broker, n)
            for _ in range(30):
                data = _random_frame(rng)
                if rng.random() < 0.3:
                    cut = rng.randint(0, len(data))
                    connection.receive_data(data[:cut])
                    connection.receive_data(data[cut:])
                else:
                    connection.receive_data(data)
                connection.data_to_send()
                if connection.closed:
                    break
            connection.connection_lost()
    internal = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert internal == []
    assert not broker.connections  # every connection released its resources
    for queue in broker.vhosts["/"].queues.values():
        assert not queue.consumers  # no consumer outlived its connection
