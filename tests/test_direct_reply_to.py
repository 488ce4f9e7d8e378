"""Direct reply-to (``amq.rabbitmq.reply-to``): RPC without declaring a reply queue."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import wait_until

REPLY_TO = "amq.rabbitmq.reply-to"
WAIT = 5.0


def _connect(broker: Any) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(broker.url))


def test_rpc_round_trip_through_direct_reply_to(broker: Any, unique: str) -> None:
    server, client = _connect(broker), _connect(broker)
    try:
        server_channel = server.channel()
        server_channel.queue_declare(unique, exclusive=True)
        requests: list[tuple[str, bytes]] = []

        def serve(ch: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
            requests.append((props.reply_to, body))
            ch.basic_publish(
                "",
                props.reply_to,
                body.upper(),
                pika.BasicProperties(correlation_id=props.correlation_id),
            )
            ch.basic_ack(method.delivery_tag)

        server_channel.basic_consume(unique, serve)

        channel = client.channel()
        replies: list[tuple[str, bytes]] = []
        channel.basic_consume(
            REPLY_TO,
            lambda _ch, _m, props, body: replies.append((props.correlation_id, body)),
            auto_ack=True,
        )
        for n in range(3):
            channel.basic_publish(
                "",
                unique,
                f"ping {n}".encode(),
                pika.BasicProperties(reply_to=REPLY_TO, correlation_id=str(n)),
            )
        wait_until([server, client], lambda: len(replies) == 3, "three replies", WAIT)
        assert replies == [(str(n), f"PING {n}".encode()) for n in range(3)]
        # the server saw a name unique to the requesting channel, not the pseudo-queue
        reply_names = {name for name, _ in requests}
        assert len(reply_names) == 1
        (name,) = reply_names
        assert name.startswith(REPLY_TO + ".") and name != REPLY_TO
    finally:
        server.close()
        client.close()


def test_reply_consumer_must_be_no_ack(broker: Any) -> None:
    connection = _connect(broker)
    try:
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
            channel.basic_consume(REPLY_TO, lambda *_: None, auto_ack=False)
            connection.process_data_events(time_limit=0.5)
        assert raised.value.reply_code == 406
    finally:
        if connection.is_open:
            connection.close()


def test_requesting_a_direct_reply_without_a_reply_consumer_is_refused(
    broker: Any, unique: str
) -> None:
    connection = _connect(broker)
    try:
        channel = connection.channel()
        channel.queue_declare(unique, exclusive=True)
        channel.basic_publish("", unique, b"?", pika.BasicProperties(reply_to=REPLY_TO))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as raised:
            channel.queue_declare(unique, passive=True)
        assert raised.value.reply_code == 406
        assert "fast reply consumer does not exist" in raised.value.reply_text
    finally:
        if connection.is_open:
            connection.close()


def test_the_pseudo_queue_can_be_declared_passively(broker: Any) -> None:
    connection = _connect(broker)
    try:
        ok = connection.channel().queue_declare(REPLY_TO, passive=True).method
        assert ok.queue == REPLY_TO
    finally:
        connection.close()
