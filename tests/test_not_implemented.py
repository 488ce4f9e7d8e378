"""540 NOT_IMPLEMENTED where RabbitMQ gives it: immediate=true, prefetch_size, and
basic.recover with requeue=false. Each closes the connection; the broker carries on."""

from __future__ import annotations

import struct
from typing import Any

from pamqp import commands
from raw_amqp import RawAMQP, method_payload, raw_frame, shortstr

WAIT = 5.0


def _connected(broker: Any) -> RawAMQP:
    client = RawAMQP(broker.host, broker.port, timeout=WAIT)
    client.handshake()
    client.open_channel(1)
    return client


def _assert_not_implemented(client: RawAMQP, class_method: tuple[int, int]) -> None:
    close = client.expect_connection_close()
    assert close.reply_code == 540, close.reply_text
    assert close.reply_text.startswith("NOT_IMPLEMENTED"), close.reply_text
    assert (close.class_id, close.method_id) == class_method


def test_publish_with_immediate_is_not_implemented(broker: Any) -> None:
    with _connected(broker) as client:
        immediate = b"\x02"
        arguments = b"\x00\x00" + shortstr("") + shortstr("nowhere") + immediate
        client.send(raw_frame(1, 1, method_payload(60, 40, arguments)))
        client.send(raw_frame(2, 1, struct.pack(">HHQH", 60, 0, 2, 0)))
        client.send(raw_frame(3, 1, b"hi"))
        _assert_not_implemented(client, (60, 40))


def test_qos_with_prefetch_size_is_not_implemented(broker: Any) -> None:
    with _connected(broker) as client:
        client.send_frame(commands.Basic.Qos(prefetch_size=1024, prefetch_count=10), 1)
        _assert_not_implemented(client, (60, 10))


def test_recover_without_requeue_is_not_implemented(broker: Any) -> None:
    with _connected(broker) as client:
        client.send_frame(commands.Basic.Recover(requeue=False), 1)
        _assert_not_implemented(client, (60, 110))
